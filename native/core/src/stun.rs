//! The part of STUN (RFC 5389) the media plane needs to judge a datagram from an unknown source
//! without Python: is it an ICE Binding request, which session's ufrag does its USERNAME name, and
//! does its MESSAGE-INTEGRITY hold that session's password. Nothing is answered here; a request that
//! passes goes on to the ICE agent, which parses it again and answers.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

const HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const INTEGRITY_LEN: usize = 20;

/// A Binding request's fields the plane looks at, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRequest<'a> {
    /// USERNAME up to its first ':' (the receiver's ufrag, RFC 8445 7.2.2).
    pub local_ufrag: &'a [u8],
    /// Offset of the MESSAGE-INTEGRITY attribute's header, if the request has one.
    integrity_at: Option<usize>,
}

/// Why a datagram is not a Binding request the plane can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Not a well-formed STUN message (header, cookie, length or attribute framing).
    Malformed,
    /// Well formed, but not a Binding request (a response, an indication, another method).
    NotBindingRequest,
    /// A Binding request without USERNAME: it cannot name a session.
    NoUsername,
}

/// Parse `datagram` as an ICE Binding request. Attributes after MESSAGE-INTEGRITY other than
/// FINGERPRINT are ignored, as RFC 5389 15.4 says.
pub fn parse_binding_request(datagram: &[u8]) -> Result<BindingRequest<'_>, StunError> {
    if datagram.len() < HEADER_LEN || datagram[0] & 0xc0 != 0 || datagram[4..8] != MAGIC_COOKIE {
        return Err(StunError::Malformed);
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if length % 4 != 0 || HEADER_LEN + length != datagram.len() {
        return Err(StunError::Malformed);
    }
    let mut username = None;
    let mut integrity_at = None;
    let mut at = HEADER_LEN;
    while at < datagram.len() {
        if at + 4 > datagram.len() {
            return Err(StunError::Malformed);
        }
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let value_end = at + 4 + len;
        if value_end > datagram.len() {
            return Err(StunError::Malformed);
        }
        if integrity_at.is_none() {
            match kind {
                ATTR_USERNAME if username.is_none() => {
                    username = Some(&datagram[at + 4..value_end])
                }
                ATTR_MESSAGE_INTEGRITY => {
                    if len != INTEGRITY_LEN {
                        return Err(StunError::Malformed);
                    }
                    integrity_at = Some(at);
                }
                _ => {}
            }
        }
        at = value_end + (4 - len % 4) % 4;
    }
    if at != datagram.len() {
        return Err(StunError::Malformed);
    }
    if u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST {
        return Err(StunError::NotBindingRequest);
    }
    let username = username.ok_or(StunError::NoUsername)?;
    let local_ufrag = username.split(|&b| b == b':').next().unwrap_or(username);
    Ok(BindingRequest {
        local_ufrag,
        integrity_at,
    })
}

impl BindingRequest<'_> {
    /// True if the request carries a MESSAGE-INTEGRITY computed with `password` (the short-term
    /// credential: the ICE password itself is the HMAC-SHA1 key). `datagram` must be the one this
    /// was parsed from. The comparison takes the same time whatever the value.
    pub fn integrity_holds(&self, datagram: &[u8], password: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(password) else {
            return false;
        };
        // The HMAC covers the message up to the attribute, with the header's length field set as
        // if MESSAGE-INTEGRITY were the last attribute.
        let covered_len = (at + 4 + INTEGRITY_LEN - HEADER_LEN) as u16;
        mac.update(&datagram[..2]);
        mac.update(&covered_len.to_be_bytes());
        mac.update(&datagram[4..at]);
        let expected = mac.finalize().into_bytes();
        let got = &datagram[at + 4..at + 4 + INTEGRITY_LEN];
        bool::from(expected.as_slice().ct_eq(got))
    }
}

fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - value.len() % 4) % 4, 0);
}

