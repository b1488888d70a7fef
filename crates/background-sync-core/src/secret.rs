//! Credentials at rest: the access and refresh tokens `set_auth` stores are sealed with a key
//! the platform keeps (Android Keystore, iOS Keychain, the desktop keyring), so a copy of the
//! database file (a backup, a rooted phone's file dump, a support bundle) does not carry them.
//! Pure: AES-256-GCM from `ring` (already linked by rustls), a random 96-bit nonce per seal.
//! The threat model is in docs/guarantees.md.

use crate::error::{Error, Result};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// What a sealed value starts with; anything else in the credentials row is plaintext JSON
/// (written by a version before sealing, or with [`CredentialStorage::Plaintext`]).
const SEALED_PREFIX: &str = "sealed:v1:";

/// Binds a sealed value to its purpose, so a sealed value copied into another setting does not
/// open there.
const AAD: &[u8] = b"background-sync credentials v1";

/// A 256-bit key that seals the stored credentials. Not printed by `Debug`; zeroed on drop.
/// Since: unreleased.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From a slice of exactly [`SecretKey::LEN`] bytes (what the native shims hand over).
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::invalid(format!(
                "a secret key is {} bytes, not {}",
                Self::LEN,
                bytes.len()
            ))
        })?;
        Ok(Self(arr))
    }

    /// A new random key from the OS's generator.
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| Error::Platform("the OS random generator failed".into()))?;
        Ok(Self(k))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The SQLCipher key derived from this key (HKDF-SHA256, its own label, so the database key
    /// and the credentials key are never the same bytes), as the raw-key form
    /// `OpenOptions::encryption_key` takes: `x'<64 hex digits>'`. What the plugin's
    /// `Builder::encrypt_database` and the headless entries use, so every process of the app
    /// derives the same one from the platform's key.
    pub fn database_key(&self) -> String {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"background-sync").extract(&self.0);
        let mut out = [0u8; 32];
        prk.expand(&[b"sqlcipher database key v1"], Len32)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        zeroize::Zeroize::zeroize(&mut out);
        format!("x'{hex}'")
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Where the engine keeps the credentials `set_auth` stores. Since: unreleased.
#[derive(Debug, Clone, Default)]
pub enum CredentialStorage {
    /// In the database file as JSON (what the engine did before sealing existed; still readable by the
    /// other modes). The engine's default for hosts that give it no key.
    #[default]
    Plaintext,
    /// In the database file, sealed with this key. A plaintext row left by an earlier version
    /// is sealed when the database opens.
    Sealed(SecretKey),
    /// Only in this process's memory: gone when it exits (the app sets them again at start).
    /// What the plugin falls back to when the platform's secure store cannot be reached.
    MemoryOnly,
}

impl CredentialStorage {
    /// A short name for diagnostics and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            CredentialStorage::Plaintext => "plaintext",
            CredentialStorage::Sealed(_) => "sealed",
            CredentialStorage::MemoryOnly => "memory-only",
        }
    }
}

pub(crate) fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

pub(crate) fn seal(key: &SecretKey, plaintext: &str) -> Result<String> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::Platform("the OS random generator failed".into()))?;
    let mut buf = plaintext.as_bytes().to_vec();
    key.aead()
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut buf)
        .map_err(|_| Error::Internal("sealing the credentials failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
    ))
}

/// Open a sealed value; `None` when it does not open with this key (another key, or edited).
pub(crate) fn open(key: &SecretKey, stored: &str) -> Option<String> {
    let body = stored.strip_prefix(SEALED_PREFIX)?;
    let mut raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body)
        .ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = raw.split_at_mut(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let plain = key.aead().open_in_place(nonce, Aad::from(AAD), sealed).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_opens_with_its_key_only_and_hides_the_plaintext() {
        let k = SecretKey::generate().unwrap();
        let s = seal(&k, r#"{"accessToken":"tok-123"}"#).unwrap();
        assert!(is_sealed(&s) && !s.contains("tok-123"), "{s}");
        assert_eq!(open(&k, &s).unwrap(), r#"{"accessToken":"tok-123"}"#);
        // Two seals of one value differ (fresh nonce each time).
        assert_ne!(s, seal(&k, r#"{"accessToken":"tok-123"}"#).unwrap());
        // Another key, a flipped byte, a truncated value: none opens.
        assert!(open(&SecretKey::generate().unwrap(), &s).is_none());
        let mut b = s.clone().into_bytes();
        let last = b.len() - 2;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        assert!(open(&k, &String::from_utf8(b).unwrap()).is_none());
        assert!(open(&k, &s[..20]).is_none());
        assert!(open(&k, "plain").is_none());
    }

    #[test]
    fn the_database_key_is_derived_stable_and_not_the_key_itself() {
        let k = SecretKey::from_bytes([7; 32]);
        let d = k.database_key();
        assert_eq!(d, SecretKey::from_bytes([7; 32]).database_key());
        assert_ne!(d, SecretKey::from_bytes([8; 32]).database_key());
        assert!(d.len() == 67 && d.starts_with("x'") && d.ends_with('\''), "{d}");
        assert!(!d.contains(&"07".repeat(32)), "the key itself");
    }

    #[test]
    fn keys_are_32_bytes_and_never_printed() {
        assert!(SecretKey::from_slice(&[1; 31]).is_err());
        let k = SecretKey::from_slice(&[7; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
    }
}
