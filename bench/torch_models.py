#!/usr/bin/python3
"""The PyTorch side of bench/models.py: bench_models.c's workloads in timm.

For each model (timm 0.9.16, its defaults, 1000 classes, f32 on the CPU):
  "<model> train step b8 224": grads cleared, model.train() forward,
    F.cross_entropy against random labels, backward, p -= lr * grad;
  "<model> inference b8 224": model.eval() forward under torch.no_grad().
Same threads, warm-up and repetitions as the C side; one JSON line per
workload, "# " lines for what it ran on (torch_bench.report_environment).

usage: torch_models.py [--threads N] [--reps N] [--warmup N] [--warmup-s S]
                       [--batch N] [--size N] [--only SUBSTRING]
"""
import argparse
import os
import sys

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import emit, report_environment, time_reps  # noqa: E402

MODELS = [
    "resnet50",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "deit_small_patch16_224",
    "mixer_s16_224",
    "swin_tiny_patch4_window7_224",
    "beit_base_patch16_224",
]
SGD_LR = 0.01


def bench_model(name, args, warmup):
    train_name = f"{name} train step b{args.batch} {args.size}"
    infer_name = f"{name} inference b{args.batch} {args.size}"
    if args.only not in train_name and args.only not in infer_name:
        return
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=1000)
    images = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 1000, (args.batch,))
    params = [p for p in model.parameters() if p.requires_grad]

    def train_step():
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-SGD_LR)

    def inference():
        with torch.no_grad():
            model(images)

    if args.only in train_name:
        model.train()
        emit(train_name, time_reps(train_step, warmup, args.reps))
    if args.only in infer_name:
        model.eval()
        emit(infer_name, time_reps(inference, warmup, args.reps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--warmup-s", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--only", default="", help="run the workloads whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report_environment(args.threads)
    print(f"# timm {timm.__version__}")
    for name in MODELS:
        bench_model(name, args, (args.warmup, args.warmup_s))


if __name__ == "__main__":
    main()
