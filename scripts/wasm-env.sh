# Sourced by the web scripts: picks the route to the wasm32-unknown-unknown target and sets
#   WASM_CARGO   the cargo command line to build for it (an array),
#   WASM_TARGET_DIR  where its artifacts go (target/wasm, apart from the native build).
# Route 1: rustup with the wasm32 target installed (an ordinary developer machine).
# Route 2: Debian's rustc-web + rust-web-src + lld-22, building std from source with
#          -Zbuild-std (machines where rustup can't download the target; see the README).
WASM_TARGET_DIR=target/wasm
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
  WASM_CARGO=(cargo)
  WASM_BUILD_STD=()
else
  missing=()
  for p in rustc-web cargo-web rust-web-src lld-22; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (the wasm32 route through Debian's rustc-web)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  WASM_CARGO=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo)
  WASM_BUILD_STD=(-Zbuild-std=std,panic_abort)
fi

# The wasm-bindgen CLI must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
