//! AEAD_AES_128_GCM / AEAD_AES_256_GCM for SRTP and SRTCP (RFC 7714), 16-byte tags.

use ring::aead::{self, LessSafeKey, UnboundKey};

use super::kdf::{self, Labels};
use super::SrtpError;

pub const TAG_LEN: usize = 16;
const SALT_LEN: usize = 12;

/// One AES-GCM key. ring's AES-GCM runs AES-CTR and GHASH fused in one pass (AES-NI / VAES with
/// carry-less multiply, detected at run time): about half the CPU of two separate passes, which
/// is most of what SRTP costs per forwarded packet.
#[derive(Clone)]
struct Aead(LessSafeKey);

impl Aead {
    fn new(key: &[u8]) -> Result<Self, SrtpError> {
        let algorithm = match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return Err(SrtpError::BadKeyLength),
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| SrtpError::BadKeyLength)?;
        Ok(Aead(LessSafeKey::new(key)))
    }

    #[inline]
    fn seal(
        &self,
        iv: &[u8; SALT_LEN],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SrtpError> {
        let nonce = aead::Nonce::assume_unique_for_key(*iv);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), data);
        // Only fails past GCM's 64 GiB plaintext limit, far beyond any datagram.
        let tag = tag.map_err(|_| SrtpError::BufferTooSmall)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts in place when the tag verifies; on failure `data` holds no plaintext (ring
    /// overwrites what it decrypted) and the packet is to be dropped.
    #[inline]
    fn open(
        &self,
        iv: &[u8; SALT_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), SrtpError> {
        let nonce = aead::Nonce::assume_unique_for_key(*iv);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| SrtpError::TooShort)?;
        self.0
            .open_in_place_separate_tag(
                nonce,
                aead::Aad::from(aad),
                aead::Tag::from(tag),
                data,
                0..,
            )
            .map(|_| ())
            .map_err(|_| SrtpError::AuthFailed)
    }
}

/// Session key and salt for one packet kind in one direction.
#[derive(Clone)]
pub struct GcmKeys {
    aead: Aead,
    salt: [u8; SALT_LEN],
}

impl GcmKeys {
    pub fn derive(
        master_key: &[u8],
        master_salt: &[u8],
        labels: Labels,
    ) -> Result<Self, SrtpError> {
        if master_salt.len() != SALT_LEN {
            return Err(SrtpError::BadKeyLength);
        }
        let mut key = [0u8; 32];
        let key = &mut key[..master_key.len().min(32)];
        let mut salt = [0u8; SALT_LEN];
        kdf::derive(master_key, master_salt, labels.encryption, key)?;
        kdf::derive(master_key, master_salt, labels.salt, &mut salt)?;
        Self::from_session_keys(key, &salt)
    }

    pub fn from_session_keys(key: &[u8], salt: &[u8; SALT_LEN]) -> Result<Self, SrtpError> {
        Ok(Self {
            aead: Aead::new(key)?,
            salt: *salt,
        })
    }

    /// The 12-byte IV: salt XOR (00 00 || SSRC || word1 (4 bytes) || word2 (2 bytes)) laid out
    /// per RFC 7714 §8.1 (RTP: ROC, SEQ) and §9.1 (RTCP: 00 00, index split over the tail).
    #[inline]
    fn iv(&self, ssrc: u32, tail: [u8; 6]) -> [u8; SALT_LEN] {
        let mut iv = self.salt;
        for (b, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[6..].iter_mut().zip(tail) {
            *b ^= s;
        }
        iv
    }

    #[inline]
    fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; SALT_LEN] {
        let mut tail = [0u8; 6];
        tail.copy_from_slice(&index.to_be_bytes()[2..]);
        self.iv(ssrc, tail)
    }

    #[inline]
    fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; SALT_LEN] {
        let mut tail = [0u8; 6];
        tail[2..].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
        self.iv(ssrc, tail)
    }
}

#[derive(Clone)]
pub struct GcmTransform {
    rtp: GcmKeys,
    rtcp: GcmKeys,
}

