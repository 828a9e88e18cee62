//! SRTP protection profiles (RFC 5764 §4.1.2, RFC 7714 §14) and their sizes.

use super::SrtpError;

/// A negotiated DTLS-SRTP protection profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    Aes128CmHmacSha1_80,
    Aes128CmHmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Aes128CmHmacSha1_80,
        Profile::Aes128CmHmacSha1_32,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ];

    /// Parse the name OpenSSL reports (`SSL_get_selected_srtp_profile`).
    pub fn from_openssl_name(name: &str) -> Result<Self, SrtpError> {
        match name {
            "SRTP_AES128_CM_SHA1_80" => Ok(Profile::Aes128CmHmacSha1_80),
            "SRTP_AES128_CM_SHA1_32" => Ok(Profile::Aes128CmHmacSha1_32),
            "SRTP_AEAD_AES_128_GCM" => Ok(Profile::AeadAes128Gcm),
            "SRTP_AEAD_AES_256_GCM" => Ok(Profile::AeadAes256Gcm),
            _ => Err(SrtpError::UnknownProfile),
        }
    }

    pub fn openssl_name(self) -> &'static str {
        match self {
            Profile::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
            Profile::Aes128CmHmacSha1_32 => "SRTP_AES128_CM_SHA1_32",
            Profile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Profile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        }
    }

    /// Master (and session) encryption key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master (and session) salt length in bytes.
    pub fn salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    pub fn is_aead(self) -> bool {
        matches!(self, Profile::AeadAes128Gcm | Profile::AeadAes256Gcm)
    }

    /// Bytes appended to an SRTP packet.
    pub fn rtp_trailer_len(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 10,
            Profile::Aes128CmHmacSha1_32 => 4,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 16,
        }
    }

    /// Tag length of SRTCP; the _32 profile still uses an 80-bit tag for RTCP (RFC 5764 §4.1.2).
    pub fn rtcp_tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }

    /// Bytes appended to an SRTCP packet: tag plus the E-bit/index word.
    pub fn rtcp_trailer_len(self) -> usize {
        self.rtcp_tag_len() + 4
    }
}
