#!/usr/bin/env python3
"""PyTorch timings of the kernel shapes that `distill bench kernels` measures, for the side-by-side
table in tools/gpu_check.sh. Dev/benchmark only: the engine never needs Python.

Prints one JSON object: {"device": ..., "torch": ..., "rows": [{"kernel", "shape", "dtype", "ms"}]}.
Timing: CUDA events, median of --iters runs after warm-up.
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def timed(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


ATTENTION = [  # name, B, H, Lq, Lk, D
    ("vit-b16", 256, 12, 197, 197, 64),
    ("vit-b32", 256, 12, 50, 50, 64),
    ("head-c10-b32", 256, 8, 10, 50, 64),
    ("head-c100-b16", 256, 8, 100, 197, 64),
]
CONV = [  # name, N, C, H, W, K, R, stride, pad
    ("rn50-3x3-56", 256, 64, 56, 56, 64, 3, 1, 1),
    ("rn50-3x3-28", 256, 128, 28, 28, 128, 3, 1, 1),
    ("rn50-3x3-14", 256, 256, 14, 14, 256, 3, 1, 1),
    ("rn50-1x1-56-reduce", 256, 256, 56, 56, 64, 1, 1, 0),
    ("rn50-1x1-56-expand", 256, 64, 56, 56, 256, 1, 1, 0),
    ("rn50-1x1-14", 256, 1024, 14, 14, 256, 1, 1, 0),
    ("patch16", 256, 3, 224, 224, 768, 16, 16, 0),
    ("patch32", 256, 3, 224, 224, 768, 32, 32, 0),
]
CROSS_ENTROPY = [("ce-4096x1000", 4096, 1000), ("ce-256x50000", 256, 50000), ("ce-65536x10", 65536, 10)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    args = ap.parse_args()
    dt = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    dev = "cuda"
    rows = []
    for name, b, h, lq, lk, d in ATTENTION:
        q = torch.randn(b, h, lq, d, device=dev, dtype=dt, requires_grad=True)
        k = torch.randn(b, h, lk, d, device=dev, dtype=dt, requires_grad=True)
        v = torch.randn(b, h, lk, d, device=dev, dtype=dt, requires_grad=True)
        do = torch.randn(b, h, lq, d, device=dev, dtype=dt)
        fwd = lambda: F.scaled_dot_product_attention(q, k, v)
        rows.append({"kernel": "attention_fwd", "shape": name, "dtype": args.dtype, "ms": timed(fwd, args.iters)})
        fb = lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), do)
        rows.append({"kernel": "attention_fwd_bwd", "shape": name, "dtype": args.dtype, "ms": timed(fb, args.iters)})
    for name, n, c, hh, ww, kk, r, s, p in CONV:
        x = torch.randn(n, c, hh, ww, device=dev, dtype=dt, requires_grad=True)
        w = torch.randn(kk, c, r, r, device=dev, dtype=dt, requires_grad=True)
        y = F.conv2d(x, w, stride=s, padding=p)
        dy = torch.randn_like(y)
        rows.append({"kernel": "conv_fwd", "shape": name, "dtype": args.dtype,
                     "ms": timed(lambda: F.conv2d(x, w, stride=s, padding=p), args.iters)})
        rows.append({"kernel": "conv_dgrad", "shape": name, "dtype": args.dtype,
                     "ms": timed(lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=s, padding=p), args.iters)})
        rows.append({"kernel": "conv_wgrad", "shape": name, "dtype": args.dtype,
                     "ms": timed(lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s, padding=p), args.iters)})
    for name, n, c in CROSS_ENTROPY:
        z = torch.randn(n, c, device=dev, dtype=torch.float32, requires_grad=True)
        t = torch.randint(0, c, (n,), device=dev)
        fb = lambda: torch.autograd.grad(F.cross_entropy(z, t), z)
        rows.append({"kernel": "cross_entropy_fwd_bwd", "shape": name, "dtype": "f32", "ms": timed(fb, args.iters)})
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
