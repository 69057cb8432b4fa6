#!/usr/bin/env python3
"""Joins `distill bench kernels --json` with tools/bench/torch_kernels.py output by (kernel, shape)
and prints one table: ours, the in-process peer, and PyTorch on the same card."""
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as e:  # a failed run still gets a table of what exists
        print(f"(could not read {path}: {e})")
        return {"rows": []}


ours = load(sys.argv[1])
torch = load(sys.argv[2])
# Keyed by dtype too: f32 and bf16 rows of one shape are different measurements.
torch_ms = {(r["kernel"], r["shape"], r.get("dtype", "")): r["ms"] for r in torch.get("rows", [])}
# Our forward+backward rows may be named with either suffix; map both.
alias = {"attention_fwdbwd": "attention_fwd_bwd", "cross_entropy": "cross_entropy_fwd_bwd",
         "softmax_ce_fwd_bwd": "cross_entropy_fwd_bwd"}
print(f"{'kernel':24} {'shape':20} {'dtype':5} {'ours ms':>9} {'peer':>22} {'peer ms':>9} "
      f"{'peer/ours':>9} {'torch ms':>9} {'torch/ours':>10}")
for r in ours.get("rows", []):
    if "error" in r:
        print(f"{r.get('kernel', '?'):24} ERROR {r['error']}")
        continue
    k = r.get("kernel", "")
    t = torch_ms.get((alias.get(k, k), r.get("shape", ""), r.get("dtype", "")))
    speed = r.get("ours_ms", 0)
    ratio_t = f"{t / speed:10.3f}" if t and speed else f"{'-':>10}"
    print(f"{k:24} {r.get('shape', ''):20} {r.get('dtype', ''):5} {speed:9.3f} {r.get('peer', ''):>22} "
          f"{r.get('peer_ms', 0):9.3f} {r.get('ratio', 0):9.3f} {t if t else float('nan'):9.3f} {ratio_t}")
