//! HKDF-SHA256, the one KDF every Hush derivation goes through.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// HKDF-SHA256 (RFC 5869) with a fixed output size `N`.
///
/// `N` is checked at compile time to be at most 255 × 32 bytes, the only case in which HKDF's
/// expand step can fail, so the function is infallible.
pub fn hkdf_sha256<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    const { assert!(N <= 255 * 32, "HKDF-SHA256 output is limited to 8160 bytes") };
    let mut out = Zeroizing::new([0u8; N]);
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    #[allow(clippy::expect_used, reason = "N <= 255*32 is asserted at compile time above")]
    hk.expand(info, out.as_mut()).expect("HKDF output length is within bounds");
    out
}
