#!/usr/bin/python3
"""The PyTorch side of kdengine's benchmark (bench/run joins it with bench_ops).

Times the same workloads as bench/bench_ops.c with the same shapes, thread
count, warm-up and repetitions, and prints one JSON line per workload:
  {"side": "pytorch", "workload": ..., "median_ms": ..., "min_ms": ..., "reps": ...}
Lines starting with "# " say what the timings ran on.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LIBBLAS_ALTERNATIVE = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
SGEMM_NAME = "sgemm 1024x1024x1024"
RESNET_NAME = "resnet20 train step b128 1x28x28"


def report_environment(threads):
    print(f"# pytorch {torch.__version__}; threads {torch.get_num_threads()} "
          f"(interop {torch.get_num_interop_threads()}, asked {threads})")
    for line in torch.__config__.show().splitlines():
        line = line.strip().lstrip("- ")
        if any(key in line for key in ("MKL-DNN", "OpenMP", "CPU capability")):
            print(f"# pytorch config: {line}")
        if "BLAS_INFO" in line:
            blas = [f for f in line.split(", ") if "BLAS_INFO" in f or "LAPACK_INFO" in f]
            print(f"# pytorch config: {', '.join(s.replace('Build settings: ', '') for s in blas)}")
    if os.path.lexists(LIBBLAS_ALTERNATIVE):
        print(f"# pytorch blas: {LIBBLAS_ALTERNATIVE} -> {os.path.realpath(LIBBLAS_ALTERNATIVE)}")
    print(f"# OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")


def emit(workload, times_s, **extra):
    ms = [t * 1e3 for t in times_s]
    row = {"side": "pytorch", "workload": workload,
           "median_ms": round(statistics.median(ms), 4), "min_ms": round(min(ms), 4),
           "reps": len(ms)}
    row.update(extra)
    print(json.dumps(row), flush=True)


def warm_up(fn, warmup, warmup_s):
    """At least `warmup` runs and at least `warmup_s` seconds: the first runs
    of a oneDNN convolution are several times slower than the steady state."""
    start, done = time.perf_counter(), 0
    while done < warmup or time.perf_counter() - start < warmup_s:
        fn()
        done += 1


def time_reps(fn, warmup, reps):
    warm_up(fn, *warmup)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_sgemm(warmup, reps):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(1024, 1024, generator=gen)
    b = torch.randn(1024, 1024, generator=gen)
    emit(SGEMM_NAME, time_reps(lambda: torch.matmul(a, b), warmup, reps))


CONV_WORKLOADS = [
    # name, input shape, out channels, kernel, padding, groups
    ("conv3x3 128x16x28x28->16 fwd+bwd", (128, 16, 28, 28), 16, 3, 1, 1),
    ("conv1x1 32x256x14x14->256 fwd+bwd", (32, 256, 14, 14), 256, 1, 0, 1),
    ("dwconv7x7 32x96x28x28 g96 fwd+bwd", (32, 96, 28, 28), 96, 7, 3, 96),
]


def bench_conv(name, shape, cout, k, pad, groups, warmup, reps):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(*shape, generator=gen).requires_grad_()
    w = (torch.randn(cout, shape[1] // groups, k, k, generator=gen) * 0.1).requires_grad_()
    grad_out = torch.randn(shape[0], cout, shape[2], shape[3], generator=gen)

    def step():
        x.grad = None
        w.grad = None
        y = F.conv2d(x, w, None, 1, pad, 1, groups)
        y.backward(grad_out)

    emit(name, time_reps(step, warmup, reps))


class BasicBlock(nn.Module):
    """mdistiller's CIFAR BasicBlock: conv-bn-relu-conv-bn, shortcut, add, relu."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    """mdistiller's resnet20 (widths 16/16/32/64, 3 blocks a stage) for 1-channel
    input; global average pooling instead of AvgPool2d(8), since 28x28 input
    leaves 7x7 maps."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def bench_resnet20(warmup, steps, profile):
    torch.manual_seed(3)
    model = ResNet20().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(128, 1, 28, 28)
    labels = torch.randint(0, 10, (128,))
    parts = {"forward": [], "backward": [], "sgd": [], "step": []}
    losses = []

    def step():
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        t_fwd = time.perf_counter()
        loss.backward()
        t_bwd = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        losses.append(loss.item())
        return start, t_fwd, t_bwd, end

    warm_up(step, *warmup)
    for _ in range(steps):
        start, t_fwd, t_bwd, end = step()
        parts["forward"].append(t_fwd - start)
        parts["backward"].append(t_bwd - t_fwd)
        parts["sgd"].append(end - t_bwd)
        parts["step"].append(end - start)
    finite = all(l == l and abs(l) != float("inf") for l in losses)
    emit(RESNET_NAME, parts["step"], loss=round(losses[-1], 4),
         finite=finite)
    emit("  resnet20 forward+loss", parts["forward"])
    emit("  resnet20 backward", parts["backward"])
    emit("  resnet20 sgd update", parts["sgd"])
    if profile:
        profile_resnet20(step)


def profile_resnet20(step):
    """Self CPU time per aten op over a few steps, to set beside kdengine's."""
    with torch.autograd.profiler.profile() as prof:
        for _ in range(5):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    print("# pytorch resnet20 profile (5 steps, self CPU ms per step):")
    for e in rows[:15]:
        print(f"#   {e.key:<48} {e.self_cpu_time_total / 5e3:9.3f}  x{e.count // 5}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", default="", help="run the workloads whose name contains this")
    ap.add_argument("--profile", action="store_true", help="self CPU time per op of a ResNet-20 step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report_environment(args.threads)
    warmup = (args.warmup, args.warmup_s)
    if args.only in SGEMM_NAME:
        bench_sgemm(warmup, args.reps)
    for name, shape, cout, k, pad, groups in CONV_WORKLOADS:
        if args.only in name:
            bench_conv(name, shape, cout, k, pad, groups, warmup, args.reps)
    if args.only in RESNET_NAME:
        bench_resnet20(warmup, args.steps, args.profile)


if __name__ == "__main__":
    main()