impl GcmTransform {
    pub fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        Ok(Self {
            rtp: GcmKeys::derive(master_key, master_salt, kdf::RTP_LABELS)?,
            rtcp: GcmKeys::derive(master_key, master_salt, kdf::RTCP_LABELS)?,
        })
    }

    /// Build directly from session keys (the RFC 7714 vectors are given that way).
    #[cfg(test)]
    fn from_session_keys(key: &[u8], salt: &[u8; SALT_LEN]) -> Result<Self, SrtpError> {
        let keys = GcmKeys::from_session_keys(key, salt)?;
        Ok(Self {
            rtp: keys.clone(),
            rtcp: keys,
        })
    }

    /// Encrypt the payload with the header as AAD and append the tag.
    #[inline]
    pub fn protect_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let iv = self.rtp.rtp_iv(ssrc, index);
        let (header, payload) = buf[..len].split_at_mut(header_len);
        let tag = self.rtp.aead.seal(&iv, header, payload)?;
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        Ok(len + TAG_LEN)
    }

    #[inline]
    pub fn unprotect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let len = packet.len() - TAG_LEN;
        let iv = self.rtp.rtp_iv(ssrc, index);
        let (body, tag) = packet.split_at_mut(len);
        let (header, payload) = body.split_at_mut(header_len);
        self.rtp.aead.open(&iv, header, payload, tag)?;
        Ok(len)
    }

    /// Layout: header(8) | ciphertext | tag(16) | E||index(4); AAD = header || E||index.
    #[inline]
    pub fn protect_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let e_index = (index | 0x8000_0000).to_be_bytes();
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&buf[..8]);
        aad[8..].copy_from_slice(&e_index);
        let iv = self.rtcp.rtcp_iv(ssrc, index);
        let tag = self.rtcp.aead.seal(&iv, &aad, &mut buf[8..len])?;
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        buf[len + TAG_LEN..len + TAG_LEN + 4].copy_from_slice(&e_index);
        Ok(len + TAG_LEN + 4)
    }

    #[inline]
    pub fn unprotect_rtcp(
        &self,
        packet: &mut [u8],
        ssrc: u32,
        e_index: u32,
    ) -> Result<usize, SrtpError> {
        let n = packet.len();
        let len = n - TAG_LEN - 4;
        let iv = self.rtcp.rtcp_iv(ssrc, e_index);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&packet[len..len + TAG_LEN]);
        if e_index & 0x8000_0000 != 0 {
            let mut aad = [0u8; 12];
            aad[..8].copy_from_slice(&packet[..8]);
            aad[8..].copy_from_slice(&e_index.to_be_bytes());
            self.rtcp.aead.open(&iv, &aad, &mut packet[8..len], &tag)?;
        } else {
            // Authenticated only: AAD is the whole RTCP packet followed by E||index, so move
            // the index word next to the packet to make the AAD contiguous.
            packet[len..len + 4].copy_from_slice(&e_index.to_be_bytes());
            let result = self.rtcp.aead.open(&iv, &packet[..len + 4], &mut [], &tag);
            if result.is_err() {
                // Leave the caller's bytes as they came.
                packet[len..len + TAG_LEN].copy_from_slice(&tag);
            }
            result?;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::srtp::test_util::unhex;

    // RFC 7714 §16-17 session keys; the salt is "Quid pro quo".
    const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SALT: &str = "517569642070726f2071756f";
    /// §16: SSRC 0x5501a0b2, SEQ 0xf17b, ROC 0, payload "Gallia est omnis divisa in partes tres".
    const RTP: &str = concat!(
        "8040f17b8041f8d35501a0b2",
        "47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573"
    );
    const SRTP_128: &str = concat!(
        "8040f17b8041f8d35501a0b2",
        "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833",
        "899d7f27beb16a9152cf765ee4390cce"
    );
    const SRTP_256: &str = concat!(
        "8040f17b8041f8d35501a0b2",
        "32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b",
        "7aa3db36dfffd6b0f9bb7878d7a76c13"
    );
    /// §17: sender report of SSRC "Mars", SRTCP index 0x5d4.
    const RTCP: &str = concat!(
        "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61",
        "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
    );
    const SRTCP_128: &str = concat!(
        "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda",
        "4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4"
    );
    const SRTCP_256: &str = concat!(
        "81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be",
        "8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4"
    );
    /// §17.3: authenticated only, E bit clear.
    const SRTCP_128_AUTH_ONLY: &str = concat!(
        "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61",
        "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef841dd9683dd78ec92ae58790125f62b3000005d4"
    );
    const SSRC_RTP: u32 = 0x5501a0b2;
    const SSRC_RTCP: u32 = 0x4d617273;

    fn transform(key: &str) -> GcmTransform {
        let salt: [u8; 12] = unhex(SALT).try_into().unwrap();
        GcmTransform::from_session_keys(&unhex(key), &salt).unwrap()
    }

    fn check_rtp(key: &str, expected: &str) {
        let t = transform(key);
        let plain = unhex(RTP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + TAG_LEN, 0);
        let n = t
            .protect_rtp(&mut buf, 12, plain.len(), SSRC_RTP, 0xf17b)
            .unwrap();
        assert_eq!(&buf[..n], &unhex(expected)[..]);
        let n = t.unprotect_rtp(&mut buf, 12, SSRC_RTP, 0xf17b).unwrap();
        assert_eq!(&buf[..n], &plain[..]);
    }

    fn check_rtcp(key: &str, expected: &str) {
        let t = transform(key);
        let plain = unhex(RTCP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + TAG_LEN + 4, 0);
        let n = t
            .protect_rtcp(&mut buf, plain.len(), SSRC_RTCP, 0x5d4)
            .unwrap();
        assert_eq!(&buf[..n], &unhex(expected)[..]);
        let n = t.unprotect_rtcp(&mut buf, SSRC_RTCP, 0x8000_05d4).unwrap();
        assert_eq!(&buf[..n], &plain[..]);
    }

    #[test]
    fn rfc7714_16_1_aes_128_gcm_rtp() {
        check_rtp(KEY_128, SRTP_128);
    }

    #[test]
    fn rfc7714_16_2_aes_256_gcm_rtp() {
        check_rtp(KEY_256, SRTP_256);
    }

    #[test]
    fn rfc7714_17_1_aes_128_gcm_rtcp() {
        check_rtcp(KEY_128, SRTCP_128);
    }

    #[test]
    fn rfc7714_17_2_aes_256_gcm_rtcp() {
        check_rtcp(KEY_256, SRTCP_256);
    }

    #[test]
    fn rfc7714_17_3_authenticated_only_rtcp() {
        let t = transform(KEY_128);
        let mut buf = unhex(SRTCP_128_AUTH_ONLY);
        let n = t.unprotect_rtcp(&mut buf, SSRC_RTCP, 0x5d4).unwrap();
        assert_eq!(&buf[..n], &unhex(RTCP)[..]);
    }

    #[test]
    fn rtp_tampering_fails_without_giving_away_plaintext() {
        let t = transform(KEY_128);
        let original = unhex(SRTP_128);
        let plaintext = unhex(RTP);
        for i in 0..original.len() {
            let mut buf = original.clone();
            buf[i] ^= 0x01;
            assert_eq!(
                t.unprotect_rtp(&mut buf, 12, SSRC_RTP, 0xf17b),
                Err(SrtpError::AuthFailed),
                "byte {i}"
            );
            assert_ne!(&buf[12..plaintext.len()], &plaintext[12..], "byte {i}");
        }
        // The transform is unchanged by the failures.
        let mut buf = original.clone();
        let n = t.unprotect_rtp(&mut buf, 12, SSRC_RTP, 0xf17b).unwrap();
        assert_eq!(&buf[..n], &plaintext[..]);
    }
}
