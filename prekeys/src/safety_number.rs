//! Safety numbers: a human-comparable fingerprint of two identities.
//!
//! The construction follows Signal's numeric fingerprint: each side's identity key and stable
//! identifier (for Hush, the account id) are hashed with 5,200 iterations of SHA-512
//! (`h0 = label ‖ key ‖ id`, `h(i+1) = SHA-512(h(i) ‖ key)`); the first
//! 30 bytes become six 5-digit groups; the two 30-digit halves are concatenated in sorted order,
//! so both parties see the same 60 digits. The iteration count makes a second-preimage search on
//! a 100-bit display string expensive.
//!
//! Guarantee: `SafetyNumber::new(a, b) == SafetyNumber::new(b, a)` for any two parties, and any
//! change to either key or identifier changes the number (with overwhelming probability).

use sha2::{Digest, Sha512};

/// Domain-separation prefix hashed before the key (replaces Signal's 2-byte version).
pub const SAFETY_NUMBER_LABEL: &[u8] = b"Hush_SafetyNumber_v1";
/// SHA-512 iterations per side.
pub const SAFETY_NUMBER_ITERATIONS: u32 = 5200;

/// One party to a safety number: a stable identifier and the identity key bytes it vouches for.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    /// A stable identifier for the party (the account id).
    pub stable_id: &'a [u8],
    /// The identity key encoding (for a device identity, `IdentityKey::to_bytes`).
    pub identity_key: &'a [u8],
}

/// A 60-digit safety number, the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber {
    digits: String,
}

impl SafetyNumber {
    /// Computes the safety number between `local` and `remote`. Symmetric in its arguments.
    pub fn new(local: Party<'_>, remote: Party<'_>) -> Self {
        let a = half(local);
        let b = half(remote);
        let digits = if a <= b { a + &b } else { b + &a };
        Self { digits }
    }

    /// The 60 digits without separators.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The digits in twelve groups of five, separated by spaces, as apps show them.
    pub fn grouped(&self) -> String {
        let chars: Vec<char> = self.digits.chars().collect();
        chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
    }
}

impl std::fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.grouped())
    }
}

/// The 30-digit half for one party.
fn half(party: Party<'_>) -> String {
    // As Signal: h0 = label ‖ key ‖ id (not hashed); h(i+1) = SHA-512(h(i) ‖ key), 5,200 times.
    let mut hash = Sha512::new()
        .chain_update(SAFETY_NUMBER_LABEL)
        .chain_update(party.identity_key)
        .chain_update(party.stable_id)
        .chain_update(party.identity_key)
        .finalize();
    for _ in 1..SAFETY_NUMBER_ITERATIONS {
        hash = Sha512::new().chain_update(hash).chain_update(party.identity_key).finalize();
    }
    hash.chunks_exact(5)
        .take(6)
        .map(|chunk| {
            let v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_sensitive() {
        let a = Party { stable_id: b"alice", identity_key: &[1; 64] };
        let b = Party { stable_id: b"bob", identity_key: &[2; 64] };
        let ab = SafetyNumber::new(a, b);
        assert_eq!(ab, SafetyNumber::new(b, a));
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(ab.grouped().split(' ').count(), 12);
        let b2 = Party { stable_id: b"bob", identity_key: &[3; 64] };
        assert_ne!(ab, SafetyNumber::new(a, b2));
        let b3 = Party { stable_id: b"bob2", identity_key: &[2; 64] };
        assert_ne!(ab, SafetyNumber::new(a, b3));
    }
}
