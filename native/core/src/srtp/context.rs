//! Per-peer SRTP context: both directions, every SSRC, replay windows and counters.

use super::cm::CmTransform;
use super::gcm::GcmTransform;
use super::profile::Profile;
use super::replay::{estimate_index, ReplayWindow};
use super::ssrc_map::SsrcMap;
use super::SrtpError;

/// Default cap on SSRCs tracked per direction and packet kind; bounds memory per peer.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Largest SRTCP index (31 bits).
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// The cryptographic transform of one direction, keyed once at construction.
#[derive(Clone)]
enum Transform {
    Cm(Box<CmTransform>),
    Gcm(Box<GcmTransform>),
}

impl Transform {
    fn new(profile: Profile, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(SrtpError::BadKeyLength);
        }
        Ok(match profile {
            Profile::Aes128CmHmacSha1_80 | Profile::Aes128CmHmacSha1_32 => Transform::Cm(Box::new(
                CmTransform::new(key, salt, profile.rtp_trailer_len())?,
            )),
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                Transform::Gcm(Box::new(GcmTransform::new(key, salt)?))
            }
        })
    }
}

/// Packet and drop counters of one context; read them with [`SrtpContext::counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrtpCounters {
    pub rtp_protected: u64,
    pub rtp_unprotected: u64,
    pub rtcp_protected: u64,
    pub rtcp_unprotected: u64,
    /// Times a stream's rollover counter advanced (sequence number wrapped), both directions.
    pub roc_rollovers: u64,
    pub too_short: u64,
    pub bad_version: u64,
    pub auth_failed: u64,
    pub replayed: u64,
    pub too_old: u64,
    pub too_many_streams: u64,
    pub index_exhausted: u64,
    pub buffer_too_small: u64,
}

impl SrtpCounters {
    fn record(&mut self, error: SrtpError) {
        let counter = match error {
            SrtpError::TooShort => &mut self.too_short,
            SrtpError::BadVersion => &mut self.bad_version,
            SrtpError::AuthFailed => &mut self.auth_failed,
            SrtpError::Replayed => &mut self.replayed,
            SrtpError::TooOld => &mut self.too_old,
            SrtpError::TooManyStreams => &mut self.too_many_streams,
            SrtpError::IndexExhausted => &mut self.index_exhausted,
            SrtpError::BufferTooSmall => &mut self.buffer_too_small,
            // Only constructors return these; no packet is involved.
            SrtpError::BadKeyLength | SrtpError::UnknownProfile => return,
        };
        *counter += 1;
    }

    /// Packets refused for any reason.
    pub fn dropped(&self) -> u64 {
        self.too_short
            + self.bad_version
            + self.auth_failed
            + self.replayed
            + self.too_old
            + self.too_many_streams
            + self.index_exhausted
            + self.buffer_too_small
    }

