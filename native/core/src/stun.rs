//! The part of STUN (RFC 5389) the media plane needs without Python: judge a datagram from an
//! unknown source (is it an ICE Binding request, which session's ufrag does its USERNAME name, does
//! its MESSAGE-INTEGRITY hold that session's password), and, for handed-over peers, the consent
//! freshness exchange of RFC 7675: build our Binding requests, recognise the peer's success
//! responses to them, and answer the peer's own requests. Messages are built with MESSAGE-INTEGRITY
//! and FINGERPRINT (browsers drop STUN without a valid FINGERPRINT).

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

const HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_ICE_CONTROLLED: u16 = 0x8029;
const ATTR_ICE_CONTROLLING: u16 = 0x802a;
const ATTR_FINGERPRINT: u16 = 0x8028;
const INTEGRITY_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// A transaction id (RFC 5389 6: 96 bits).
pub type TransactionId = [u8; 12];

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
    /// Well formed, but not a Binding success response.
    NotBindingSuccess,
}

/// The fields of any well-formed STUN message this module looks at.
struct Walked<'a> {
    msg_type: u16,
    username: Option<&'a [u8]>,
    integrity_at: Option<usize>,
}

/// Checks the framing of `datagram` as a STUN message and finds USERNAME and MESSAGE-INTEGRITY.
/// Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored, as RFC 5389 15.4 says.
fn walk(datagram: &[u8]) -> Result<Walked<'_>, StunError> {
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
    Ok(Walked {
        msg_type: u16::from_be_bytes([datagram[0], datagram[1]]),
        username,
        integrity_at,
    })
}

/// The transaction id of a well-formed STUN message.
pub fn transaction_id(datagram: &[u8]) -> TransactionId {
    let mut t = [0; 12];
    t.copy_from_slice(&datagram[8..HEADER_LEN]);
    t
}

/// Parse `datagram` as an ICE Binding request.
pub fn parse_binding_request(datagram: &[u8]) -> Result<BindingRequest<'_>, StunError> {
    let w = walk(datagram)?;
    if w.msg_type != BINDING_REQUEST {
        return Err(StunError::NotBindingRequest);
    }
    let username = w.username.ok_or(StunError::NoUsername)?;
    let local_ufrag = username.split(|&b| b == b':').next().unwrap_or(username);
    Ok(BindingRequest {
        local_ufrag,
        integrity_at: w.integrity_at,
    })
}

/// A Binding success response: its transaction id, and where its MESSAGE-INTEGRITY is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingSuccess {
    pub transaction_id: TransactionId,
    integrity_at: Option<usize>,
}

/// Parse `datagram` as a Binding success response (the answer to a consent check).
pub fn parse_binding_success(datagram: &[u8]) -> Result<BindingSuccess, StunError> {
    let w = walk(datagram)?;
    if w.msg_type != BINDING_SUCCESS {
        return Err(StunError::NotBindingSuccess);
    }
    Ok(BindingSuccess {
        transaction_id: transaction_id(datagram),
        integrity_at: w.integrity_at,
    })
}

impl BindingSuccess {
    /// True if the response carries a MESSAGE-INTEGRITY computed with `password` (for the answer
    /// to our request: the peer's ICE password, the key our request was signed with).
    pub fn integrity_holds(&self, datagram: &[u8], password: &[u8]) -> bool {
        integrity_at_holds(self.integrity_at, datagram, password)
    }
}

impl BindingRequest<'_> {
    /// True if the request carries a MESSAGE-INTEGRITY computed with `password` (the short-term
    /// credential: the ICE password itself is the HMAC-SHA1 key). `datagram` must be the one this
    /// was parsed from. The comparison takes the same time whatever the value.
    pub fn integrity_holds(&self, datagram: &[u8], password: &[u8]) -> bool {
        integrity_at_holds(self.integrity_at, datagram, password)
    }
}

fn integrity_at_holds(integrity_at: Option<usize>, datagram: &[u8], password: &[u8]) -> bool {
    let Some(at) = integrity_at else {
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

fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - value.len() % 4) % 4, 0);
}

fn set_len(msg: &mut [u8], len: usize) {
    msg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// CRC-32 (ISO-HDLC, as zlib computes it) for FINGERPRINT.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Appends MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `password`) and FINGERPRINT to a message
/// whose header and other attributes are in `m`, setting the header's length as it goes.
fn seal(m: &mut Vec<u8>, password: &[u8]) {
    let at = m.len();
    set_len(m, at + 4 + INTEGRITY_LEN - HEADER_LEN);
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(password).expect("HMAC takes any key length");
    mac.update(m);
    put_attr(m, ATTR_MESSAGE_INTEGRITY, &mac.finalize().into_bytes());
    let at = m.len();
    set_len(m, at + 8 - HEADER_LEN);
    let fingerprint = crc32(m) ^ FINGERPRINT_XOR;
    put_attr(m, ATTR_FINGERPRINT, &fingerprint.to_be_bytes());
}

fn header(msg_type: u16, transaction_id: TransactionId) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&msg_type.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&transaction_id);
    m
}

