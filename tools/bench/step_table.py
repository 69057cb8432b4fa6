#!/usr/bin/env python3
"""Side-by-side table of `distill bench step --json` and tools/bench/torch_step.py rows (one JSON
object per line, mixed in one file): per model, step time, images/s, peak memory and MFU of each
implementation, and the ratios torch_ms / distill_ms (> 1: distill is faster)."""
import json
import sys


def main(path):
    rows = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    print(f"{'model':14} {'impl':14} {'ms/step':>9} {'img/s':>8} {'peak GiB':>9} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'vs distill':>10} {'loss first->last':>18}")
    for m in models:
        ours = next((r for r in rows if r["model"] == m and r["impl"] == "distill"), None)
        for r in (r for r in rows if r["model"] == m):
            impl = r["impl"] if r["impl"] == "distill" else f"torch {r['mode']}"
            ratio = f"{r['step_ms'] / ours['step_ms']:.2f}" if ours else "-"
            print(f"{m:14} {impl:14} {r['step_ms']:9.1f} {r['images_per_s']:8.0f} "
                  f"{r['peak_gib']:9.2f} {r['achieved_tflops']:8.1f} {100 * r['mfu']:5.1f}% "
                  f"{ratio:>10} {r['loss_first']:8.4f}->{r['loss_last']:.4f}")
    for r in rows:
        if not r.get("profile"):
            continue
        impl = r["impl"] if r["impl"] == "distill" else f"torch {r['mode']}"
        print(f"\n-- {r['model']} {impl}: GPU busy {r.get('profile_gpu_busy_ms', 0):.1f} ms "
              f"(top 40 kernels) of a {r['step_ms']:.1f} ms step")
        for k in r["profile"][:20]:
            print(f"  {k['ms_per_step']:8.2f} ms {k['calls_per_step']:6.0f}x  {k['name'][:110]}")


if __name__ == "__main__":
    main(sys.argv[1])
