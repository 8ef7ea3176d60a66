#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while (default 60 s each; first argument overrides).
# Needs a nightly toolchain; installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in bundle message session_state prekey_state device_list relay_frame sender_key group_change; do
  echo "== fuzz $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096
done
