"""Reads Criterion's estimates and prints hush's time against vodozemac and the floor."""
import json
import pathlib
import sys

import re
import subprocess

if len(sys.argv) > 2 and sys.argv[1] == "--callgrind":
    # Inclusive instruction counts of the named workload functions (benches/ratchet.rs).
    out = pathlib.Path(sys.argv[2])
    print()
    print("| workload (instructions, callgrind) | hush | vodozemac | floor | hush / vodozemac | hush / floor |")
    print("|---|---|---|---|---|---|")
    for group, stem in (("chain_100B", "chain"), ("ping_pong_100B", "ping_pong")):
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out / f"{group}.cg")],
                              capture_output=True, text=True, check=True).stdout
        counts = {}
        for who in ("hush", "olm", "floor"):
            m = re.search(r"^\s*([\d,]+) .*ratchet::%s_%s \[" % (who, stem), text, re.M)
            counts[who] = int(m.group(1).replace(",", "")) if m else None
        # Calls per workload are equal (interleaved), so totals compare directly.
        h, v, f = counts["hush"], counts["olm"], counts["floor"]
        print(f"| {group} | {h:,} | {v:,} | {f:,} | {h / v:.2f}× | {h / f:.2f}× |")
    sys.exit(0)

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def mean_ns(group, name):
    p = root / group / name / "new" / "estimates.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())["mean"]["point_estimate"]


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns is not None else "—"


rows = [
    ("handshake_initiator", "hush", "vodozemac", None),
    ("handshake_initiator", "hush_with_bundle_verify", "vodozemac", None),
    ("handshake_responder", "hush", "vodozemac", None),
    ("chain_100B", "hush", "vodozemac", "floor"),
    ("ping_pong_100B", "hush", "vodozemac", "floor"),
    ("session_serialize_restore", "hush", "vodozemac", None),
]
print("| benchmark | hush | vodozemac | hush / vodozemac | floor | hush / floor |")
print("|---|---|---|---|---|---|")
for group, ours, peer, floor in rows:
    h, v = mean_ns(group, ours), mean_ns(group, peer)
    f = mean_ns(group, floor) if floor else None
    rv = f"{h / v:.2f}×" if h and v else "—"
    rf = f"{h / f:.2f}×" if h and f else "—"
    label = group if ours == "hush" else f"{group} ({ours})"
    print(f"| {label} | {fmt(h)} | {fmt(v)} | {rv} | {fmt(f) if floor else '—'} | {rf} |")
