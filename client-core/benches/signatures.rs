//! Checking group-message signatures (docs/PROTOCOL.md §16.4), per signature: one at a time by
//! Hush's rule, against ed25519-dalek's own single check (the floor: RFC 8032's cofactorless
//! equation), and in batches under one sender key, as a catch-up checks them, against
//! ed25519-dalek's batch verification of the same signatures (which multiplies each message's
//! key separately), and with one bad signature in the batch (found by halving). Each iteration
//! checks `n` signatures; Criterion reports the time per iteration, so divide by `n` for the
//! time per signature.
//!
//! Run: `cargo bench -p hush-core --bench signatures`.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hush_core::signatures;

/// A typical group text's signed bytes: header, ciphertext and tag.
fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{i:0>160}").into_bytes()).collect()
}

fn signatures_bench(c: &mut Criterion) {
    let signer = SigningKey::from_bytes(&[0x22; 32]);
    let key = signer.verifying_key();
    let mut g = c.benchmark_group("signatures");
    for n in [1usize, 64, 1024] {
        let messages = messages(n);
        let signed: Vec<Signature> = messages.iter().map(|m| signer.sign(m)).collect();
        let items: Vec<(&[u8], Signature, VerifyingKey)> =
            messages.iter().zip(&signed).map(|(m, s)| (m.as_slice(), *s, key)).collect();
        g.throughput(Throughput::Elements(n as u64));
        if n == 1 {
            let (m, s, k) = items[0];
            g.bench_function("one/hush", |b| b.iter(|| signatures::verify(&k, black_box(m), &s)));
            g.bench_function("one/dalek", |b| b.iter(|| k.verify(black_box(m), &s).is_ok()));
            continue;
        }
        g.bench_function(format!("batch_{n}/hush"), |b| {
            b.iter(|| signatures::verify_all(black_box(&items)))
        });
        // One signature in the batch does not verify: the batch is halved until it is found.
        let mut one_bad = items.clone();
        one_bad[n / 3].1 = signed[n / 3 + 1];
        g.bench_function(format!("batch_{n}/hush_one_bad"), |b| {
            b.iter(|| signatures::verify_all(black_box(&one_bad)))
        });
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let keys = vec![key; n];
        g.bench_function(format!("batch_{n}/dalek"), |b| {
            b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &signed, &keys).unwrap())
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = signatures_bench }
criterion_main!(benches);
