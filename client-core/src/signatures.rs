//! Ed25519 checks of group messages (docs/PROTOCOL.md §16.4), one at a time or many at once,
//! with one rule for both.
//!
//! The rule is RFC 8032 §5.1.7 with the **cofactored** group equation,
//! `[8][s]B = [8]R + [8][k]A`: `s` must be below the group order, `R` must decode as RFC 8032
//! §5.1.3 says (a canonical encoding of a curve point), and `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
//! RFC 8032 allows the cofactorless shortcut instead; Hush doesn't, because a batch check can
//! only be equivalent to the cofactored one, and every member device must accept exactly the
//! same group messages whether it checks them one by one or in batches.
//!
//! Guarantees:
//! - [`verify`] and [`verify_all`] give the same answer for every input (barring a chance of
//!   2^-128 per batch that a batch containing a bad signature passes);
//! - an RFC 8032 signer's signatures always pass (they pass the cofactorless equation, which
//!   implies the cofactored one);
//! - a batch that fails is split in halves until the bad signatures are found, so a bad
//!   signature costs its batch about three times the batch's multiscalar work, never one single
//!   check per message; decoding and hashing happen once per signature.
//!
//! Batches are what make a group catch-up affordable: a delivery batch's messages mostly come
//! from a few senders, each with one key, so the `[k_i]A` terms of a sender's messages fold into
//! one `[Σ z_i k_i]A` and the multiscalar multiplication has one point per signature (its `R`)
//! rather than two. That is about 4.5× cheaper per signature than one check
//! (docs/BENCHMARKS.md, "Group catch-up").

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use rand::RngExt;
use sha2::{Digest, Sha512};

/// Most signatures in one multiscalar multiplication. Larger batches cost less per signature
/// (7.5 µs at 256, 6.5 µs at 1,024 on the benchmark machine), and a delivery batch holds at
/// most 1,024 messages.
const MAX_BATCH: usize = 1024;
/// Below this a failed batch is checked one signature at a time rather than halved again.
const MIN_SPLIT: usize = 4;

/// A point's RFC 8032 §5.1.3 encoding decoded, refusing what that section refuses and
/// curve25519-dalek's decompression lets through: a y coordinate of p or more, and x = 0 with
/// the sign bit set.
pub fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_y(bytes) {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    let sign = bytes[31] >> 7;
    // x = 0 exactly for y = ±1; its only encoding has the sign bit clear.
    let mut y = *bytes;
    y[31] &= 0x7f;
    let one = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    let minus_one = {
        let mut b = [0xffu8; 32];
        b[0] = 0xec;
        b[31] = 0x7f;
        b
    };
    if sign == 1 && (y == one || y == minus_one) {
        return None;
    }
    Some(point)
}

/// Whether the low 255 bits, little-endian, are below p = 2^255 − 19.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    // p is ed ff .. ff 7f (little-endian); y ≥ p only if every byte from the top down matches
    // p's and the lowest byte is at least 0xed.
    if bytes[31] & 0x7f != 0x7f {
        return true;
    }
    if bytes[1..31].iter().any(|b| *b != 0xff) {
        return true;
    }
    bytes[0] < 0xed
}

/// A signing key as a group message's signer hands it out: refused if it is not a canonical
/// point encoding or is of small order (a key of small order would let anyone sign under it).
pub fn signing_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    decode_point(bytes)?;
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    (!key.is_weak()).then_some(key)
}

/// `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
fn challenge(r: &[u8; 32], key: &VerifyingKey, message: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(key.as_bytes());
    h.update(message);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// What the equation needs of one signature, decoded and hashed once: `s`, `R` and `k`.
struct Parsed {
    s: Scalar,
    r: EdwardsPoint,
    k: Scalar,
}

/// A signature's parts, or `None` if `s` is not below ℓ or `R` does not decode.
fn parse(key: &VerifyingKey, message: &[u8], signature: &Signature) -> Option<Parsed> {
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))?;
    let r = decode_point(signature.r_bytes())?;
    Some(Parsed { s, r, k: challenge(signature.r_bytes(), key, message) })
}

/// `[8]([s]B − [k]A − R) = 0`.
fn holds(a: &EdwardsPoint, p: &Parsed) -> bool {
    let difference = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-a, &p.s) - p.r;
    difference.mul_by_cofactor().is_identity()
}

/// One signature, by the rule above.
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    parse(key, message, signature).is_some_and(|p| holds(&key.to_edwards(), &p))
}