/// A Binding request as an ICE agent sends it (USERNAME, PRIORITY, MESSAGE-INTEGRITY with
/// `password`, FINGERPRINT), for tests, fuzz seeds and load tools.
/// `username` is at most a few hundred bytes (RFC 5389: under 513).
pub fn binding_request(username: &[u8], password: &[u8], transaction_id: [u8; 12]) -> Vec<u8> {
    let mut m = header(BINDING_REQUEST, transaction_id);
    put_attr(&mut m, ATTR_USERNAME, username);
    put_attr(&mut m, ATTR_PRIORITY, &[0x6e, 0, 0x1e, 0xff]);
    seal(&mut m, password);
    m
}

/// Our ICE role and tie-breaker, sent with each check (RFC 8445 7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceRole {
    pub controlling: bool,
    pub tie_breaker: u64,
}

/// A consent freshness check (RFC 7675 5.1: an ICE Binding request on the selected pair, without
/// USE-CANDIDATE): USERNAME "remote ufrag:local ufrag", PRIORITY, ICE-CONTROLLING or
/// ICE-CONTROLLED, MESSAGE-INTEGRITY keyed with the peer's password, FINGERPRINT.
pub fn consent_request(
    username: &[u8],
    remote_password: &[u8],
    transaction_id: TransactionId,
    priority: u32,
    role: IceRole,
) -> Vec<u8> {
    let mut m = header(BINDING_REQUEST, transaction_id);
    put_attr(&mut m, ATTR_USERNAME, username);
    put_attr(&mut m, ATTR_PRIORITY, &priority.to_be_bytes());
    let kind = if role.controlling {
        ATTR_ICE_CONTROLLING
    } else {
        ATTR_ICE_CONTROLLED
    };
    put_attr(&mut m, kind, &role.tie_breaker.to_be_bytes());
    seal(&mut m, remote_password);
    m
}

/// The success response to a peer's Binding request (RFC 8445 7.3.1.4): XOR-MAPPED-ADDRESS of
/// where it came from, MESSAGE-INTEGRITY keyed with our password, FINGERPRINT.
pub fn binding_success(
    transaction_id: TransactionId,
    mapped: SocketAddr,
    local_password: &[u8],
) -> Vec<u8> {
    let mut m = header(BINDING_SUCCESS, transaction_id);
    let port = mapped.port() ^ 0x2112;
    let mut value = Vec::with_capacity(20);
    value.push(0);
    match mapped.ip() {
        IpAddr::V4(ip) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            for (b, k) in ip.octets().iter().zip(MAGIC_COOKIE) {
                value.push(b ^ k);
            }
        }
        IpAddr::V6(ip) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            let key = MAGIC_COOKIE.iter().chain(transaction_id.iter());
            for (b, k) in ip.octets().iter().zip(key) {
                value.push(b ^ k);
            }
        }
    }
    put_attr(&mut m, ATTR_XOR_MAPPED_ADDRESS, &value);
    seal(&mut m, local_password);
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

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    const TID: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn fingerprint_is_zlibs_crc32_of_the_message() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        // aioice's request (see agrees_with_a_python_agents_request): FINGERPRINT 0x0464612b.
        let m = unhex("000100482112a4420102030405060708090a0b0c0006000b4162317a3a72656d6f746500802a000800000000000000070024000400000064002500000008001433881dfe8214ade1c14a506f157b0697b3c4d264802800040464612b");
        let covered = &m[..m.len() - 8];
        assert_eq!(crc32(covered) ^ FINGERPRINT_XOR, 0x0464_612b);
    }

    #[test]
    fn success_responses_are_byte_for_byte_a_python_agents() {
        let v4 = binding_success(TID, "192.0.2.1:32853".parse().unwrap(), b"pw-local");
        assert_eq!(v4, unhex("0101002c2112a4420102030405060708090a0b0c002000080001a147e112a643000800142829c0efe35aa1192cd864ba5aca983d28389aa780280004278e1436"));
        let v6 = binding_success(TID, "[2001:db8::1]:32853".parse().unwrap(), b"pw-local");
        assert_eq!(v6, unhex("010100382112a4420102030405060708090a0b0c002000140002a1470113a9fa0102030405060708090a0b0d00080014aaa0760c905f13434c5f8e10840a5cdad65f2f9f80280004784156a1"));
        let r = parse_binding_success(&v4).unwrap();
        assert_eq!(r.transaction_id, TID);
        assert!(r.integrity_holds(&v4, b"pw-local"));
        assert!(!r.integrity_holds(&v4, b"pw-remote"));
        assert_eq!(
            parse_binding_request(&v4),
            Err(StunError::NotBindingRequest)
        );
    }

    #[test]
    fn consent_requests_are_byte_for_byte_a_python_agents() {
        let role = IceRole {
            controlling: false,
            tie_breaker: 0x0102_0304_0506_0708,
        };
        let m = consent_request(b"rem:loc", b"pw-remote", TID, 0x6e00_1eff, role);
        assert_eq!(m, unhex("000100402112a4420102030405060708090a0b0c0006000772656d3a6c6f6300002400046e001eff80290008010203040506070800080014073ca750383bf58df04d0d288426d29c7e3197bc802800049d97fe91"));
        let r = parse_binding_request(&m).unwrap();
        assert_eq!(r.local_ufrag, b"rem");
        assert!(r.integrity_holds(&m, b"pw-remote"));
        assert_eq!(parse_binding_success(&m), Err(StunError::NotBindingSuccess));
        let controlling = consent_request(
            b"rem:loc",
            b"pw-remote",
            TID,
            1,
            IceRole {
                controlling: true,
                ..role
            },
        );
        assert_eq!(&controlling[40..42], &[0x80, 0x2a]);
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
