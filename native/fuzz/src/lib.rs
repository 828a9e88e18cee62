//! Helpers shared by the fuzz targets in `fuzz_targets/`: the framing that packs several datagrams
//! into one fuzz input, the fixed SRTP keys the seed corpus is protected with, and checks that what
//! the media core writes is well formed.

use mediasrv_core::rtcp;
use mediasrv_core::rtp::RtpView;
use mediasrv_core::srtp::{Profile, SrtpContext};

/// Splits a fuzz input into datagrams: each is a big-endian u16 length and that many bytes; a
/// length running past the end takes what is left. `tests/fuzz/make_seeds.py` writes the same framing.
pub fn items(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let (item, tail) = rest[2..].split_at(n.min(rest.len() - 2));
        rest = tail;
        Some(item)
    })
}

/// Master key and salt the seed corpus was protected with (by libsrtp, through pylibsrtp): a
/// context keyed with them authenticates the seeds, so mutations start from packets that pass.
pub const SEED_KEY: [u8; 32] = *b"mediasrv-fuzz-seed-master-key-32";
pub const SEED_SALT: [u8; 14] = *b"fuzz-salt-14by";
/// The other direction's key (what the context itself protects with).
pub const OTHER_KEY: [u8; 32] = *b"mediasrv-fuzz-other-direction-k!";
pub const OTHER_SALT: [u8; 14] = *b"other-salt-14b";

/// Profile number `n` (any byte) of the four the core implements.
pub fn profile(n: u8) -> Profile {
    Profile::ALL[n as usize % Profile::ALL.len()]
}

/// A context whose receive half is keyed with the seed key (it unprotects the corpus) and whose
/// transmit half uses the other key; `reversed` swaps them (its transmit half makes packets the
/// first one accepts).
pub fn seed_context(profile: Profile, reversed: bool) -> SrtpContext {
    let (k, s) = (profile.key_len(), profile.salt_len());
    let seed = (&SEED_KEY[..k], &SEED_SALT[..s]);
    let other = (&OTHER_KEY[..k], &OTHER_SALT[..s]);
    let (tx, rx) = if reversed {
        (seed, other)
    } else {
        (other, seed)
    };
    SrtpContext::new(profile, tx.0, tx.1, rx.0, rx.1).expect("key lengths match the profile")
}

/// Panics unless `packet` is an RTP packet the core itself accepts.
pub fn assert_rtp(packet: &[u8]) -> RtpView<'_> {
    match RtpView::parse(packet) {
        Ok(v) => v,
        Err(e) => panic!("core wrote malformed RTP ({e}): {packet:02x?}"),
    }
}

/// Panics unless `packet` is a compound RTCP packet every part of which parses.
pub fn assert_rtcp(packet: &[u8]) {
    if let Err(e) = rtcp::validate_compound(packet) {
        panic!("core wrote malformed RTCP ({e}): {packet:02x?}");
    }
    assert!(packet.len().is_multiple_of(4), "RTCP is whole 32-bit words");
}

/// The room the `demux` target routes into, and the seeds' packets are for: one publisher
/// (transport 1) with a VP8 (+RTX), an H.264 and an Opus track, one subscriber (transport 2) of all
/// three. `tests/fuzz/make_seeds.py` uses the same numbers.
pub mod room {
    use mediasrv_core::ids::{SubscriptionId, TrackId, TransportId};
    use mediasrv_core::router::{Codec, ExtensionIds, MediaKind, Router, RouterConfig};

    pub const PUBLISHER: TransportId = TransportId(1);
    pub const SUBSCRIBER: TransportId = TransportId(2);
    pub const PUB_RTCP_SSRC: u32 = 0x5EED_0001;
    pub const VP8_SSRC: u32 = 0x1111_1111;
    pub const RTX_SSRC: u32 = 0x2222_2222;
    pub const H264_SSRC: u32 = 0x3333_3333;
    pub const OPUS_SSRC: u32 = 0x4444_4444;
    pub const VP8_PT: u8 = 96;
    pub const RTX_PT: u8 = 97;
    pub const H264_PT: u8 = 102;
    pub const OPUS_PT: u8 = 111;
    /// Subscriber SSRCs (the SSRCs its RTCP feedback names) of the three subscriptions.
    pub const SUB_SSRCS: [u32; 3] = [0x5B00_0001, 0x5B00_0002, 0x5B00_0003];
    /// Header extension ids of both sides.
    pub const MID_ID: u8 = 1;
    pub const ABS_SEND_TIME_ID: u8 = 2;
    pub const AUDIO_LEVEL_ID: u8 = 3;

    pub fn codec(pt: u8, name: &str, clock_rate: u32, apt: Option<u8>) -> Codec {
        Codec {
            payload_type: pt,
            name: name.into(),
            clock_rate,
            apt,
            fmtp: None,
        }
    }

    pub fn ext() -> ExtensionIds {
        ExtensionIds {
            mid: MID_ID,
            abs_send_time: ABS_SEND_TIME_ID,
            audio_level: AUDIO_LEVEL_ID,
            transport_cc: 0,
        }
    }

    /// The router of the room, with everything above registered.
    pub fn router(cfg: RouterConfig) -> Router {
        let mut r = Router::new(cfg, 7);
        r.add_publisher(PUBLISHER, PUB_RTCP_SSRC, ext());
        let tracks = [
            (
                TrackId(1),
                MediaKind::Video,
                "0",
                vec![
                    codec(VP8_PT, "VP8", 90_000, None),
                    codec(RTX_PT, "rtx", 90_000, Some(VP8_PT)),
                ],
                vec![VP8_SSRC, RTX_SSRC],
            ),
            (
                TrackId(2),
                MediaKind::Video,
                "1",
                vec![codec(H264_PT, "H264", 90_000, None)],
                vec![H264_SSRC],
            ),
            (
                TrackId(3),
                MediaKind::Audio,
                "2",
                vec![codec(OPUS_PT, "opus", 48_000, None)],
                vec![OPUS_SSRC],
            ),
        ];
        let sub_codecs = [
            codec(120, "VP8", 90_000, None),
            codec(121, "rtx", 90_000, Some(120)),
            codec(122, "H264", 90_000, None),
            codec(109, "opus", 48_000, None),
        ];
        for (i, (id, kind, mid, codecs, ssrcs)) in tracks.into_iter().enumerate() {
            r.add_track(id, PUBLISHER, kind, Some(mid.into()), codecs, &ssrcs)
                .expect("fixture track");
            r.add_subscription(
                SubscriptionId(i as u64 + 1),
                id,
                SUBSCRIBER,
                SUB_SSRCS[i],
                &sub_codecs,
                ext(),
            )
            .expect("fixture subscription");
        }
        r
    }
}

/// ICE password the STUN seeds are made with (`tests/fuzz/make_seeds.py` uses the same).
pub const STUN_PASSWORD: &[u8] = b"mediasrv-fuzz-ice-password";
