#!/usr/bin/env bash
# The fast tier, for the inner loop: format, clippy, and every unit, property, vector and
# integration test of the workspace: the client's behaviour tests on the in-memory relay, the
# crash-safety property tests, and the end-to-end tests against the real relay binary on
# loopback (about a minute of the run). It leaves out what the full suite
# (scripts/test.sh) adds: doc tests, benchmarks in test mode, the Python and Kotlin bindings,
# the web package in Chromium and fuzzing. Target: under 5 minutes on a warm 2-core machine
# (docs/BENCHMARKS.md, "Test tiers").
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - start))"; }

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "protocol core alone (no tokio, quinn or redb)"
cargo clippy -p hush-core --no-default-features --all-targets --locked -- -D warnings
cargo test -p hush-core --no-default-features --lib --tests --locked

step "tests (unit, property, vector, end-to-end)"
cargo test --workspace --lib --tests --locked

step "done"
echo "check: passed in $((SECONDS - start)) s"
