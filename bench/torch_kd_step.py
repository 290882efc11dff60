#!/usr/bin/python3
"""The PyTorch side of the KD training step benchmark (bench/kd_step.py).

The step of a kdengine KD job written in plain PyTorch: a ResNet-56 teacher
in eval mode under no_grad, a ResNet-20 student (tests/parity/torch_resnet.py,
the same models and state_dict names as kdengine's resnet plugin),
0.1 * cross-entropy + 0.9 * Hinton KD (T 4), backward and SGD (momentum 0.9,
weight decay 5e-4 on every parameter), on Fashion-MNIST with random crop
(pad 2), horizontal flip and normalisation per sample.

A step is timed from the end of the previous one to its own end, so it
includes waiting for the batch, as kdengine's img_per_s does. Prints what
torch runs on ("# " lines) and one JSON line per timing:
  {"side": "pytorch", "workload": ..., "median_ms": ..., "min_ms": ..., "reps": ...}

usage: torch_kd_step.py [--threads N] [--warmup N] [--steps N]
                        [--loader workers|inline] [--teacher FILE] [--no-teacher]
                        [--profile]
       torch_kd_step.py --write-teacher FILE
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402
from torch_resnet import build  # noqa: E402

sys.path.insert(0, HERE)
from torch_bench import emit, report_environment  # noqa: E402

BATCH = 128
DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.286, 0.353
PAD = 2
TEMPERATURE = 4.0
CE_WEIGHT, KD_WEIGHT = 0.1, 0.9
KD_NAME = "kd step resnet56->resnet20 b128 1x28x28"
STUDENT_NAME = "student step resnet20 b128 1x28x28"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FashionMNIST(torch.utils.data.Dataset):
    """The training images in memory as uint8; each sample is cropped,
    flipped and normalised when it is drawn, as kdengine's transforms do."""

    def __init__(self, subset):
        images = read_idx(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(DATA_DIR, "train-labels-idx1-ubyte.gz"))
        self.images = torch.from_numpy(images[:subset].copy())
        self.labels = torch.from_numpy(labels[:subset].astype(np.int64))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div_(255).unsqueeze(0)
        x = F.pad(x, (PAD, PAD, PAD, PAD))
        top, left = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
        x = x[:, top:top + 28, left:left + 28]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        return (x - MEAN) / STD, self.labels[i]


def inline_batches(ds, batch):
    """The loader without worker processes: the main process draws each
    batch between steps."""
    order = torch.randperm(len(ds))
    for start in range(0, len(ds) - batch + 1, batch):
        samples = [ds[int(i)] for i in order[start:start + batch]]
        yield torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])


# The reference models have no forward(): taps() runs the network and
# returns the intermediate maps it passes through anyway, and the logits.
def make_teacher(path):
    teacher = build("resnet56", 10, 1)
    if path:
        tensors, _ = read_safetensors(path)
        teacher.load_state_dict(tensors)
    return teacher.eval()


def kd_loss(student_logits, teacher_logits):
    t = TEMPERATURE
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


class Parts:
    """Per-step seconds of each part of the step, for --profile."""

    def __init__(self, enabled):
        self.enabled, self.times, self.t = enabled, {}, 0.0

    def start(self):
        if self.enabled:
            self.t = time.perf_counter()

    def mark(self, name):
        if self.enabled:
            now = time.perf_counter()
            self.times.setdefault(name, []).append(now - self.t)
            self.t = now


def run(args):
    torch.manual_seed(0)
    teacher = None if args.no_teacher else make_teacher(args.teacher)
    student = build("resnet20", 10, 1).train()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    ds = FashionMNIST(BATCH * (args.warmup + args.steps))
    if args.loader == "workers":
        batches = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True,
                                              num_workers=2, drop_last=True)
    else:
        batches = inline_batches(ds, BATCH)

    parts = Parts(args.profile)
    times = []
    last = time.perf_counter()
    parts.start()
    for x, y in batches:
        parts.mark("data")
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher.taps(x)["logits"]
            parts.mark("teacher forward")
        logits = student.taps(x)["logits"]
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            loss = CE_WEIGHT * loss + KD_WEIGHT * kd_loss(logits, teacher_logits)
        if not torch.isfinite(loss).item():
            raise RuntimeError(f"step {len(times)}: the loss is not finite")
        parts.mark("student forward+losses")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        parts.mark("backward")
        opt.step()
        parts.mark("sgd update")
        now = time.perf_counter()
        times.append(now - last)
        last = now
        parts.start()

    timed = times[args.warmup:]
    if len(timed) < 1:
        raise RuntimeError(f"only {len(times)} steps ran, none after {args.warmup} warm-up steps")
    name = STUDENT_NAME if args.no_teacher else KD_NAME
    emit(name, timed, loader=args.loader)
    for part, t in parts.times.items():
        emit(f"  {name.split(' b')[0]}: {part}", t[args.warmup:])


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("usage: ")[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--loader", choices=["workers", "inline"], default="workers",
                    help="workers: a DataLoader with 2 worker processes (as the job's 2 "
                         "loader threads); inline: the main process draws each batch")
    ap.add_argument("--teacher", metavar="FILE", help="the teacher's weights (safetensors)")
    ap.add_argument("--no-teacher", action="store_true",
                    help="the student's supervised step alone (cross-entropy only)")
    ap.add_argument("--profile", action="store_true", help="time each part of the step too")
    ap.add_argument("--write-teacher", metavar="FILE",
                    help="write a freshly initialised teacher's weights there and exit")
    args = ap.parse_args()
    if args.write_teacher:
        torch.manual_seed(56)
        teacher = build("resnet56", 10, 1)
        write_safetensors(args.write_teacher, dict(teacher.state_dict()), {"model": "resnet56"})
        return 0
    torch.set_num_threads(args.threads)
    report_environment(args.threads)
    print(f"# pytorch loader: {args.loader}"
          + (" (DataLoader, 2 worker processes)" if args.loader == "workers" else ""))
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
