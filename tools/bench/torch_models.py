#!/usr/bin/env python3
"""Forward-pass speed of the reference PyTorch models that `distill` reimplements, for side-by-side
comparison with the engine. Dev/benchmark only: the engine never needs Python.

Models (random init, no weights downloaded; eval mode; under torch.no_grad()):
  clip-vit-b-32   image  open_clip ViT-B-32 image tower (QuickGELU, as OpenAI's weights), B x 3x224x224
  clip-vit-b-16   image  open_clip ViT-B-16 image tower, B x 3x224x224
  clip-rn50       image  open_clip RN50 image tower (ModifiedResNet + attention pool), B x 3x224x224
  clip-text-b     text   ViT-B-32's text tower (encode_text: 12 layers, width 512), B x 77 tokens
  clip-text-rn50  text   RN50's text tower (same transformer, 512 -> 1024 projection), B x 77 tokens
  roberta-base    text   transformers RobertaModel (roberta-base config, with pooler), B x 77 tokens

Prints one JSON line per model:
  {"model", "kind", "batch", "items_per_s", "ms_per_batch", "device", "threads", "dtype", "iters", ...}
ms_per_batch is the median over --iters timed batches after --warmup untimed ones (CUDA: the device
is synchronised around each batch). --dtype bf16 runs under torch.autocast(bfloat16) (bf16 GEMM
operands, fp32 weights, norms and softmax as autocast decides), the closest PyTorch analogue of the
engine's bf16 mode.

Versions used when written: torch 2.15.0, transformers 5.24.0, open_clip_torch 3.3.0.

Usage: python3 tools/bench/torch_models.py --device cuda --dtype bf16
       python3 tools/bench/torch_models.py --device cpu --threads 2 --iters 2 --warmup 1 --batch 4 --only clip-vit-b-32
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

MODELS = {  # name: (kind, builder)
    "clip-vit-b-32": "image",
    "clip-vit-b-16": "image",
    "clip-rn50": "image",
    "clip-text-b": "text",
    "clip-text-rn50": "text",
    "roberta-base": "text",
}


class _ImageTower(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.visual = clip.visual

    def forward(self, x):
        return self.visual(x)


class _TextTower(torch.nn.Module):
    """open_clip CLIP.encode_text without the image tower."""

    def __init__(self, clip):
        super().__init__()
        clip.visual = None
        self.clip = clip

    def forward(self, ids):
        return self.clip.encode_text(ids)


class _Roberta(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        o = self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return o.pooler_output


def build(name):
    if name.startswith("clip-"):
        import open_clip
        arch = {"clip-vit-b-32": "ViT-B-32", "clip-vit-b-16": "ViT-B-16", "clip-rn50": "RN50",
                "clip-text-b": "ViT-B-32", "clip-text-rn50": "RN50"}[name]
        clip = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True)
        return _ImageTower(clip) if MODELS[name] == "image" else _TextTower(clip)
    if name == "roberta-base":
        from transformers import RobertaConfig, RobertaModel
        cfg = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
        return _Roberta(RobertaModel(cfg, add_pooling_layer=True))
    raise ValueError(name)


def make_input(name, batch, seq, device, gen):
    if MODELS[name] == "image":
        return torch.randn(batch, 3, 224, 224, generator=gen).to(device)
    if name == "roberta-base":
        ids = torch.randint(3, 50265, (batch, seq), generator=gen)
        ids[:, 0], ids[:, -1] = 0, 2                          # <s> ... </s>
    else:
        ids = torch.randint(1, 49406, (batch, seq), generator=gen)
        ids[:, 0], ids[:, -1] = 49406, 49407                  # SOT ... EOT (EOT = argmax)
    return ids.to(device)


def time_model(model, x, args, device):
    cast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            if args.dtype == "bf16" else contextlib.nullcontext())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad(), cast:
        for i in range(args.warmup + args.iters):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= args.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(MODELS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=77, help="text tokens per item (CLIP max 77)")
    args = ap.parse_args()
    if args.iters < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--iters >= 1, --warmup >= 0, --batch >= 1")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {','.join(MODELS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False     # fp32 means fp32 (the engine's reference)
        torch.backends.cudnn.allow_tf32 = False
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for name in names:
        torch.manual_seed(0)
        model = build(name).eval().to(device)
        x = make_input(name, args.batch, args.seq, device, torch.Generator().manual_seed(1))
        ms = time_model(model, x, args, device)
        row = {"model": name, "kind": MODELS[name], "batch": args.batch,
               "items_per_s": round(args.batch / (ms / 1e3), 3), "ms_per_batch": round(ms, 3),
               "device": dev_name, "threads": torch.get_num_threads(), "dtype": args.dtype,
               "iters": args.iters, "warmup": args.warmup, "torch": torch.__version__}
        if MODELS[name] == "text":
            row["seq"] = args.seq
        print(json.dumps(row), flush=True)
        del model, x
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
