//! Secrets of the hub: random ids and tokens, password hashing, package tokens, signed storage
//! URLs, and the throttle that slows down password guessing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::HubError;

type HmacSha256 = Hmac<Sha256>;

/// `bytes` random bytes from the thread-local CSPRNG (ChaCha seeded from the OS), base64url.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new 26-character ULID (48-bit time, 80 random bits from the CSPRNG).
pub fn new_id() -> String {
    ulid::Ulid::from_datetime_with_source(std::time::SystemTime::now(), &mut rand::rng())
        .to_string()
}

/// Ids in paths are ULIDs; anything else is refused before it reaches the database or disk.
pub fn is_id(s: &str) -> bool {
    s.len() == 26 && ulid::Ulid::from_string(s).is_ok()
}

/// SHA-256 of a high-entropy secret (API key, link secret), for lookup by equality.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// argon2id hash of a low-entropy secret (link password, portal access code).
pub fn hash_password(password: &str) -> Result<String, HubError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HubError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HubError::Internal(format!("hashing a password: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// What a package token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// The sender: add files, upload, finalize, make links, and read.
    #[serde(rename = "u")]
    Upload,
    /// A recipient: list files and get download URLs of a finalized package.
    #[serde(rename = "d")]
    Download,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The package.
    pub sub: String,
    pub lvl: Access,
    /// The link the token was obtained through, checked again on every use so that disabling a
    /// link cuts off its tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lid: Option<String>,
    /// Unix seconds.
    pub exp: i64,
}

/// Issues and checks HMAC-SHA256 tokens and URL signatures with the hub's key.
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    pub fn issue(&self, claims: &TokenClaims) -> String {
        let payload = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(claims).expect("token claims always serialize"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// The claims of a token this hub issued, if its signature holds and it has not expired.
    pub fn check(&self, token: &str, now: i64) -> Option<TokenClaims> {
        let (payload, sig) = token.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).ok()?;
        let claims: TokenClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now).then_some(claims)
    }

    /// Signature of a storage request: method, path, expiry and the multipart parameters, so a
    /// URL signed for one part cannot be used for another.
    pub fn sign_storage(&self, method: &str, path: &str, expires: i64, extra: &str) -> String {
        let mut mac = self.mac();
        mac.update(format!("{method}\n{path}\n{expires}\n{extra}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn verify_storage(
        &self,
        method: &str,
        path: &str,
        expires: i64,
        extra: &str,
        sig: &str,
    ) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(format!("{method}\n{path}\n{expires}\n{extra}").as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

/// Slows down repeated wrong passwords for one target (a link, a portal, a team): each failure
/// in a row doubles the delay before the answer, from 250 ms up to 8 s, forgotten after 15 quiet
/// minutes or at the first success. Keyed by target rather than by address so that guessing
/// from many addresses is slowed down too.
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const THROTTLE_FORGET: Duration = Duration::from_secs(15 * 60);
const THROTTLE_MAX_KEYS: usize = 100_000;

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl Throttle {
    /// The delay owed before answering the next attempt on `key`.
    pub fn delay(&self, key: &str) -> Duration {
        let failures = self
            .failures
            .lock()
            .expect("throttle lock is never poisoned");
        match failures.get(key) {
            Some((count, last)) if last.elapsed() < THROTTLE_FORGET => Self::delay_for(*count),
            _ => Duration::ZERO,
        }
    }

    pub fn delay_for(count: u32) -> Duration {
        if count == 0 {
            return Duration::ZERO;
        }
        let millis = 250u64.saturating_mul(1 << (count - 1).min(5));
        Duration::from_millis(millis.min(8_000))
    }

    pub fn failed(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .expect("throttle lock is never poisoned");
        if failures.len() >= THROTTLE_MAX_KEYS {
            failures.retain(|_, (_, last)| last.elapsed() < THROTTLE_FORGET);
        }
        let entry = failures
            .entry(key.to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= THROTTLE_FORGET {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .expect("throttle lock is never poisoned")
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_tampering_and_expiry() {
        let signer = Signer::new(b"k".repeat(32));
        let claims = TokenClaims {
            sub: new_id(),
            lvl: Access::Download,
            lid: None,
            exp: 1_000,
        };
        let token = signer.issue(&claims);
        assert_eq!(signer.check(&token, 999).unwrap().sub, claims.sub);
        assert!(signer.check(&token, 1_000).is_none(), "expired");
        let (payload, sig) = token.split_once('.').unwrap();
        let forged = TokenClaims {
            lvl: Access::Upload,
            ..claims
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(
            signer
                .check(&format!("{forged_payload}.{sig}"), 0)
                .is_none()
        );
        assert!(
            Signer::new(b"x".repeat(32))
                .check(&format!("{payload}.{sig}"), 0)
                .is_none()
        );
    }

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let a = hash_password("hunter2").unwrap();
        let b = hash_password("hunter2").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("hunter2", &a));
        assert!(!verify_password("hunter3", &a));
        assert!(!verify_password("hunter2", "not a hash"));
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(16);
        assert_eq!(a.len(), 22); // 128 bits
        assert_ne!(a, random_token(16));
        assert!(is_id(&new_id()));
        assert!(!is_id("../../etc/passwd"));
    }

    #[test]
    fn throttle_doubles_then_caps_and_forgets_on_success() {
        let t = Throttle::default();
        assert_eq!(t.delay("l"), Duration::ZERO);
        t.failed("l");
        assert_eq!(t.delay("l"), Duration::from_millis(250));
        t.failed("l");
        t.failed("l");
        assert_eq!(t.delay("l"), Duration::from_millis(1_000));
        assert_eq!(Throttle::delay_for(40), Duration::from_secs(8));
        assert_eq!(t.delay("other"), Duration::ZERO);
        t.succeeded("l");
        assert_eq!(t.delay("l"), Duration::ZERO);
    }
}