    /// (name, value) pairs, for exporting.
    pub fn pairs(&self) -> [(&'static str, u64); 13] {
        [
            ("rtp_protected", self.rtp_protected),
            ("rtp_unprotected", self.rtp_unprotected),
            ("rtcp_protected", self.rtcp_protected),
            ("rtcp_unprotected", self.rtcp_unprotected),
            ("roc_rollovers", self.roc_rollovers),
            ("too_short", self.too_short),
            ("bad_version", self.bad_version),
            ("auth_failed", self.auth_failed),
            ("replayed", self.replayed),
            ("too_old", self.too_old),
            ("too_many_streams", self.too_many_streams),
            ("index_exhausted", self.index_exhausted),
            ("buffer_too_small", self.buffer_too_small),
        ]
    }
}

/// SRTP state for one peer: `tx` protects what we send, `rx` unprotects what it sends.
pub struct SrtpContext {
    profile: Profile,
    tx: Transform,
    rx: Transform,
    /// Highest RTP packet index protected per SSRC.
    tx_rtp: SsrcMap<u64>,
    /// Last SRTCP index used per SSRC.
    tx_rtcp: SsrcMap<u32>,
    rx_rtp: SsrcMap<ReplayWindow>,
    rx_rtcp: SsrcMap<ReplayWindow>,
    max_streams: usize,
    counters: SrtpCounters,
}

/// Length of the RTP header (fixed part, CSRCs and extension) at the front of `packet`.
#[inline]
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < 12 {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(len + 2..len + 4).ok_or(SrtpError::TooShort)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if len > packet.len() {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

#[inline]
fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

impl SrtpContext {
    /// Key a context from the DTLS-SRTP exported master keys and salts.
    pub fn new(
        profile: Profile,
        tx_key: &[u8],
        tx_salt: &[u8],
        rx_key: &[u8],
        rx_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            profile,
            tx: Transform::new(profile, tx_key, tx_salt)?,
            rx: Transform::new(profile, rx_key, rx_salt)?,
            tx_rtp: SsrcMap::default(),
            tx_rtcp: SsrcMap::default(),
            rx_rtp: SsrcMap::default(),
            rx_rtcp: SsrcMap::default(),
            max_streams: DEFAULT_MAX_STREAMS,
            counters: SrtpCounters::default(),
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    pub fn counters(&self) -> &SrtpCounters {
        &self.counters
    }

    pub fn set_max_streams(&mut self, max_streams: usize) {
        self.max_streams = max_streams;
    }

    /// SSRCs with state: (sent RTP, received RTP).
    pub fn stream_counts(&self) -> (usize, usize) {
        (self.tx_rtp.len(), self.rx_rtp.len())
    }

    /// Rollover counter of a sent / received RTP stream, if the SSRC is known.
    pub fn tx_roc(&self, ssrc: u32) -> Option<u32> {
        self.tx_rtp.get(ssrc).map(|i| (i >> 16) as u32)
    }

    pub fn rx_roc(&self, ssrc: u32) -> Option<u32> {
        self.rx_rtp
            .get(ssrc)
            .and_then(ReplayWindow::highest)
            .map(|i| (i >> 16) as u32)
    }

    /// Protect the RTP packet `buf[..len]` in place; returns the SRTP length. `buf` must have
    /// room for the trailer ([`Profile::rtp_trailer_len`], at most
    /// [`super::SRTP_MAX_TRAILER_LEN`]) after `len`.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let result = self.protect_rtp_inner(buf, len);
        self.count(result, |c| &mut c.rtp_protected)
    }

    /// Verify, replay-check and decrypt the SRTP packet filling `packet`, in place; returns
    /// the RTP length. On error the stream state is unchanged.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let result = self.unprotect_rtp_inner(packet);
        self.count(result, |c| &mut c.rtp_unprotected)
    }

    /// Protect the (compound) RTCP packet `buf[..len]` in place with the next SRTCP index of
    /// its sender SSRC; returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let result = self.protect_rtcp_inner(buf, len);
        self.count(result, |c| &mut c.rtcp_protected)
    }

    /// Verify, replay-check and decrypt the SRTCP packet filling `packet`; returns the RTCP
    /// length.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let result = self.unprotect_rtcp_inner(packet);
        self.count(result, |c| &mut c.rtcp_unprotected)
    }

    #[inline]
    fn count(
        &mut self,
        result: Result<usize, SrtpError>,
        ok: impl FnOnce(&mut SrtpCounters) -> &mut u64,
    ) -> Result<usize, SrtpError> {
        match result {
            Ok(_) => *ok(&mut self.counters) += 1,
            Err(e) => self.counters.record(e),
        }
        result
    }

    fn protect_rtp_inner(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let header_len = rtp_header_len(packet)?;
        if buf.len() < len + self.profile.rtp_trailer_len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be_u32(&buf[8..12]);
        let highest = self.tx_rtp.get(ssrc).copied();
        if highest.is_none() && self.tx_rtp.len() >= self.max_streams {
            return Err(SrtpError::TooManyStreams);
        }
        let index = estimate_index(highest, seq)?;
        let out = match &self.tx {
            Transform::Cm(t) => t.protect_rtp(buf, header_len, len, ssrc, index),
            Transform::Gcm(t) => t.protect_rtp(buf, header_len, len, ssrc, index)?,
        };
        match highest {
            Some(h) if index <= h => {}
            _ => {
                if highest.is_some_and(|h| index >> 16 > h >> 16) {
                    self.counters.roc_rollovers += 1;
                }
                self.tx_rtp.insert(ssrc, index);
            }
        }
        Ok(out)
    }

