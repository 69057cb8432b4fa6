#!/usr/bin/env python3
"""PyTorch peer of `distill bench step`: one stage-2 distillation training step per model.

Per step, as in the engine: the frozen teacher (timm, eval, no grad) and an image-text head of
the engine's shape (class queries attending over the teacher's tokens) give soft targets; the
student (the same timm architecture with a classifier) runs forward and backward on the soft
cross-entropy; AdamW (fused) updates it. bf16 autocast, random inputs, median step time over
--iters after --warmup steps, eager and torch.compile. Prints one JSON line per (model, mode)
with the fields `distill bench step --json` prints, so tools/bench/step_table.py can pair them.
Runs only on the GPU machine (tools/gpu_check.sh); never needed to build or test distill.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DEV = "cuda"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


# Engine preset -> timm architecture of the same shape (the choice of peers).
TIMM = {
    "clip-vit-b-32": "vit_base_patch32_224",
    "clip-vit-b-16": "vit_base_patch16_224",
    "clip-rn50": "resnet50_clip",
}


class Head(nn.Module):
    """The engine's ImageTextHead (models/head.h), class-query mode."""

    def __init__(self, query_dim, token_dim, classes, width=512, heads=8, mlp_ratio=4):
        super().__init__()
        self.query_norm = nn.LayerNorm(query_dim)
        self.q_proj = nn.Linear(query_dim, width)
        self.attn = nn.MultiheadAttention(width, heads, kdim=token_dim, vdim=token_dim,
                                          batch_first=True)
        self.attn_norm = nn.LayerNorm(width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(),
                                 nn.Linear(width * mlp_ratio, width))
        self.class_weight = nn.Parameter(torch.randn(classes, width) * 0.02)
        self.class_bias = nn.Parameter(torch.zeros(classes))

    def forward(self, tokens, queries):
        q = self.q_proj(self.query_norm(queries)).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        a, _ = self.attn(q, tokens, tokens, need_weights=False)
        h = self.attn_norm(q + a)
        h = h + self.mlp(self.mlp_norm(h))
        return (h * self.class_weight).sum(-1) + self.class_bias


def teacher_tokens(model, x):
    f = model.forward_features(x)
    if f.dim() == 4:  # ResNet: the last feature map as H*W tokens
        f = f.flatten(2).transpose(1, 2)
    return f


def bf16_rate():
    n = 8192 if DEV == "cuda" else 512
    a = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    for _ in range(2):
        a @ a
    sync()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def run(name, mode, args, rate):
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    arch = TIMM[name]
    teacher = timm.create_model(arch, pretrained=False, num_classes=0).to(DEV).eval()
    teacher.requires_grad_(False)
    student = timm.create_model(arch, pretrained=False, num_classes=args.classes).to(DEV).train()
    size = teacher.default_cfg.get("input_size", (3, 224, 224))[-1]
    x = torch.randn(args.batch, 3, size, size, device=DEV)
    with torch.no_grad():
        token_dim = teacher_tokens(teacher, x[:1]).shape[-1]
    head = Head(512, token_dim, args.classes).to(DEV).eval()
    head.requires_grad_(False)
    queries = torch.randn(args.classes, 512, device=DEV)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.05, fused=True)

    def targets():
        with torch.no_grad():
            return head(teacher_tokens(teacher, x), queries)

    def student_logits():
        return student(x)

    if mode == "compile":
        targets = torch.compile(targets)
        student_logits = torch.compile(student_logits)

    losses = []

    def step():
        with torch.autocast(DEV, dtype=torch.bfloat16):
            t = targets()
            s = student_logits()
            loss = -(F.softmax(t.float(), -1) * F.log_softmax(s.float(), -1)).sum(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())

    with torch.no_grad(), torch.autocast(DEV, dtype=torch.bfloat16):
        with FlopCounterMode(display=False) as fc:
            head(teacher_tokens(teacher, x), queries)
        teacher_flops = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            student(x)
        student_flops = fc.get_total_flops()
    step_flops = teacher_flops + 3 * student_flops

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    profile = []
    if args.profile > 0:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        activity = ProfilerActivity.CUDA if DEV == "cuda" else ProfilerActivity.CPU
        with torch_profile(activities=[activity]) as prof:
            for _ in range(args.profile):
                step()
            sync()
        events = [e for e in prof.key_averages() if e.device_time_total > 0]
        # Kernels only (the CUDA-side leaves), largest first, per step.
        events = [e for e in events if not e.cpu_children]
        events.sort(key=lambda e: e.device_time_total, reverse=True)
        profile = [{"name": e.key[:160], "calls_per_step": e.count / args.profile,
                    "ms_per_step": e.device_time_total / 1e3 / args.profile} for e in events[:40]]
    row = {
        "impl": "torch", "mode": mode, "model": name, "arch": arch, "batch": args.batch,
        "classes": args.classes, "precision": "bf16", "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
        "step_ms": sec * 1e3, "images_per_s": args.batch / sec,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else 0.0,
        "teacher_gflop_per_image": teacher_flops / args.batch / 1e9,
        "student_gflop_per_image": student_flops / args.batch / 1e9,
        "step_tflop": step_flops / 1e12, "achieved_tflops": step_flops / sec / 1e12,
        "bf16_matrix_tflops": rate / 1e12, "mfu": step_flops / sec / rate,
        "loss_first": losses[0], "loss_last": losses[-1], "iters": args.iters,
        "warmup_s": warm_s, "torch": torch.__version__,
    }
    if profile:
        row["profile"] = profile
        row["profile_gpu_busy_ms"] = sum(p["ms_per_step"] for p in profile)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default="clip-vit-b-32 clip-vit-b-16 clip-rn50")
    p.add_argument("--modes", default="eager compile")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile", type=int, default=0,
                   help="N more steps under torch.profiler: time per CUDA kernel")
    p.add_argument("--deadline", type=float, default=0,
                   help="seconds from start after which no new (model, mode) starts")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test this script")
    args = p.parse_args()
    global DEV
    DEV = args.device
    start = time.time()
    torch.backends.cudnn.benchmark = True
    rate = bf16_rate()
    for mode in args.modes.split():
        for name in args.models.replace(",", " ").split():
            if args.deadline and time.time() - start > args.deadline:
                print(f"torch_step: deadline reached, skipping {name} {mode}", file=sys.stderr)
                continue
            try:
                row = run(name, mode, args, rate)
            except Exception as e:  # report and go on: one missing timm model must not hide the rest
                print(f"torch_step: {name} {mode} failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            print(json.dumps(row), flush=True)
            if DEV == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
