//! SRTP key derivation (RFC 3711 §4.3) with key_derivation_rate 0, using the AES-CM PRF
//! (AES-128 for 128-bit master keys, AES-256 per RFC 6188 for 256-bit ones).

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128Enc, Aes256Enc};
use ctr::{flavors, Ctr128BE, CtrCore};

use super::SrtpError;

pub const LABEL_RTP_ENCRYPTION: u8 = 0x00;
pub const LABEL_RTP_AUTH: u8 = 0x01;
pub const LABEL_RTP_SALT: u8 = 0x02;
pub const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
pub const LABEL_RTCP_AUTH: u8 = 0x04;
pub const LABEL_RTCP_SALT: u8 = 0x05;

/// Labels for one of the two packet kinds.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    pub encryption: u8,
    pub auth: u8,
    pub salt: u8,
}

pub const RTP_LABELS: Labels = Labels {
    encryption: LABEL_RTP_ENCRYPTION,
    auth: LABEL_RTP_AUTH,
    salt: LABEL_RTP_SALT,
};

pub const RTCP_LABELS: Labels = Labels {
    encryption: LABEL_RTCP_ENCRYPTION,
    auth: LABEL_RTCP_AUTH,
    salt: LABEL_RTCP_SALT,
};

/// Fill `out` with the session key material for `label`.
///
/// The PRF input is the master salt XOR (label || six zero octets of index DIV kdr), times
/// 2^16. A 96-bit AEAD master salt is first padded to 112 bits with zeros (RFC 7714 §11,
/// erratum 4938), as libsrtp does.
pub fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    if master_salt.len() > 14 {
        return Err(SrtpError::BadKeyLength);
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    match master_key.len() {
        16 => {
            let cipher =
                Aes128Enc::new_from_slice(master_key).map_err(|_| SrtpError::BadKeyLength)?;
            Ctr128BE::from_core(CtrCore::<Aes128Enc, flavors::Ctr128BE>::inner_iv_init(
                cipher,
                &iv.into(),
            ))
            .apply_keystream(out);
        }
        32 => {
            let cipher =
                Aes256Enc::new_from_slice(master_key).map_err(|_| SrtpError::BadKeyLength)?;
            Ctr128BE::from_core(CtrCore::<Aes256Enc, flavors::Ctr128BE>::inner_iv_init(
                cipher,
                &iv.into(),
            ))
            .apply_keystream(out);
        }
        _ => return Err(SrtpError::BadKeyLength),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::srtp::test_util::unhex;

    // RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let key = unhex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = unhex("0EC675AD498AFEEBB6960B3AABE6");
        let mut cipher_key = [0u8; 16];
        derive(&key, &salt, LABEL_RTP_ENCRYPTION, &mut cipher_key).unwrap();
        assert_eq!(
            cipher_key.to_vec(),
            unhex("C61E7A93744F39EE10734AFE3FF7A087")
        );
        let mut cipher_salt = [0u8; 14];
        derive(&key, &salt, LABEL_RTP_SALT, &mut cipher_salt).unwrap();
        assert_eq!(cipher_salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive(&key, &salt, LABEL_RTP_AUTH, &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            unhex(concat!(
                "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE",
                "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25",
                "6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
            ))
        );
    }

    #[test]
    fn wrong_key_length_is_an_error() {
        let mut out = [0u8; 16];
        assert_eq!(
            derive(&[0; 15], &[0; 14], 0, &mut out),
            Err(SrtpError::BadKeyLength)
        );
        assert_eq!(
            derive(&[0; 16], &[0; 15], 0, &mut out),
            Err(SrtpError::BadKeyLength)
        );
    }
}
