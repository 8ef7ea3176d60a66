#!/usr/bin/env bash
# Protocol-core benchmarks: hush beside vodozemac and the primitive floor, in one run.
#   scripts/bench.sh                  Criterion wall-clock run (~3 minutes after the build), then
#                                     the ratio table of docs/BENCHMARKS.md.
#   scripts/bench.sh --instructions   Also count instructions per workload with callgrind
#                                     (deterministic: immune to this machine's noise).
set -euo pipefail
cd "$(dirname "$0")/.."
instructions=0
[ "${1:-}" = "--instructions" ] && instructions=1
cargo bench -p hush-core --bench ratchet
python3 scripts/bench_table.py target/criterion
if [ "$instructions" = 1 ]; then
  command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
  bin=$(ls -t target/release/deps/ratchet-* | grep -v '\.d$' | head -n1)
  out=$(mktemp -d)
  for group in chain_100B ping_pong_100B; do
    # --profile-time runs the interleaved workloads (all three) without Criterion's analysis.
    valgrind --tool=callgrind --callgrind-out-file="$out/$group.cg" \
      "$bin" --bench "$group/floor" --profile-time 2 >/dev/null 2>&1
  done
  python3 scripts/bench_table.py --callgrind "$out"
fi