/// Whether the equation holds for every one of `items` under the key `a`: one multiscalar
/// multiplication, `[−Σ z_i s_i]B + Σ [z_i]R_i + [Σ z_i k_i]A`, times the cofactor, with
/// random 128-bit `z_i` the signer can't foresee.
fn batch_holds(a: &EdwardsPoint, items: &[(usize, Parsed)]) -> bool {
    let mut rng = rand::rng();
    let mut scalars = Vec::with_capacity(items.len() + 2);
    let mut points = Vec::with_capacity(items.len() + 2);
    let (mut b, mut a_scalar) = (Scalar::ZERO, Scalar::ZERO);
    for (_, p) in items {
        let mut z = [0u8; 32];
        rng.fill(&mut z[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        b += z * p.s;
        a_scalar += z * p.k;
        scalars.push(z);
        points.push(p.r);
    }
    scalars.push(-b);
    points.push(ED25519_BASEPOINT_POINT);
    scalars.push(a_scalar);
    points.push(*a);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).mul_by_cofactor().is_identity()
}

/// Checks `items` (position, parts) under the key `a`, marking the valid ones in `valid` (by
/// position): a batch, halved while it fails. One bad signature costs about three times the
/// batch's multiscalar work; many cost at most one multiscalar pass per halving (about ten for
/// 1,024) and a single check each, under 1.5× checking them all one by one.
fn verify_under(a: &EdwardsPoint, items: &[(usize, Parsed)], valid: &mut [bool]) {
    let mark = |valid: &mut [bool], items: &[(usize, Parsed)]| {
        for (i, _) in items {
            if let Some(v) = valid.get_mut(*i) {
                *v = true;
            }
        }
    };
    if items.len() <= MIN_SPLIT {
        for item @ (_, p) in items {
            if holds(a, p) {
                mark(valid, std::slice::from_ref(item));
            }
        }
        return;
    }
    if batch_holds(a, items) {
        mark(valid, items);
        return;
    }
    let (first, second) = items.split_at(items.len() / 2);
    verify_under(a, first, valid);
    verify_under(a, second, valid);
}

/// Checks many signed messages, each `(message, signature, key)`: whether each is valid, in
/// order. The messages are grouped by key and checked in batches of up to 1,024; each signature
/// is decoded and hashed once, and one that doesn't decode is invalid without costing its
/// batch anything.
pub fn verify_all(items: &[(&[u8], Signature, VerifyingKey)]) -> Vec<bool> {
    let mut valid = vec![false; items.len()];
    // Positions by key, in order of first appearance (a batch has few senders).
    let mut by_key: Vec<(VerifyingKey, Vec<usize>)> = Vec::new();
    for (i, (_, _, key)) in items.iter().enumerate() {
        match by_key.iter_mut().find(|(k, _)| k == key) {
            Some((_, positions)) => positions.push(i),
            None => by_key.push((*key, vec![i])),
        }
    }
    for (key, positions) in by_key {
        let a = key.to_edwards();
        let parsed: Vec<(usize, Parsed)> = positions
            .iter()
            .filter_map(|i| {
                let (message, signature, _) = items.get(*i)?;
                Some((*i, parse(&key, message, signature)?))
            })
            .collect();
        for chunk in parsed.chunks(MAX_BATCH) {
            verify_under(&a, chunk, &mut valid);
        }
    }
    valid
}

/// Signatures no RFC 8032 signer makes, for the tests and the committed vectors.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::SigningKey;

    /// `R ‖ s` for an `R` encoded as `big_r` whose discrete log (ignoring any small-order
    /// part) is `r`: `s = r + k·a`.
    pub fn with_r(signer: &SigningKey, message: &[u8], big_r: [u8; 32], r: Scalar) -> Signature {
        let k = challenge(&big_r, &signer.verifying_key(), message);
        let s = r + k * signer.to_scalar();
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&big_r);
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature::from_bytes(&bytes)
    }

    /// A signature whose R carries a small-order component: the cofactored equation holds, the
    /// cofactorless one doesn't. Only a signer deviating from RFC 8032 makes these.
    pub fn torsioned(signer: &SigningKey, message: &[u8], torsion: usize) -> Signature {
        let r = Scalar::from_bytes_mod_order_wide(&[9; 64]);
        let big_r = (EdwardsPoint::mul_base(&r) + EIGHT_TORSION[torsion % 8]).compress();
        with_r(signer, message, big_r.to_bytes(), r)
    }

    /// A signature that satisfies the equation with R the identity, encoded as y = p + 1 (not
    /// canonical): RFC 8032 decoding refuses it.
    pub fn non_canonical_r(signer: &SigningKey, message: &[u8]) -> Signature {
        let mut p_plus_one = [0xffu8; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        with_r(signer, message, p_plus_one, Scalar::ZERO)
    }

    /// `s + ℓ` in place of `s`: the same point equation, refused for a non-canonical `s`.
    pub fn non_canonical_s(signature: &Signature) -> Signature {
        const ELL: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut bytes = signature.to_bytes();
        let mut carry = 0u16;
        for (b, e) in bytes[32..].iter_mut().zip(ELL) {
            let sum = u16::from(*b) + u16::from(e) + carry;
            *b = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
        Signature::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn torsioned(signer: &SigningKey, message: &[u8], torsion: usize) -> Signature {
        super::testing::torsioned(signer, message, torsion)
    }

    #[test]
    fn rfc8032_signatures_pass_and_altered_ones_fail() {
        let k = key(1);
        let message = b"a group message";
        let sig = k.sign(message);
        assert!(verify(&k.verifying_key(), message, &sig));
        assert!(!verify(&k.verifying_key(), b"another message", &sig));
        assert!(!verify(&key(2).verifying_key(), message, &sig));
        let s_plus_ell = testing::non_canonical_s(&sig);
        assert_ne!(s_plus_ell, sig);
        assert!(!verify(&k.verifying_key(), message, &s_plus_ell));
        // R = identity satisfies the equation when s = k·a; only its canonical encoding counts.
        let odd = testing::non_canonical_r(&k, message);
        assert!(!verify(&k.verifying_key(), message, &odd));
        let mut one = [0u8; 32];
        one[0] = 1;
        let canonical = testing::with_r(&k, message, one, Scalar::ZERO);
        assert!(verify(&k.verifying_key(), message, &canonical));
        let list =
            [(&message[..], odd, k.verifying_key()), (&message[..], canonical, k.verifying_key())];
        assert_eq!(verify_all(&list), [false, true]);
    }

    #[test]
    fn a_small_order_component_in_r_passes_both_ways_alike() {
        let k = key(3);
        for t in 1..8 {
            let message = format!("torsion {t}");
            let sig = torsioned(&k, message.as_bytes(), t);
            // dalek's single check is cofactorless: it refuses what the rule accepts.
            assert!(k.verifying_key().verify_strict(message.as_bytes(), &sig).is_err());
            assert!(verify(&k.verifying_key(), message.as_bytes(), &sig), "torsion {t}");
            let mut items: Vec<(Vec<u8>, Signature)> =
                (0..20).map(|i| (vec![i], k.sign(&[i]))).collect();
            items.push((message.into_bytes(), sig));
            let list: Vec<_> =
                items.iter().map(|(m, s)| (m.as_slice(), *s, k.verifying_key())).collect();
            assert!(verify_all(&list).iter().all(|v| *v));
        }
    }

    #[test]
    fn points_decode_as_rfc8032_says() {
        // y = p (non-canonical 0), y = p + 1 (non-canonical 1), and -0 for y = 1.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(decode_point(&p).is_none());
        let mut p1 = p;
        p1[0] = 0xee;
        assert!(decode_point(&p1).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(decode_point(&one).is_some());
        one[31] |= 0x80;
        assert!(decode_point(&one).is_none());
        let b = ED25519_BASEPOINT_POINT.compress().to_bytes();
        assert_eq!(decode_point(&b), Some(ED25519_BASEPOINT_POINT));
        // A small-order signing key is refused; a real one is kept.
        assert!(signing_key(&EIGHT_TORSION[1].compress().to_bytes()).is_none());
        assert!(signing_key(key(4).verifying_key().as_bytes()).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Batches give exactly the single checks' answers, whichever signatures are bad and
        /// however the senders' keys interleave.
        #[test]
        fn batches_agree_with_single_checks(
            seed in any::<u64>(),
            n in 1usize..300,
            bad in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            torsion in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        ) {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let signers = [key(5), key(6), key(7)];
            let mut items: Vec<(Vec<u8>, Signature, VerifyingKey)> = (0..n)
                .map(|i| {
                    let k = &signers[rng.random_range(0..3)];
                    let m = format!("message {i}").into_bytes();
                    let s = k.sign(&m);
                    (m, s, k.verifying_key())
                })
                .collect();
            for t in &torsion {
                let i = t.index(n);
                let k = signers.iter().find(|s| s.verifying_key() == items[i].2).unwrap();
                items[i].1 = torsioned(k, &items[i].0, 1 + i % 7);
            }
            for b in &bad {
                let i = b.index(n);
                items[i].0.push(0);
            }
            let list: Vec<_> = items.iter().map(|(m, s, k)| (m.as_slice(), *s, *k)).collect();
            let single: Vec<bool> = list.iter().map(|(m, s, k)| verify(k, m, s)).collect();
            prop_assert_eq!(verify_all(&list), single);
        }
    }
}
