//! API token text and hashing, shared by `svoi token create` (which makes tokens) and the auth
//! middleware (which checks them).
//!
//! A token reads `svoi_<id>_<secret>`: `id` is 12 lowercase hex characters (random, public,
//! the database key), `secret` is 32 random bytes as 64 lowercase hex characters. Only the
//! SHA-256 of the secret bytes is stored, so a copy of the database grants no access; the
//! prefix makes leaked tokens easy to spot in logs and secret scanners.

use rand::RngCore;
use sha2::{Digest, Sha256};
use svoi_store::{NewToken, TokenScope};

/// What every token starts with.
const PREFIX: &str = "svoi_";
/// Random bytes in the public id (12 hex characters).
const ID_BYTES: usize = 6;
/// Random bytes in the secret (64 hex characters).
const SECRET_BYTES: usize = 32;

/// A new random token: returns (the text shown once to the user, the row to store).
/// Text format: "svoi_<id>_<secret>", id = 12 lowercase hex chars (random), secret = 32 random
/// bytes as 64 hex chars. The randomness comes from the thread-local CSPRNG (ChaCha seeded
/// from the operating system).
pub fn generate(name: &str, scope: TokenScope) -> (String, NewToken) {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let text = format!("{PREFIX}{id}_{}", hex::encode(secret));
    let row = NewToken {
        id,
        name: name.to_owned(),
        scope,
        secret_sha256: hash(&secret),
    };
    (text, row)
}

/// Splits a presented token into (id, secret-bytes) or None if malformed: wrong prefix, an id
/// that is not 12 lowercase hex characters, or a secret that is not 64.
pub fn parse(text: &str) -> Option<(&str, Vec<u8>)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !lower_hex(id, ID_BYTES * 2) || !lower_hex(secret, SECRET_BYTES * 2) {
        return None;
    }
    let secret = hex::decode(secret).ok()?;
    Some((id, secret))
}

/// SHA-256 of the secret bytes: what the database stores and the middleware compares.
pub fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_to_their_row() {
        let (text, row) = generate("grafana", TokenScope::Read);
        assert_eq!(text.len(), "svoi_".len() + 12 + 1 + 64);
        assert!(text.starts_with("svoi_"));
        assert_eq!(row.name, "grafana");
        assert_eq!(row.scope, TokenScope::Read);
        let (id, secret) = parse(&text).unwrap();
        assert_eq!(id, row.id);
        assert_eq!(secret.len(), 32);
        assert_eq!(hash(&secret), row.secret_sha256);
        assert!(!text.contains(&hex::encode(row.secret_sha256)));

        let (other, other_row) = generate("grafana", TokenScope::Admin);
        assert_ne!(other, text);
        assert_ne!(other_row.id, row.id);
        assert_eq!(other_row.scope, TokenScope::Admin);
    }

    #[test]
    fn parse_rejects_malformed_text() {
        let secret = "ab".repeat(32);
        let good = format!("svoi_0123456789ab_{secret}");
        assert_eq!(
            parse(&good),
            Some(("0123456789ab", vec![0xab; 32])),
            "{good}"
        );
        for bad in [
            String::new(),
            "svoi_".to_owned(),
            format!("SVOI_0123456789ab_{secret}"),
            format!("svoi0123456789ab_{secret}"),
            format!("svoi_0123456789AB_{secret}"),
            format!("svoi_0123456789a_{secret}"),
            format!("svoi_0123456789abc_{secret}"),
            format!("svoi_0123456789ab{secret}"),
            format!("svoi_0123456789ab_{}", &secret[1..]),
            format!("svoi_0123456789ab_{secret}0"),
            format!("svoi_0123456789ab_{}", secret.to_uppercase()),
            format!("svoi_0123456789ab_{}g", &secret[1..]),
            format!("svoi_0123456789ab_{secret}_"),
            format!(" svoi_0123456789ab_{secret}"),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
