#!/usr/bin/env bash
# The SDK bindings in their own runtimes, against the real relay binary:
#   - generates Kotlin, Swift and Python into target/bindings/<language> (a cargo test);
#   - Python: pytest (bindings/python);
#   - Kotlin: Maven on the JVM, through JNA (bindings/kotlin);
#   - Swift: generated and checked, not compiled (no Swift toolchain on these machines).
# Installs what it needs (python3-pytest, a JDK and Maven) when missing, and builds the relay
# and the library itself: run alone it works from a clean clone; after scripts/test.sh's
# `cargo test --workspace` (same features) the build step finds nothing to do.
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

# The test profile's build of the workspace: target/debug/hush-relay and the test kit's launcher
# target/debug/hush-test-relay for the Python and Kotlin
# tests, libhush_ffi for the generator and the foreign runtimes.
cargo test --workspace --locked --no-run -q
# The cdylib the bindings are generated from and loaded as: `cargo test` alone rebuilds the
# rlib the tests link, not this, so a stale library would be tested after a change.
cargo build -p hush-ffi --locked -q

# Generation is a cargo test (bindings/tests/generate.rs): it runs UniFFI's generator on the
# built library and checks the Kotlin, Swift and Python it writes to target/bindings. Selecting
# the whole workspace keeps the features of the test step, so nothing is rebuilt.
cargo test --workspace --locked --test generate
for f in kotlin/dev/hush/hush_ffi.kt swift/Hush.swift swift/hushFFI.h python/hush_ffi.py; do
  test -s "$out/$f" || { echo "missing $out/$f"; exit 1; }
done
echo "== Swift: generated and checked (bindings/tests/generate.rs), not compiled here (see README)"

echo "== Python (pytest)"
PYTHONPATH=$out/python HUSH_TEST_RELAY=$root/target/debug/hush-test-relay \
  python3 -m pytest -q -p no:cacheprovider bindings/python

echo "== Kotlin (Maven, JVM, JNA)"
(cd bindings/kotlin && mvn -B -q test)
cat "$root"/target/kotlin/surefire-reports/*.txt | grep 'Tests run'
