#!/usr/bin/env bash
# Copies the real data tools/gpu_check.sh needs into .gpudata (a device call carries only the
# checkout, never ../shared): the tokenizers and the caption sample, which the tests read, and
# small CIFAR-10 shards (3,000 train / 1,000 test images cut from the real ones) for the short
# training run of configs/gpu-cifar10-student.json. Pass `carry: [".gpudata", ...]`.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=../shared/data
mkdir -p .gpudata/cifar10-small
cp -r "$SRC/tokenizers" "$SRC/captions-sample" .gpudata/
cp "$SRC/cifar10-jpg/classes.txt" .gpudata/cifar10-small/
python3 - "$SRC/cifar10-jpg" .gpudata/cifar10-small <<'PY'
import sys, tarfile

def first_samples(src, dst, n):
    keys = set()
    with tarfile.open(src) as t, tarfile.open(dst, "w") as out:
        for member in t:
            key = member.name.rsplit(".", 1)[0]
            if key not in keys:
                if len(keys) == n:
                    break
                keys.add(key)
            out.addfile(member, t.extractfile(member))

first_samples(f"{sys.argv[1]}/train-0000.tar", f"{sys.argv[2]}/train-0000.tar", 3000)
first_samples(f"{sys.argv[1]}/test-0000.tar", f"{sys.argv[2]}/test-0000.tar", 1000)
PY
chmod -R u+w .gpudata
du -sh .gpudata
