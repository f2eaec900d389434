//! API keys: `nxs_<id>_<secret>`, random, shown once; the store keeps the id (for lookup and
//! listing) and the SHA-256 of the whole key. The secret has 256 bits of entropy, so a fast hash
//! is enough (no password-style stretching needed), and it is compared in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiKeyRecord;

const PREFIX: &str = "nxs_";
const ID_LEN: usize = 12;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_BYTES: usize = 32;
/// 32 bytes in base64url without padding.
const SECRET_LEN: usize = 43;

/// A new key for `subject` of `tenant` with `roles`: the plaintext key (`nxs_<id>_<secret>`, to
/// show once and never store) and the record to store. The record's `created_at` has millisecond
/// precision, as stored.
pub fn generate(tenant: &str, subject: &str, roles: &[String]) -> (String, ApiKeyRecord) {
    // The thread-local generator is a CSPRNG seeded (and periodically reseeded) from the OS.
    let mut rng = rand::rng();
    let id: String = (0..ID_LEN).map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())])).collect();
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let key = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let created_at = UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(u64::MAX));
    let record = ApiKeyRecord {
        id,
        secret_hash: hash(&key),
        tenant: tenant.to_string(),
        subject: subject.to_string(),
        roles: roles.to_vec(),
        created_at,
        revoked_at: None,
    };
    (key, record)
}

/// The id of a key (to look its record up), or `None` unless `key` has exactly the shape
/// `nxs_<12 lowercase alphanumerics>_<43 base64url characters encoding 32 bytes>`.
pub fn id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    // Decoding also rejects non-canonical trailing bits: one secret has one spelling.
    let secret_ok =
        secret.len() == SECRET_LEN && URL_SAFE_NO_PAD.decode(secret).is_ok_and(|bytes| bytes.len() == SECRET_BYTES);
    (id_ok && secret_ok).then_some(id)
}

/// Whether `key` is the key of `record` and the record is not revoked. The hashes are compared in
/// constant time.
pub fn verify(record: &ApiKeyRecord, key: &str) -> bool {
    if record.revoked_at.is_some() || id_of(key) != Some(record.id.as_str()) {
        return false;
    }
    hash(key).as_bytes().ct_eq(record.secret_hash.as_bytes()).into()
}

/// SHA-256 of the whole key, lowercase hex.
fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn new_key() -> (String, ApiKeyRecord) {
        generate("acme", "alice", &["admin".to_string(), "reader".to_string()])
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_verify() {
        let (key, record) = new_key();
        assert_eq!(key.len(), PREFIX.len() + ID_LEN + 1 + SECRET_LEN, "{}", key.len());
        assert!(key.starts_with("nxs_"));
        assert_eq!(id_of(&key), Some(record.id.as_str()));
        assert_eq!(record.id.len(), ID_LEN);
        assert_eq!(record.secret_hash.len(), 64);
        assert!(record.secret_hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(!record.secret_hash.contains(&key[PREFIX.len() + ID_LEN + 1..]));
        assert_eq!((record.tenant.as_str(), record.subject.as_str()), ("acme", "alice"));
        assert_eq!(record.roles, ["admin", "reader"]);
        assert!(record.revoked_at.is_none());
        assert!(verify(&record, &key));
    }

    #[test]
    fn keys_are_unique() {
        let (a, ra) = new_key();
        let (b, rb) = new_key();
        assert_ne!(a, b);
        assert_ne!(ra.id, rb.id);
        assert_ne!(ra.secret_hash, rb.secret_hash);
    }

    #[test]
    fn a_wrong_secret_with_the_right_id_fails() {
        let (key, record) = new_key();
        let (other, _) = new_key();
        let forged = format!("{}{}", &key[..PREFIX.len() + ID_LEN + 1], &other[PREFIX.len() + ID_LEN + 1..]);
        assert_eq!(id_of(&forged), Some(record.id.as_str()));
        assert!(!verify(&record, &forged));
        // Another key entirely, and another record's key.
        assert!(!verify(&record, &other));
    }

    #[test]
    fn a_revoked_key_fails() {
        let (key, mut record) = new_key();
        record.revoked_at = Some(SystemTime::now());
        assert!(!verify(&record, &key));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        let (key, record) = new_key();
        let secret = &key[PREFIX.len() + ID_LEN + 1..];
        let id = record.id.as_str();
        let malformed = [
            String::new(),
            "nxs_".to_string(),
            format!("nxs_{id}"),
            format!("nxs_{id}_"),
            format!("nxt_{id}_{secret}"),
            format!("NXS_{id}_{secret}"),
            format!("nxs_{}_{secret}", id.to_uppercase()),
            format!("nxs_{}_{secret}", &id[1..]),
            format!("nxs_{id}x_{secret}"),
            format!("nxs_{id}-{secret}"),
            format!("nxs_{id}_{}", &secret[1..]),
            format!("nxs_{id}_{secret}A"),
            format!("nxs_{id}_{}=", &secret[..42]),
            format!("nxs_{id}_{}+", &secret[..42]),
            format!(" {key}"),
            format!("{key}\n"),
            format!("nxs_{}é_{secret}", &id[..10]),
        ];
        for bad in &malformed {
            assert_eq!(id_of(bad), None, "{bad:?}");
            assert!(!verify(&record, bad), "{bad:?}");
        }
        // Non-canonical trailing bits: the last character of 32 bytes ends with 2 zero bits.
        let last = secret.as_bytes()[42];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        let noncanonical = char::from(alphabet[index | 1]);
        if noncanonical != char::from(last) {
            let bad = format!("nxs_{id}_{}{noncanonical}", &secret[..42]);
            assert_eq!(id_of(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_whole_key() {
        // FIPS 180-2 test vector.
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5d ae2223b00361a396177a9cb410ff61f20015ad".replace(' ', ""));
    }
}
