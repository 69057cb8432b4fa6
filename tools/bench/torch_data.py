#!/usr/bin/env python3
"""The peer of `distill bench data`: torchvision transforms + torch.utils.data.DataLoader on the same
WebDataset tar shards, with the same augmentation and worker counts; images per second.

Transforms (as the engine's TrainAugment): RandomResizedCrop(size, scale=(0.08, 1), bicubic),
RandomHorizontalFlip, ToTensor, Normalize(CLIP mean, std). Shards are read with tarfile by an
IterableDataset (shard order shuffled, split over the workers, a 1000-sample shuffle buffer per
worker). Timing starts after two warm-up batches, like ours.

Requirements (what the numbers in data/README.md used): torch==2.15.0 torchvision==0.29.2
pillow==13.0.0.

Usage: python3 tools/bench/torch_data.py [--data PATTERN] [--workers 1,2] [--images N]
                                         [--size 224] [--batch 64] [--json]
"""

import argparse
import io
import json
import random
import re
import tarfile
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def expand(pattern):
    """Brace ranges {0000..0004} and '::'-separated lists, as the engine expands them."""
    out = []
    for part in pattern.split("::"):
        m = re.search(r"\{(\d+)\.\.(\d+)\}", part)
        if not m:
            out.append(part)
            continue
        lo, hi = m.group(1), m.group(2)
        for v in range(int(lo), int(hi) + 1):
            out.extend(expand(part[: m.start()] + str(v).zfill(len(lo)) + part[m.end() :]))
    return out


class TarShards(IterableDataset):
    def __init__(self, shards, transform, seed=1, buffer=1000):
        self.shards, self.transform, self.seed, self.buffer = shards, transform, seed, buffer
        self.epoch = 0

    def samples(self, shard):
        with tarfile.open(shard) as tar:
            key, image, label = None, None, None
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = member.name.split(".", 1)
                if k != key:
                    if image is not None and label is not None:
                        yield image, label
                    key, image, label = k, None, None
                data = tar.extractfile(member).read()
                if ext in ("jpg", "jpeg", "png"):
                    image = data
                elif ext == "cls":
                    label = int(data)
            if image is not None and label is not None:
                yield image, label

    def __iter__(self):
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(self.seed * 1000 + self.epoch * 10 + wid)
        shards = list(self.shards)
        random.Random(self.seed + self.epoch).shuffle(shards)
        buffer = []
        for shard in shards[wid::nworkers]:
            for image, label in self.samples(shard):
                if len(buffer) < self.buffer:
                    buffer.append((image, label))
                    continue
                j = rng.randrange(len(buffer))
                buffer[j], (image, label) = (image, label), buffer[j]
                yield self.decode(image, label)
        rng.shuffle(buffer)
        for image, label in buffer:
            yield self.decode(image, label)

    def decode(self, data, label):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return self.transform(image), label


def measure(shards, workers, images, size, batch):
    transform = T.Compose(
        [
            T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    dataset = TarShards(shards, transform)
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, prefetch_factor=4)
    seen, batches, t0 = 0, 0, time.perf_counter()
    while seen < images:
        for x, _ in loader:
            batches += 1
            if batches == 2:
                t0 = time.perf_counter()
            elif batches > 2:
                seen += x.shape[0]
            if seen >= images:
                break
        dataset.epoch += 1
    return seen / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10-jpg/train-{0000..0004}.tar")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    shards = expand(a.data)
    rows = []
    for w in [int(x) for x in a.workers.split(",")]:
        rate = measure(shards, w, a.images, a.size, a.batch)
        rows.append({"workers": w, "images_per_s": rate})
        if not a.json:
            print(f"torchvision DataLoader, {w} worker(s): {rate:.1f} images/s", flush=True)
    if a.json:
        print(json.dumps({"bench": "torch_data", "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
