//! A string that must never be printed: provider API keys, the master key, database and Redis URLs.
//!
//! `Debug` and `Display` print `*****`; the value is only reachable through [`Secret::expose`], so every
//! place that reads it is easy to find.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Call sites are the few places that must send it (upstream auth header, DB connect).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// Compares two byte strings in time that depends only on their lengths, for key checks.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The sha256 hex of a key, the form keys are stored in and the value of the `hashed_api_key` label.
pub fn hash_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut out = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(Sha256::digest(key.as_bytes()), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?} {s}"), "***** *****");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn hash_matches_the_reference() {
        // The reference proxy labels `sk-1234` with this hash (reference section 3.2).
        assert_eq!(
            hash_key("sk-1234"),
            "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
        );
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
