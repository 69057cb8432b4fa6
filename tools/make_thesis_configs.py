#!/usr/bin/env python3
"""Writes configs/thesis/*.json: the thesis Table 3.1 grid (teacher ViT-B/32, ViT-B/16, RN50 x
text encoder CLIP, RoBERTa x CIFAR-10, CIFAR-100, ImageNet). Each config runs every column of
the table for one cell: linear probe, the head, self-distillation with and without text, the
student with labels only, and zero-shot when the text tower is CLIP's. Regenerate after changing
the settings below; the files are committed so `distill run --config` needs no Python.

Paths are relative to the project root: converted checkpoints under weights/ (weights/README.md
says how to make them), CIFAR-10 from ../shared/data, CIFAR-100 and ImageNet where the user puts
them (data/cifar-100-binary as distributed by its authors; data/imagenet/{train,val} as class
folders).
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "configs", "thesis")

TEACHERS = {
    "vit-b-32": "weights/clip-vit-b-32.safetensors",
    "vit-b-16": "weights/clip-vit-b-16.safetensors",
    "rn50": "weights/clip-rn50.safetensors",
}
TEXT = {
    # CLIP's own text tower comes from the same full-CLIP checkpoint as the image tower.
    "clip": lambda teacher_ckpt: {
        "checkpoint": teacher_ckpt,
        "tokenizer": "../shared/data/tokenizers/clip/bpe_simple_vocab_16e6.txt.gz",
    },
    "roberta": lambda teacher_ckpt: {
        "checkpoint": "weights/roberta-base.safetensors",
        "tokenizer": "../shared/data/tokenizers/roberta",
    },
}
DATA = {
    "cifar10": {
        "train": "../shared/data/cifar10-jpg/train-{0000..0004}.tar",
        "test": "../shared/data/cifar10-jpg/test-0000.tar",
        "class_names": "cifar10",
        "templates": "cifar",
        "student_epochs": 30,
    },
    "cifar100": {
        "train": "data/cifar-100-binary",
        "test": "data/cifar-100-binary",
        "class_names": "cifar100",
        "templates": "cifar",
        "student_epochs": 30,
    },
    "imagenet": {
        "train": "data/imagenet/train",
        "test": "data/imagenet/val",
        "class_names": "imagenet",
        "templates": "imagenet",
        "student_epochs": 10,
    },
}


def config(teacher, text, dataset):
    ckpt = TEACHERS[teacher]
    d = DATA[dataset]
    stages = ["probe", "head", "student_text", "student_notext", "student_labels"]
    if text == "clip":
        stages.append("zeroshot")
    return {
        "name": f"thesis-{teacher}-{text}-{dataset}",
        "seed": 0,
        "device": "cuda",
        "precision": "bf16",
        "log_every": 50,
        "checkpoint_every": 1000,
        "stages": stages,
        "data": {
            "train": d["train"],
            "test": d["test"],
            "class_names": d["class_names"],
            "templates": d["templates"],
            "workers": 12,
            "batch_size": 256,
            "eval_batch_size": 500,
            "augment": {"scale_min": 0.5, "scale_max": 1.0, "flip_probability": 0.5},
        },
        "teacher": {"checkpoint": ckpt},
        "text": TEXT[text](ckpt),
        "probe": {"epochs": 20},
        "head": {
            "epochs": 10,
            "config": {"width": 512, "heads": 8, "mlp_ratio": 4, "dropout": 0.0},
            "optimizer": {"kind": "adamw", "weight_decay": 0.05},
            "schedule": {"kind": "cosine", "base_lr": 1e-3, "warmup_steps": 500},
        },
        "student": {
            "epochs": d["student_epochs"],
            "alpha": 1.0,
            "tau": 1.0,
            "optimizer": {"kind": "adamw", "weight_decay": 0.05, "max_grad_norm": 1.0},
            "schedule": {"kind": "cosine", "base_lr": 5e-4, "warmup_steps": 1000},
        },
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for teacher in TEACHERS:
        for text in TEXT:
            for dataset in DATA:
                c = config(teacher, text, dataset)
                with open(os.path.join(OUT, c["name"] + ".json"), "w") as f:
                    json.dump(c, f, indent=2)
                    f.write("\n")


if __name__ == "__main__":
    main()
