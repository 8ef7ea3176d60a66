//! Attachment encryption (docs/PROTOCOL.md §18) against ChaCha20-Poly1305 over the same bytes in
//! one buffer, in one run: target within 1.2× for encryption and for decryption.
//!
//! - `seal`: `attachment::Encryptor` (told the length, as the SDK does) over 16 MiB fed in
//!   64 KiB reads (segments, nonces, the
//!   key commitment, and the SHA-256 of the blob the pointer carries), against one
//!   `encrypt_inout_detached` over the 16 MiB buffer.
//! - `open`: `attachment::Decryptor` over the blob in 1 MiB pieces (as downloads arrive),
//!   including the digest check, against one `decrypt_inout_detached`.
//!
//! - `seal/sha256_only`: the SHA-256 of the blob alone, which both directions include.
//!
//! Run: `cargo bench -p hush-core --bench attachment`.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hush_core::attachment::{AttachmentKey, Decryptor, Encryptor};

const LEN: usize = 16 * 1024 * 1024;

fn bench(c: &mut Criterion) {
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let key = AttachmentKey::from_bytes([7; 32]);
    let aead = ChaCha20Poly1305::new(&[7u8; 32].into());
    let nonce = Nonce::from([0u8; 12]);

    let mut blob = Vec::new();
    let mut e = Encryptor::new(&key, &mut blob);
    e.update(&plain, &mut blob);
    let sealed = e.finish(&mut blob);

    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(LEN as u64)).sample_size(20);
    g.bench_function("segments", |b| {
        let mut out = Vec::with_capacity(blob.len());
        b.iter(|| {
            out.clear();
            let mut e = Encryptor::with_len(&key, LEN as u64, &mut out);
            for piece in plain.chunks(64 * 1024) {
                e.update(piece, &mut out);
            }
            black_box(e.finish(&mut out));
        });
    });
    g.bench_function("one_buffer", |b| {
        let mut buf = plain.clone();
        b.iter(|| black_box(aead.encrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into())));
    });
    // What the pointer's digest costs on its own: the rest of the gap.
    g.bench_function("sha256_only", |b| {
        b.iter(|| black_box(<sha2::Sha256 as sha2::Digest>::digest(&blob)));
    });
    g.finish();

    let mut one = plain.clone();
    let tag = aead.encrypt_inout_detached(&nonce, &[], one.as_mut_slice().into()).unwrap();
    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Bytes(LEN as u64)).sample_size(20);
    g.bench_function("segments", |b| {
        let mut out = Vec::with_capacity(1 << 21);
        b.iter(|| {
            let mut d = Decryptor::new(&key, sealed.blob_len);
            for piece in blob.chunks(1 << 20) {
                out.clear();
                d.update(piece, &mut out).unwrap();
            }
            black_box(d.finish(&sealed.digest).unwrap());
        });
    });
    g.bench_function("one_buffer", |b| {
        let mut buf = one.clone();
        b.iter(|| {
            buf.copy_from_slice(&one);
            black_box(aead.decrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into(), &tag))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
