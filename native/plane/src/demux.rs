//! RFC 7983 first-byte demultiplexing and the RTP/RTCP split of RFC 5761.

/// What a datagram on the shared media port is, judged by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    /// SRTP or SRTCP (first byte 128..=191).
    Media,
    Other,
}

#[inline]
pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Media,
        _ => DatagramKind::Other,
    }
}

/// RTCP when the second byte (RTCP packet type / RTP marker+payload type) is in 192..=223.
#[inline]
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges() {
        assert_eq!(classify(&[0x00, 0x01]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 0xfe]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Media);
        assert_eq!(classify(&[0xbf]), DatagramKind::Media);
        assert_eq!(classify(&[0xc0]), DatagramKind::Other);
        assert_eq!(classify(&[]), DatagramKind::Other);
        assert!(is_rtcp(&[0x81, 200]));
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(!is_rtcp(&[0x80]));
    }
}
