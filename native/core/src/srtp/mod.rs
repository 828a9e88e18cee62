//! Sans-IO SRTP/SRTCP (RFC 3711, RFC 7714) for the native media plane.
//!
//! One [`SrtpContext`] covers one peer: a transmit half keyed with our master key and a
//! receive half keyed with the peer's, each tracking every SSRC the peer uses. Packets are
//! protected and unprotected in place on caller-owned buffers, so the I/O path can run on
//! pooled buffers without allocating per packet. Failures are [`SrtpError`] values and are
//! counted in [`SrtpCounters`]; nothing here panics on packet input.

mod cm;
mod context;
mod gcm;
pub mod kdf;
mod profile;
mod replay;
mod ssrc_map;

pub use context::{SrtpContext, SrtpCounters, DEFAULT_MAX_STREAMS};
pub use profile::Profile;
pub use replay::{estimate_index, ReplayWindow};

/// Largest number of bytes protection appends to a packet (SRTCP with AES-GCM: tag + index).
pub const SRTP_MAX_TRAILER_LEN: usize = 20;

/// Why a packet could not be protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpError {
    /// Shorter than its headers plus the authentication trailer.
    TooShort,
    /// The version bits are not 2.
    BadVersion,
    /// The authentication tag does not match: wrong key, tampering or corruption.
    AuthFailed,
    /// This packet index was already accepted.
    Replayed,
    /// Older than the replay window (or from before the stream started), so it cannot be
    /// checked for replay.
    TooOld,
    /// The context already tracks its maximum number of SSRCs.
    TooManyStreams,
    /// The packet index space of the stream is exhausted; the session must be re-keyed.
    IndexExhausted,
    /// The caller's buffer has no room for the authentication trailer.
    BufferTooSmall,
    /// Master key or salt length does not match the profile.
    BadKeyLength,
    /// The profile name is not one we implement.
    UnknownProfile,
}

impl SrtpError {
    /// Stable snake_case name, used as a counter label.
    pub fn name(self) -> &'static str {
        match self {
            SrtpError::TooShort => "too_short",
            SrtpError::BadVersion => "bad_version",
            SrtpError::AuthFailed => "auth_failed",
            SrtpError::Replayed => "replayed",
            SrtpError::TooOld => "too_old",
            SrtpError::TooManyStreams => "too_many_streams",
            SrtpError::IndexExhausted => "index_exhausted",
            SrtpError::BufferTooSmall => "buffer_too_small",
            SrtpError::BadKeyLength => "bad_key_length",
            SrtpError::UnknownProfile => "unknown_profile",
        }
    }
}

impl std::fmt::Display for SrtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SrtpError::TooShort => "packet too short",
            SrtpError::BadVersion => "not an RTP/RTCP version 2 packet",
            SrtpError::AuthFailed => "authentication failed",
            SrtpError::Replayed => "replayed packet",
            SrtpError::TooOld => "packet too old for the replay window",
            SrtpError::TooManyStreams => "too many SSRCs in this SRTP context",
            SrtpError::IndexExhausted => "SRTP packet index exhausted, re-key required",
            SrtpError::BufferTooSmall => "buffer has no room for the SRTP trailer",
            SrtpError::BadKeyLength => "master key or salt length does not match the profile",
            SrtpError::UnknownProfile => "unknown SRTP protection profile",
        })
    }
}

impl std::error::Error for SrtpError {}

#[cfg(test)]
pub(crate) mod test_util {
    /// Hex test vectors (as printed in the RFCs) to bytes.
    pub fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
