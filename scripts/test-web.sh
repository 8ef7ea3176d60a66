#!/usr/bin/env bash
# The web SDK's tests, from a fresh machine (called by scripts/test.sh after the native tests,
# whose build provides target/debug/hush-relay, the test kit's target/debug/hush-test-relay and
# target/debug/hush):
#   1. the package: scripts/build-wasm.sh (wasm32 toolchain route, wasm-bindgen, npm layout,
#      the 1 MB gzipped size budget);
#   2. wasm-bindgen tests in headless Chromium through chromedriver (IndexedDB store
#      conformance and persistence, the handshake on wasm32, the JS error shape);
#   3. the end-to-end test: the demo page in two Chromium contexts and a native client,
#      chatting through the real relay (wasm/e2e, playwright-core, Node's test runner).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wasm-env.sh

missing=()
for p in chromium chromium-driver; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v node >/dev/null || { echo "Node.js (>= 18) is required for the web tests"; exit 1; }

echo "== web: package"
scripts/build-wasm.sh

echo "== web: wasm-bindgen tests (headless Chromium)"
# No doctests: rustdoc would have to come from the same toolchain route. The tests get their own
# target directory: a test build of std (with -Zbuild-std) can't share one with the release
# build of the package. The `wasm-test` profile (Cargo.toml) optimises std and the dependencies
# lightly: 3.4 minutes to build on 2 cores instead of 5.4 with the test profile's opt-level 3.
CHROMEDRIVER=$(command -v chromedriver) \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  "${WASM_CARGO[@]}" test --locked --tests --target wasm32-unknown-unknown "${WASM_BUILD_STD[@]}" \
  --profile wasm-test --target-dir target/wasm-test -p hush-wasm

echo "== web: end-to-end in Chromium"
(cd wasm/e2e && npm ci --no-audit --no-fund --loglevel=error)
(cd wasm/e2e && node --test --test-concurrency=1 --test-reporter=spec .)
echo "screenshot: target/web-e2e/demo.png"
