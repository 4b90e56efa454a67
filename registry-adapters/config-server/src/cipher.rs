//! Spring Security's symmetric text encryption, `Encryptors.text(key, salt)`, which Spring
//! Cloud Config uses for `encrypt.key`: AES-256-CBC with PKCS#5 padding, the key derived by
//! PBKDF2WithHmacSHA1 (1024 iterations, 256 bits) from the key's UTF-8 bytes and the salt
//! read as hex; a random 16-byte IV is put before the cipher text and the whole is written
//! as lower-case hex. A value encrypted by either side decrypts on the other: the e2e test
//! `test_encryption.py` runs Spring's own jar against Ferry.
//!
//! Decryption fails the way Spring's does, so each failure can take the status the Config
//! Server gives it: see [`DecryptError`].

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

/// PBKDF2 rounds and the IV length, as `AesBytesEncryptor` has them.
const ITERATIONS: u32 = 1024;
const IV_BYTES: usize = 16;

/// Spring Cloud's default `encrypt.salt`.
pub const DEFAULT_SALT: &str = "deadbeef";

/// Why a key cannot be used; Spring's server fails to start in each case.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("encrypt.salt must be an even number of hex digits, and not empty")]
    BadSalt,
    #[error("the key is an RSA key; Ferry supports only a symmetric encrypt.key")]
    RsaKey,
}

/// How a decryption failed, named after the Java exception Spring throws, which decides the
/// status: `/decrypt` answers 400 to an `IllegalArgument` or `IllegalState` failure and 500
/// to the rest; a `{cipher}` value that fails in any way is served as `invalid.<name>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    /// Not hex, an odd number of digits, or plain text that is not UTF-8
    /// (`IllegalArgumentException`).
    #[error("{0}")]
    IllegalArgument(&'static str),
    /// A length that is no multiple of the block, or bad padding, as a wrong key gives
    /// (`IllegalStateException`).
    #[error("{0}")]
    IllegalState(&'static str),
    /// Fewer bytes than the IV (`ArrayIndexOutOfBoundsException`).
    #[error("the cipher text is shorter than its IV")]
    TooShort,
}

impl DecryptError {
    /// Whether Spring's `/decrypt` answers 400 (else the error escapes as a 500).
    pub fn is_invalid_cipher(&self) -> bool {
        !matches!(self, DecryptError::TooShort)
    }
}

/// One symmetric key, derived once: PBKDF2 is deliberately slow.
pub struct TextEncryptor {
    key: [u8; 32],
}

impl std::fmt::Debug for TextEncryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("TextEncryptor")
    }
}

impl TextEncryptor {
    /// The encryptor for `encrypt.key` = `password` and `encrypt.salt` = `salt` (hex), as
    /// Spring Cloud's `EncryptorFactory` makes it.
    pub fn new(password: &str, salt: &str) -> Result<TextEncryptor, KeyError> {
        if password.contains("RSA PRIVATE KEY")
            || password.starts_with("ssh-rsa")
            || password.contains("RSA PUBLIC KEY")
        {
            return Err(KeyError::RsaKey);
        }
        let salt = decode_hex(salt).map_err(|_| KeyError::BadSalt)?;
        if salt.is_empty() {
            // `PBEKeySpec` refuses an empty salt.
            return Err(KeyError::BadSalt);
        }
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), &salt, ITERATIONS, &mut key);
        Ok(TextEncryptor { key })
    }

    /// Hex of a fresh random IV followed by the cipher text of `text`'s UTF-8 bytes.
    pub fn encrypt(&self, text: &str) -> String {
        let mut iv = [0u8; IV_BYTES];
        // The OS random source failing is no state the server can serve from.
        getrandom::fill(&mut iv).expect("the operating system's random source works");
        let encrypted = Encryptor::new(&self.key.into(), &iv.into())
            .encrypt_padded_vec::<Pkcs7>(text.as_bytes());
        let mut out = hex::encode(iv);
        out.push_str(&hex::encode(encrypted));
        out
    }

    /// The plain text of `encrypted` (hex, upper or lower case).
    pub fn decrypt(&self, encrypted: &str) -> Result<String, DecryptError> {
        let bytes = decode_hex(encrypted)?;
        if bytes.len() < IV_BYTES {
            return Err(DecryptError::TooShort);
        }
        let (iv, body) = bytes.split_at(IV_BYTES);
        // Java's cipher gives nothing back for nothing, where a padded mode would complain.
        if body.is_empty() {
            return Ok(String::new());
        }
        if body.len() % IV_BYTES != 0 {
            return Err(DecryptError::IllegalState(
                "Unable to invoke Cipher due to illegal block size",
            ));
        }
        let iv: [u8; IV_BYTES] = iv.try_into().unwrap_or_default();
        let plain = Decryptor::new(&self.key.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(body)
            .map_err(|_| {
                DecryptError::IllegalState("Unable to invoke Cipher due to bad padding")
            })?;
        String::from_utf8(plain).map_err(|_| DecryptError::IllegalArgument("Decoding failed"))
    }
}

