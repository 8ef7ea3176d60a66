#!/usr/bin/env bash
# The SDK bindings in their own runtimes, against the real relay binary:
#   - builds the hush-ffi library and UniFFI's generator;
#   - generates Kotlin, Swift and Python into target/bindings/<language>;
#   - Python: pytest (bindings/python);
#   - Kotlin: Maven on the JVM, through JNA (bindings/kotlin);
#   - Swift: generated and checked, not compiled (no Swift toolchain on these machines).
# Installs what it needs (python3-pytest, a JDK and Maven) when missing. Called by
# scripts/test.sh after `cargo test --workspace`, which builds target/debug/hush-relay.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/bindings

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need_apt=()
python3 -c 'import pytest' 2>/dev/null || need_apt+=(python3-pytest)
command -v javac >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}"
fi

# The whole workspace, as the test step built it: the relay binary, libhush_ffi.so and the
# generator, with no feature set that would rebuild the world.
cargo build --workspace --locked
lib=$root/target/debug/libhush_ffi.so
rm -rf "$out"
for language in python kotlin swift; do
  target/debug/uniffi-bindgen generate --library "$lib" --language "$language" \
    --out-dir "$out/$language" --no-format
done

echo "== Swift: generated, not compiled here (see README)"
for f in Hush.swift hushFFI.h hushFFI.modulemap; do
  test -s "$out/swift/$f" || { echo "missing $out/swift/$f"; exit 1; }
done
grep -Eq 'public func createAccount\(setup: ClientSetup\) ?async throws +-> HushClient' "$out/swift/Hush.swift" \
  || { echo "Hush.swift lacks the expected async API"; exit 1; }

echo "== Python (pytest)"
cp "$lib" "$out/python/"
PYTHONPATH=$out/python HUSH_RELAY_BIN=$root/target/debug/hush-relay \
  python3 -m pytest -q -p no:cacheprovider bindings/python

echo "== Kotlin (Maven, JVM, JNA)"
(cd bindings/kotlin && mvn -B -q test)
cat "$root"/target/kotlin/surefire-reports/*.txt | grep 'Tests run'
