//! AES-128 counter mode with HMAC-SHA1 (RFC 3711 §4.1.1, §4.2.1).

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::Aes128Enc;
use ctr::{flavors, Ctr128BE, CtrCore};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::kdf::{self, Labels};
use super::SrtpError;

const SESSION_KEY_LEN: usize = 16;
const SESSION_SALT_LEN: usize = 14;
const AUTH_KEY_LEN: usize = 20;

/// Session keys for one packet kind (RTP or RTCP) in one direction. Keyed once: per packet
/// only the IV changes, and the HMAC state with the key already absorbed is cloned.
#[derive(Clone)]
pub struct CmKeys {
    cipher: Aes128Enc,
    salt: [u8; SESSION_SALT_LEN],
    mac: Hmac<Sha1>,
}

impl CmKeys {
    pub fn derive(
        master_key: &[u8],
        master_salt: &[u8],
        labels: Labels,
    ) -> Result<Self, SrtpError> {
        if master_key.len() != SESSION_KEY_LEN || master_salt.len() != SESSION_SALT_LEN {
            return Err(SrtpError::BadKeyLength);
        }
        let mut key = [0u8; SESSION_KEY_LEN];
        let mut salt = [0u8; SESSION_SALT_LEN];
        let mut auth = [0u8; AUTH_KEY_LEN];
        kdf::derive(master_key, master_salt, labels.encryption, &mut key)?;
        kdf::derive(master_key, master_salt, labels.salt, &mut salt)?;
        kdf::derive(master_key, master_salt, labels.auth, &mut auth)?;
        Ok(Self::from_session_keys(&key, &salt, &auth))
    }

    pub fn from_session_keys(
        key: &[u8; SESSION_KEY_LEN],
        salt: &[u8; SESSION_SALT_LEN],
        auth_key: &[u8; AUTH_KEY_LEN],
    ) -> Self {
        Self {
            cipher: Aes128Enc::new(key.into()),
            salt: *salt,
            mac: <Hmac<Sha1> as KeyInit>::new_from_slice(auth_key)
                .expect("HMAC accepts any key length"),
        }
    }

    /// IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16).
    #[inline]
    fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..SESSION_SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }

    /// XOR the keystream for (ssrc, index) into `data`; encryption and decryption alike.
    #[inline]
    pub fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let iv = self.iv(ssrc, index);
        Ctr128BE::from_core(CtrCore::<&Aes128Enc, flavors::Ctr128BE>::inner_iv_init(
            &self.cipher,
            &iv.into(),
        ))
        .apply_keystream(data);
    }

    /// HMAC-SHA1 over `data || suffix`.
    #[inline]
    fn mac(&self, data: &[u8], suffix: &[u8]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.update(suffix);
        mac.finalize().into_bytes().into()
    }
}

/// Both packet kinds of one direction.
#[derive(Clone)]
pub struct CmTransform {
    rtp: CmKeys,
    rtcp: CmKeys,
    rtp_tag_len: usize,
}

/// SRTCP tag length for both AES-CM profiles.
const RTCP_TAG_LEN: usize = 10;

impl CmTransform {
    pub fn new(
        master_key: &[u8],
        master_salt: &[u8],
        rtp_tag_len: usize,
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            rtp: CmKeys::derive(master_key, master_salt, kdf::RTP_LABELS)?,
            rtcp: CmKeys::derive(master_key, master_salt, kdf::RTCP_LABELS)?,
            rtp_tag_len,
        })
    }

    /// Encrypt `buf[header_len..len]` and append the tag; `buf` has room for it.
    #[inline]
    pub fn protect_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> usize {
        self.rtp
            .apply_keystream(ssrc, index, &mut buf[header_len..len]);
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = self.rtp.mac(&buf[..len], &roc);
        buf[len..len + self.rtp_tag_len].copy_from_slice(&tag[..self.rtp_tag_len]);
        len + self.rtp_tag_len
    }

    /// Verify and decrypt a whole SRTP packet; returns the RTP length.
    #[inline]
    pub fn unprotect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let len = packet.len() - self.rtp_tag_len;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = self.rtp.mac(&packet[..len], &roc);
        if !bool::from(tag[..self.rtp_tag_len].ct_eq(&packet[len..])) {
            return Err(SrtpError::AuthFailed);
        }
        self.rtp
            .apply_keystream(ssrc, index, &mut packet[header_len..len]);
        Ok(len)
    }

    /// Encrypt after the 8-byte RTCP header, then append E||index and the tag.
    #[inline]
    pub fn protect_rtcp(&self, buf: &mut [u8], len: usize, ssrc: u32, index: u32) -> usize {
        self.rtcp
            .apply_keystream(ssrc, u64::from(index), &mut buf[8..len]);
        buf[len..len + 4].copy_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let tag = self.rtcp.mac(&buf[..len + 4], &[]);
        buf[len + 4..len + 4 + RTCP_TAG_LEN].copy_from_slice(&tag[..RTCP_TAG_LEN]);
        len + 4 + RTCP_TAG_LEN
    }

    /// Verify and (if the E bit is set) decrypt a whole SRTCP packet; returns the RTCP length.
    #[inline]
    pub fn unprotect_rtcp(
        &self,
        packet: &mut [u8],
        ssrc: u32,
        e_index: u32,
    ) -> Result<usize, SrtpError> {
        let authenticated = packet.len() - RTCP_TAG_LEN;
        let tag = self.rtcp.mac(&packet[..authenticated], &[]);
        if !bool::from(tag[..RTCP_TAG_LEN].ct_eq(&packet[authenticated..])) {
            return Err(SrtpError::AuthFailed);
        }
        let len = authenticated - 4;
        if e_index & 0x8000_0000 != 0 {
            self.rtcp
                .apply_keystream(ssrc, u64::from(e_index & 0x7fff_ffff), &mut packet[8..len]);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::srtp::test_util::unhex;

    // RFC 3711 Appendix B.2: the keystream with SSRC 0 and index 0 starts at the salt.
    #[test]
    fn rfc3711_b2_keystream() {
        let key: [u8; 16] = unhex("2B7E151628AED2A6ABF7158809CF4F3C")
            .try_into()
            .unwrap();
        let salt: [u8; 14] = unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let keys = CmKeys::from_session_keys(&key, &salt, &[0; 20]);
        assert_eq!(
            keys.iv(0, 0).to_vec(),
            unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
        );
        let mut segment = vec![0u8; 0xff02 * 16];
        keys.apply_keystream(0, 0, &mut segment);
        let blocks = [
            (0x0000, "E03EAD0935C95E80E166B16DD92B4EB4"),
            (0x0001, "D23513162B02D0F72A43A2FE4A5F97AB"),
            (0x0002, "41E95B3BB0A2E8DD477901E4FCA894C0"),
            (0xfeff, "EC8CDF7398607CB0F2D21675EA9EA1E4"),
            (0xff00, "362B7C3C6773516318A077D7FC5073AE"),
            (0xff01, "6A2CC3787889374FBEB4C81B17BA6C44"),
        ];
        for (block, expected) in blocks {
            assert_eq!(
                segment[block * 16..block * 16 + 16].to_vec(),
                unhex(expected),
                "block {block:#x}"
            );
        }
    }

    #[test]
    fn iv_places_ssrc_and_index() {
        let keys = CmKeys::from_session_keys(&[0; 16], &[0; 14], &[0; 20]);
        assert_eq!(
            keys.iv(0x11223344, 0xaabb_ccdd_eeff).to_vec(),
            unhex("0000000011223344aabbccddeeff0000")
        );
    }
}
