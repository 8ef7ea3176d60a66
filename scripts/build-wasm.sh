#!/usr/bin/env bash
# Builds the web SDK: hush-wasm for wasm32 (size-optimised profile `wasm-release`), then
# wasm-bindgen's ES-module glue and TypeScript declarations, then the npm package layout in
# wasm/pkg (package.json, index.js, index.d.ts from wasm/js). Prints the gzipped .wasm size.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/wasm-env.sh

# Warnings are errors here too: clippy can't run on the Debian wasm32 route, rustc's lints can.
RUSTFLAGS="${RUSTFLAGS:-} -D warnings" "${WASM_CARGO[@]}" build --locked --profile wasm-release --target wasm32-unknown-unknown \
  "${WASM_BUILD_STD[@]}" --target-dir "$WASM_TARGET_DIR" -p hush-wasm
rm -rf wasm/pkg
wasm-bindgen --target web --out-dir wasm/pkg --out-name hush \
  "$WASM_TARGET_DIR/wasm32-unknown-unknown/wasm-release/hush_wasm.wasm"
cp wasm/js/package.json wasm/js/index.js wasm/js/index.d.ts wasm/pkg/
raw=$(stat -c %s wasm/pkg/hush_bg.wasm)
gz=$(gzip -9 -c wasm/pkg/hush_bg.wasm | wc -c)
echo "wasm/pkg/hush_bg.wasm: $raw bytes, $gz bytes gzipped (budget 1048576)"
[ "$gz" -le 1048576 ] || { echo "the web package is over its 1 MB gzipped budget"; exit 1; }
