#!/usr/bin/env bash
# Forward speed of the preset towers: distill and PyTorch (open_clip / transformers, random init)
# on the same machine, same batch, same threads, one after the other in this script; one table.
#
#   tools/bench/models_side_by_side.sh [--device cpu|cuda] [--batch 32] [--threads N]
#                                      [--iters N] [--dtype f32|bf16] [--only a,b]
# Environment: DISTILL (binary, default build/distill), PYTHON (with torch, open_clip_torch,
# transformers; default python3). Without a usable PYTHON only distill's column is filled.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICE=cpu BATCH=32 THREADS=$(nproc) ITERS="" DTYPE=f32 ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --dtype) DTYPE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n "$ITERS" ]] || { [[ "$DEVICE" == cpu ]] && ITERS=2 || ITERS=10; }
DISTILL=${DISTILL:-build/distill}
PYTHON=${PYTHON:-python3}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
ONLY_ARG=(); [[ -n "$ONLY" ]] && ONLY_ARG=(--only "$ONLY")

OMP_NUM_THREADS=$THREADS "$DISTILL" bench models --json --device "$DEVICE" --batch "$BATCH" \
  --iters "$ITERS" --dtype "$DTYPE" "${ONLY_ARG[@]}" >"$TMP/distill.jsonl"
TORCH_DTYPE=$([[ "$DTYPE" == bf16 ]] && echo bf16 || echo fp32)
if "$PYTHON" -c "import torch, open_clip, transformers" 2>/dev/null; then
  "$PYTHON" tools/bench/torch_models.py --device "$DEVICE" --threads "$THREADS" --batch "$BATCH" \
    --iters "$ITERS" --warmup 1 --dtype "$TORCH_DTYPE" "${ONLY_ARG[@]}" 2>/dev/null \
    >"$TMP/torch.jsonl" || true
else
  echo "(no torch/open_clip/transformers in $PYTHON: PyTorch column left empty)" >&2
  : >"$TMP/torch.jsonl"
fi
python3 - "$TMP/distill.jsonl" "$TMP/torch.jsonl" <<'PY'
import json, sys
def rows(p):
    out = {}
    for line in open(p):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line); out[r["model"]] = r
    return out
ours, torch = rows(sys.argv[1]), rows(sys.argv[2])
print(f"{'model':16} {'kind':5} {'batch':>5} {'distill/s':>10} {'torch/s':>10} {'distill/torch':>13}")
for name, r in ours.items():
    t = torch.get(name)
    ts = f"{t['items_per_s']:10.2f}" if t else f"{'-':>10}"
    ratio = f"{r['items_per_s'] / t['items_per_s']:13.2f}" if t else f"{'-':>13}"
    print(f"{name:16} {r['kind']:5} {r['batch']:5d} {r['items_per_s']:10.2f} {ts} {ratio}")
dev = next(iter(ours.values()), {})
print(f"device {dev.get('device')}, {dev.get('threads')} threads, dtype {dev.get('dtype')}; items/s = images/s or texts/s (77 tokens)")
PY