/// Spring Security's `Hex.decode`: an even number of hex digits, either case.
fn decode_hex(text: &str) -> Result<Vec<u8>, DecryptError> {
    // Java counts UTF-16 units; any non-ASCII character fails as a non-hex digit below.
    if !text.encode_utf16().count().is_multiple_of(2) {
        return Err(DecryptError::IllegalArgument(
            "Hex-encoded string must have an even number of characters",
        ));
    }
    hex::decode(text).map_err(|_| DecryptError::IllegalArgument("Detected a Non-hex character"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Spring Security 6.5.5's `Encryptors.text("mykey", "deadbeef")` (the
    /// `tests/e2e/java/SpringCrypto.java` helper): the real implementation's answer.
    const FROM_JAVA: &str = "c70b7ae1ce75ca646e0d98513291d9eb783a58e97dc4eae6eb0d363025a0befd";

    #[test]
    fn a_value_encrypted_by_spring_decrypts_and_a_round_trip_keeps_the_text() {
        let encryptor = TextEncryptor::new("mykey", DEFAULT_SALT).unwrap();
        assert_eq!(encryptor.decrypt(FROM_JAVA).unwrap(), "hello");
        assert_eq!(
            encryptor.decrypt(&FROM_JAVA.to_ascii_uppercase()).unwrap(),
            "hello"
        );
        for text in ["", "s3cr\u{e9}t", "sixteen bytes!!!", &"x".repeat(1000)] {
            let encrypted = encryptor.encrypt(text);
            assert!(encrypted
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f')));
            assert_eq!(encrypted.len(), 2 * (16 + (text.len() / 16 + 1) * 16));
            assert_eq!(encryptor.decrypt(&encrypted).unwrap(), text);
        }
        // A fresh IV each time: the same text never encrypts the same way twice.
        assert_ne!(encryptor.encrypt("a"), encryptor.encrypt("a"));
    }

    #[test]
    fn failures_are_the_ones_spring_reports() {
        let encryptor = TextEncryptor::new("mykey", DEFAULT_SALT).unwrap();
        let other = TextEncryptor::new("other", DEFAULT_SALT).unwrap();
        let iv = "00112233445566778899aabbccddeeff";
        assert!(matches!(
            encryptor.decrypt("zz"),
            Err(DecryptError::IllegalArgument(_))
        ));
        assert!(matches!(
            encryptor.decrypt("abc"),
            Err(DecryptError::IllegalArgument(_))
        ));
        assert_eq!(encryptor.decrypt("0011"), Err(DecryptError::TooShort));
        assert_eq!(encryptor.decrypt(iv).unwrap(), "");
        assert!(matches!(
            encryptor.decrypt(&format!("{iv}00")),
            Err(DecryptError::IllegalState(_))
        ));
        let wrong_key = other.decrypt(FROM_JAVA);
        assert!(wrong_key.is_err() || wrong_key.as_deref() != Ok("hello"));
        assert!(!DecryptError::TooShort.is_invalid_cipher());
        assert_eq!(
            TextEncryptor::new("k", "abc").unwrap_err(),
            KeyError::BadSalt
        );
        assert_eq!(TextEncryptor::new("k", "").unwrap_err(), KeyError::BadSalt);
        assert_eq!(
            TextEncryptor::new("-----BEGIN RSA PRIVATE KEY-----", "00").unwrap_err(),
            KeyError::RsaKey
        );
    }
}
