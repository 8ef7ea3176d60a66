#!/usr/bin/env bash
# The whole Hush test suite, from a fresh machine. Installs what it needs, then runs:
#   cargo fmt --check, cargo clippy -D warnings, every test (unit, integration, property tests,
#   test-vector checks, doc tests, benchmarks in Criterion's single-pass test mode), the SDK
#   bindings in their runtimes (bindings/test.sh: Python, Kotlin on the JVM, Swift generation),
#   the web SDK (scripts/test-web.sh: wasm32 build and size budget, wasm-bindgen tests and an
#   end-to-end chat in headless Chromium), and a short libFuzzer run of every fuzz target when a nightly toolchain is present.
# CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - start))"; }

# A clean build gains nothing from incremental compilation's bookkeeping.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step "toolchain"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "Rust is required: install rustup (https://rustup.rs)"; exit 1; }
# rustfmt and clippy ship with rustup's default profile; add them where they are missing.
for c in rustfmt clippy; do
  cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done
cargo --version

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The sans-I/O protocol core builds alone, without tokio, quinn or redb (scripts/check.sh also
# lints and tests it that way; here the check is enough, as the tests below run the same code).
cargo check -p hush-core --no-default-features --lib --locked
if cargo tree -p hush-core --no-default-features -e normal --locked | grep -E ' (tokio|quinn|redb) '; then
  echo "the protocol core alone depends on tokio, quinn or redb"; exit 1
fi

step "tests"
log=$(mktemp)
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"
# One closing line for the whole suite (pipefail above already stops on any failure).
passed=$(grep -o '[0-9]* passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s += $1} END {print s + 0}')
summary="tests: $passed passed, $failed failed"

step "bindings: Python (pytest), Kotlin (Maven, JVM), Swift (generated)"
bindings/test.sh 2>&1 | tee "$log.bindings"
py=$(grep -o '[0-9]* passed in' "$log.bindings" | awk '{s += $1} END {print s + 0}')
kt=$(grep -o 'Tests run: [0-9]*, Failures: 0, Errors: 0' "$log.bindings" | awk '{s += $3} END {print s + 0}')
summary="$summary; bindings: $py Python + $kt Kotlin passed, Swift generated"

step "web: wasm32 package, wasm-bindgen tests and Chromium end-to-end"
scripts/test-web.sh 2>&1 | tee "$log.web"
wb=$(grep -o 'test result: ok. [0-9]* passed' "$log.web" | awk '{s += $4} END {print s + 0}')
e2e=$(grep -o '^ℹ pass [0-9]*' "$log.web" | awk '{s += $3} END {print s + 0}')
size=$(grep -o '[0-9]* bytes gzipped' "$log.web" | awk '{print $1}')
summary="$summary; web: $wb wasm-bindgen + $e2e Chromium passed, ${size:-?} bytes gzipped"

# Coverage-guided fuzzing needs nightly (for the sanitizer flags); the property tests above
# cover every decoder on stable too. The suite runs each target briefly, so that the targets
# keep building and a shallow crash shows; long runs are scripts/fuzz.sh's job (60 s each by
# default, or any length: scripts/fuzz.sh 3600).
fuzz_seconds="${HUSH_FUZZ_SECONDS:-3}"
if [ "$fuzz_seconds" != 0 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  step "fuzz (${fuzz_seconds}s per target)"
  scripts/fuzz.sh "$fuzz_seconds"
else
  step "fuzz skipped (no nightly toolchain, or HUSH_FUZZ_SECONDS=0)"
fi

step "done"
echo "$summary"