fn set_len(msg: &mut [u8], len: usize) {
    msg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// A Binding request as an ICE agent sends it (USERNAME, PRIORITY, MESSAGE-INTEGRITY with
/// `password`, FINGERPRINT left zero: nothing here checks it), for tests, fuzz seeds and load tools.
/// `username` is at most a few hundred bytes (RFC 5389: under 513).
pub fn binding_request(username: &[u8], password: &[u8], transaction_id: [u8; 12]) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0];
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&transaction_id);
    put_attr(&mut m, ATTR_USERNAME, username);
    put_attr(&mut m, 0x0024, &[0x6e, 0, 0x1e, 0xff]);
    let at = m.len();
    set_len(&mut m, at + 4 + INTEGRITY_LEN - HEADER_LEN);
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(password).expect("HMAC takes any key length");
    mac.update(&m);
    put_attr(&mut m, ATTR_MESSAGE_INTEGRITY, &mac.finalize().into_bytes());
    put_attr(&mut m, 0x8028, &[0; 4]);
    let len = m.len();
    set_len(&mut m, len - HEADER_LEN);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_local_ufrag_and_checks_integrity() {
        let m = binding_request(b"abcd:wxyz", b"the-ice-password-22ch", [7; 12]);
        let r = parse_binding_request(&m).unwrap();
        assert_eq!(r.local_ufrag, b"abcd");
        assert!(r.integrity_holds(&m, b"the-ice-password-22ch"));
        assert!(!r.integrity_holds(&m, b"another-password-22ch"));
    }

    #[test]
    fn any_changed_byte_before_the_integrity_fails_it() {
        let m = binding_request(b"abcd:wxyz", b"pw", [7; 12]);
        let at = parse_binding_request(&m).unwrap().integrity_at.unwrap();
        for i in (0..at).filter(|&i| !(2..4).contains(&i)) {
            let mut bad = m.clone();
            bad[i] ^= 0x01;
            if let Ok(r) = parse_binding_request(&bad) {
                assert!(!r.integrity_holds(&bad, b"pw"), "byte {i}");
            }
        }
    }

    #[test]
    fn no_integrity_never_holds() {
        let mut m = vec![0x00, 0x01, 0, 0];
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[1; 12]);
        put_attr(&mut m, ATTR_USERNAME, b"abcd:x");
        let len = m.len();
        set_len(&mut m, len - HEADER_LEN);
        let r = parse_binding_request(&m).unwrap();
        assert!(!r.integrity_holds(&m, b""));
    }

    #[test]
    fn refuses_what_is_not_a_routable_binding_request() {
        let ok = binding_request(b"abcd:wxyz", b"pw", [7; 12]);
        let mut response = ok.clone();
        response[0] = 0x01;
        response[1] = 0x01;
        assert_eq!(
            parse_binding_request(&response),
            Err(StunError::NotBindingRequest)
        );
        let mut cookie = ok.clone();
        cookie[4] ^= 1;
        assert_eq!(parse_binding_request(&cookie), Err(StunError::Malformed));
        assert_eq!(
            parse_binding_request(&ok[..ok.len() - 4]),
            Err(StunError::Malformed)
        );
        let mut long = ok.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(parse_binding_request(&long), Err(StunError::Malformed));
        // An attribute running past the end.
        let mut overrun = ok.clone();
        overrun[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(parse_binding_request(&overrun), Err(StunError::Malformed));
        assert_eq!(
            parse_binding_request(&[0x00, 0x01]),
            Err(StunError::Malformed)
        );
        assert_eq!(
            parse_binding_request(&[0x80; 40]),
            Err(StunError::Malformed)
        );
        let mut no_user = vec![0x00, 0x01, 0, 0];
        no_user.extend_from_slice(&MAGIC_COOKIE);
        no_user.extend_from_slice(&[1; 12]);
        assert_eq!(parse_binding_request(&no_user), Err(StunError::NoUsername));
    }

    #[test]
    fn never_panics_on_truncations_and_bit_flips() {
        let m = binding_request(b"abcd:wxyz", b"pw", [7; 12]);
        for cut in 0..m.len() {
            if let Ok(r) = parse_binding_request(&m[..cut]) {
                let _ = r.integrity_holds(&m[..cut], b"pw");
            }
        }
        for i in 0..m.len() {
            for bit in 0..8 {
                let mut bad = m.clone();
                bad[i] ^= 1 << bit;
                if let Ok(r) = parse_binding_request(&bad) {
                    let _ = r.integrity_holds(&bad, b"pw");
                }
            }
        }
    }

    #[test]
    fn agrees_with_a_python_agents_request() {
        // aioice's Binding request (USERNAME "Ab1z:remote", ICE-CONTROLLING, PRIORITY,
        // USE-CANDIDATE, MESSAGE-INTEGRITY with "0123456789abcdef012345", FINGERPRINT).
        let hex = "000100482112a4420102030405060708090a0b0c0006000b4162317a3a72656d6f746500802a000800000000000000070024000400000064002500000008001433881dfe8214ade1c14a506f157b0697b3c4d264802800040464612b";
        let m: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let r = parse_binding_request(&m).unwrap();
        assert_eq!(r.local_ufrag, b"Ab1z");
        assert!(r.integrity_holds(&m, b"0123456789abcdef012345"));
    }
}