    fn unprotect_rtp_inner(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let trailer = self.profile.rtp_trailer_len();
        if packet.len() < 12 + trailer {
            return Err(SrtpError::TooShort);
        }
        let header_len = rtp_header_len(&packet[..packet.len() - trailer])?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = be_u32(&packet[8..12]);
        let window = self.rx_rtp.get(ssrc);
        if window.is_none() && self.rx_rtp.len() >= self.max_streams {
            return Err(SrtpError::TooManyStreams);
        }
        let highest = window.and_then(ReplayWindow::highest);
        let index = estimate_index(highest, seq)?;
        if let Some(w) = window {
            w.check(index)?;
        }
        let len = match &self.rx {
            Transform::Cm(t) => t.unprotect_rtp(packet, header_len, ssrc, index)?,
            Transform::Gcm(t) => t.unprotect_rtp(packet, header_len, ssrc, index)?,
        };
        if highest.is_some_and(|h| index >> 16 > h >> 16) {
            self.counters.roc_rollovers += 1;
        }
        self.rx_rtp.get_or_default(ssrc).accept(index);
        Ok(len)
    }

    fn protect_rtcp_inner(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        if packet.len() < 8 {
            return Err(SrtpError::TooShort);
        }
        if packet[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        if buf.len() < len + self.profile.rtcp_trailer_len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = be_u32(&buf[4..8]);
        let last = self.tx_rtcp.get(ssrc).copied();
        if last.is_none() && self.tx_rtcp.len() >= self.max_streams {
            return Err(SrtpError::TooManyStreams);
        }
        // Like libsrtp, the first SRTCP index of a stream is 1.
        let index = last.unwrap_or(0) + 1;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let out = match &self.tx {
            Transform::Cm(t) => t.protect_rtcp(buf, len, ssrc, index),
            Transform::Gcm(t) => t.protect_rtcp(buf, len, ssrc, index)?,
        };
        self.tx_rtcp.insert(ssrc, index);
        Ok(out)
    }

    fn unprotect_rtcp_inner(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let n = packet.len();
        if n < 8 + self.profile.rtcp_trailer_len() {
            return Err(SrtpError::TooShort);
        }
        if packet[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let ssrc = be_u32(&packet[4..8]);
        let index_at = match self.rx {
            Transform::Cm(_) => n - self.profile.rtcp_tag_len() - 4,
            Transform::Gcm(_) => n - 4,
        };
        let e_index = be_u32(&packet[index_at..index_at + 4]);
        let index = u64::from(e_index & MAX_SRTCP_INDEX);
        let window = self.rx_rtcp.get(ssrc);
        match window {
            Some(w) => w.check(index)?,
            None if self.rx_rtcp.len() >= self.max_streams => {
                return Err(SrtpError::TooManyStreams)
            }
            None => {}
        }
        let len = match &self.rx {
            Transform::Cm(t) => t.unprotect_rtcp(packet, ssrc, e_index)?,
            Transform::Gcm(t) => t.unprotect_rtcp(packet, ssrc, e_index)?,
        };
        self.rx_rtcp.get_or_default(ssrc).accept(index);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_counts_csrcs_and_extension() {
        let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(rtp_header_len(&p), Ok(12));
        p[0] = 0x92; // X + 2 CSRCs
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        assert_eq!(rtp_header_len(&p), Ok(12 + 8 + 8));
        assert_eq!(rtp_header_len(&p[..27]), Err(SrtpError::TooShort));
        p[0] = 0x40;
        assert_eq!(rtp_header_len(&p), Err(SrtpError::BadVersion));
    }
}
