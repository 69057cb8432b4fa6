#!/usr/bin/env bash
# Data-parallel step-time scaling on the CPU: one training stage (stage 0, a small ViT on real
# CIFAR-10 shards) at the same global batch, as 1 rank x T threads and as N ranks x T/N threads
# (mpirun -np N). On a machine with T cores both use every core, so the ratio shows what the
# all-reduce and the smaller per-rank GEMMs cost. Time per step = (time of a 3-epoch run - time
# of a 1-epoch run) / (extra steps), which removes start-up, data opening and the evaluation.
#
# usage: tools/bench/dp_scaling.sh [ranks (default 2)] [threads in total (default nproc)]
# env:   DISTILL (binary, default build-cpu/distill), DATA (CIFAR-10 shard folder),
#        GLOBAL_BATCH (default 64), WIDTH (default 128), LAYERS (default 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
RANKS="${1:-2}"
THREADS="${2:-$(nproc)}"
BIN="${DISTILL:-build-cpu/distill}"
DATA="${DATA:-$PWD/../shared/data/cifar10-jpg}"
GLOBAL="${GLOBAL_BATCH:-64}"
WIDTH="${WIDTH:-128}"
LAYERS="${LAYERS:-4}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
MPI_ROOT=()
[[ $(id -u) == 0 ]] && MPI_ROOT=(--allow-run-as-root)

config() {  # name per_rank_batch epochs
  cat >"$TMP/$1.json" <<JSON
{"name": "$1", "seed": 0, "stages": ["teacher"], "log_every": 1000,
 "data": {"train": "$DATA/train-{0000..0004}.tar", "test": "$DATA/test-0000.tar",
          "class_names": "cifar10", "train_per_class": 64, "test_per_class": 1,
          "workers": 1, "batch_size": $2, "eval_batch_size": 100},
 "teacher": {"arch": {"type": "vit", "image_size": 32, "patch_size": 4, "width": $WIDTH,
             "layers": $LAYERS, "heads": 4, "mlp_dim": $((WIDTH * 2)), "output_dim": 64,
             "act": "gelu"}},
 "text": {"tokenizer": "tests/fixtures/tokenizers/bert-uncased-vocab.txt"},
 "stage0": {"epochs": $3, "schedule": {"kind": "cosine", "base_lr": 0.001}}}
JSON
}

seconds() {  # ranks threads_per_rank per_rank_batch epochs
  local name="r$1t$2b$3e$4"
  config "$name" "$3" "$4"
  mpirun -np "$1" --oversubscribe --bind-to none -x OMP_NUM_THREADS="$2" \
    -x OMP_WAIT_POLICY=passive "${MPI_ROOT[@]}" "$BIN" run --quiet --config "$TMP/$name.json" \
    --runs-dir "$TMP/runs" >/dev/null
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['stages']['teacher']['seconds'])" \
    "$TMP/runs/$name/summary.json"
}

steps_per_epoch=$((640 / GLOBAL))
printf 'ViT width %s, %s layers, global batch %s, %s steps per epoch, %s cores\n' \
  "$WIDTH" "$LAYERS" "$GLOBAL" "$steps_per_epoch" "$(nproc)"
printf '%-30s %12s\n' "layout" "ms / step"
step_ms() {  # ranks threads_per_rank per_rank_batch label
  local t1 t3
  t1=$(seconds "$1" "$2" "$3" 1)
  t3=$(seconds "$1" "$2" "$3" 3)
  python3 -c "print('%-30s %12.1f' % ('$4', ($t3 - $t1) / (2 * $steps_per_epoch) * 1000))"
}
step_ms 1 "$THREADS" "$GLOBAL" "1 rank x $THREADS thr, batch $GLOBAL"
step_ms "$RANKS" $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) $((GLOBAL / RANKS)) \
  "$RANKS ranks x $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) thr, batch $((GLOBAL / RANKS)) each"
# The compute part of one rank's step alone (no all-reduce): what the ranks would take with
# perfect scaling.
[[ "${COMPUTE_ONLY:-1}" == 1 ]] &&
  step_ms 1 $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) $((GLOBAL / RANKS)) \
    "1 rank x $((THREADS / RANKS > 0 ? THREADS / RANKS : 1)) thr, batch $((GLOBAL / RANKS)) (compute)"
