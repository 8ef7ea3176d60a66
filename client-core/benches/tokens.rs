//! Tokenizing a message for the search index: the ASCII path (hush-core's own UAX #29 word
//! segmentation for ASCII) against the general path (NFKC/case-fold/accent-strip and
//! `unicode-segmentation`) on the same text with one accented letter, which sends it down the
//! general path. A catch-up tokenizes every message it receives.
//!
//! Run: `cargo bench -p hush-core --bench tokens`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hush_core::search::for_each_token;

/// The catch-up benchmark's message text.
const ASCII: &str = "catch-up message number 04242, about as long as a typical chat line";
/// The same, with one accented letter.
const ACCENTED: &str = "catch-up méssage number 04242, about as long as a typical chat line";

fn tokens(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokens");
    for (name, text) in [("ascii_path", ASCII), ("general_path", ACCENTED)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for_each_token(black_box(text), |t| n += t.len());
                n
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = tokens }
criterion_main!(benches);
