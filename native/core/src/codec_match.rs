//! Chooses the subscriber's payload type for each of the publisher's codecs: same name and clock
//! rate, and among several candidates (H.264 is often offered in several profiles and packetization
//! modes, VP9 in several profiles) the one whose fmtp parameters fit best.

use crate::router::Codec;

/// Value of `key` in an fmtp string such as "level-asymmetry-allowed=1;packetization-mode=1".
fn fmtp_param<'a>(fmtp: Option<&'a str>, key: &str) -> Option<&'a str> {
    fmtp?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// How well `sub` can carry the publisher's `publ` packets; None when it cannot at all.
fn score(publ: &Codec, sub: &Codec) -> Option<u32> {
    if !publ.name.eq_ignore_ascii_case(&sub.name)
        || publ.clock_rate != sub.clock_rate
        || sub.payload_type > 127
    {
        return None;
    }
    let (pf, sf) = (publ.fmtp.as_deref(), sub.fmtp.as_deref());
    let mut s = 1;
    if publ.name.eq_ignore_ascii_case("H264") {
        // packetization-mode decides whether FU-A/STAP-A may appear (RFC 6184 8.1); default 0.
        let mode = |f| fmtp_param(f, "packetization-mode").unwrap_or("0");
        if mode(pf) == mode(sf) {
            s += 4;
        }
        // profile_idc + constraint flags: the first 4 hex digits of profile-level-id.
        let profile = |f| {
            fmtp_param(f, "profile-level-id").map(|p| p.get(..4).unwrap_or(p).to_ascii_lowercase())
        };
        let (pp, sp) = (profile(pf), profile(sf));
        if pp.is_some() && pp == sp {
            s += 2;
        }
    } else if publ.name.eq_ignore_ascii_case("VP9") {
        let profile = |f| fmtp_param(f, "profile-id").unwrap_or("0");
        if profile(pf) == profile(sf) {
            s += 2;
        }
    }
    Some(s)
}

/// The subscriber codec to use for packets of the publisher's codec `publ`, if any.
pub fn best_match<'a>(publ: &Codec, sub_codecs: &'a [Codec]) -> Option<&'a Codec> {
    let mut best: Option<(u32, &Codec)> = None;
    for c in sub_codecs {
        if let Some(s) = score(publ, c) {
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, c));
            }
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(pt: u8, fmtp: &str) -> Codec {
        Codec {
            payload_type: pt,
            name: "H264".into(),
            clock_rate: 90_000,
            apt: None,
            fmtp: Some(fmtp.into()),
        }
    }

    #[test]
    fn h264_prefers_same_packetization_mode_and_profile() {
        let publ = h264(
            102,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        );
        let subs = [
            h264(100, "packetization-mode=0;profile-level-id=42e01f"),
            h264(101, "packetization-mode=1;profile-level-id=640c1f"),
            h264(103, "profile-level-id=42E01F; packetization-mode=1"),
        ];
        assert_eq!(best_match(&publ, &subs).unwrap().payload_type, 103);
        assert_eq!(
            best_match(&publ, &subs[..2]).unwrap().payload_type,
            101,
            "mode matters most"
        );
    }

    #[test]
    fn name_and_clock_rate_must_match() {
        let vp8 = Codec {
            payload_type: 96,
            name: "VP8".into(),
            clock_rate: 90_000,
            apt: None,
            fmtp: None,
        };
        let opus = Codec {
            payload_type: 111,
            name: "opus".into(),
            clock_rate: 48_000,
            apt: None,
            fmtp: None,
        };
        assert!(best_match(&vp8, std::slice::from_ref(&opus)).is_none());
        let vp8_lower = Codec {
            name: "vp8".into(),
            payload_type: 120,
            ..vp8.clone()
        };
        assert_eq!(
            best_match(&vp8, &[opus, vp8_lower]).unwrap().payload_type,
            120
        );
    }
}
