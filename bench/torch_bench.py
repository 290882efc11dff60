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


def emit_summary(workload, median_s, min_s, reps, **extra):
    row = {"side": "pytorch", "workload": workload, "median_ms": round(median_s * 1e3, 4),
           "min_ms": round(min_s * 1e3, 4), "reps": reps}
    row.update(extra)
    print(json.dumps(row), flush=True)


def emit(workload, times_s, **extra):
    emit_summary(workload, statistics.median(times_s), min(times_s), len(times_s), **extra)


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


KIND_NAMES = {"conv": "conv2d", "bn": "batch_norm", "relu": "relu", "add": "add",
              "head": "head (avgpool+flatten+linear+cross_entropy)"}
# kind, uses in one step, in channels, input size, out channels, kernel, stride,
# input grad; the same list as cases[] in bench_resnet20_ops.c.
RESNET20_LAYERS = [
    ("conv", 1, 1, 28, 16, 3, 1, False),
    ("conv", 6, 16, 28, 16, 3, 1, True),
    ("conv", 1, 16, 28, 32, 3, 2, True),
    ("conv", 5, 32, 14, 32, 3, 1, True),
    ("conv", 1, 32, 14, 64, 3, 2, True),
    ("conv", 5, 64, 7, 64, 3, 1, True),
    ("conv", 1, 16, 28, 32, 1, 2, True),
    ("conv", 1, 32, 14, 64, 1, 2, True),
    ("bn", 7, 16, 28, 16, 0, 1, True),
    ("bn", 7, 32, 14, 32, 0, 1, True),
    ("bn", 7, 64, 7, 64, 0, 1, True),
    ("relu", 7, 16, 28, 16, 0, 1, True),
    ("relu", 6, 32, 14, 32, 0, 1, True),
    ("relu", 6, 64, 7, 64, 0, 1, True),
    ("add", 3, 16, 28, 16, 0, 1, True),
    ("add", 3, 32, 14, 32, 0, 1, True),
    ("add", 3, 64, 7, 64, 0, 1, True),
    ("head", 1, 64, 7, 10, 0, 1, True),
]
OPS_PREFIX = "resnet20 ops: "


def layer_case_name(kind, count, cin, size, cout, kernel, stride):
    if kind == "conv":
        return f"    conv {cin}->{cout} k{kernel} s{stride} {size}x{size} (x{count}) fwd+bwd"
    label = "head" if kind == "head" else KIND_NAMES[kind]
    return f"    {label} {cin}x{size}x{size} (x{count}) fwd+bwd"


def time_layer(kind, cin, size, cout, kernel, stride, input_grad, warmup, reps):
    """Median and min of the forward and of the backward of one layer alone."""
    gen = torch.Generator().manual_seed(4)
    batch = 128
    x = torch.randn(batch, cin, size, size, generator=gen).requires_grad_(input_grad)
    out_size = (size - 1) // stride + 1
    grad_out = torch.randn(batch, cout, out_size, out_size, generator=gen)
    leaves = [x] if input_grad else []
    if kind == "conv":
        w = (torch.randn(cout, cin, kernel, kernel, generator=gen) * 0.1).requires_grad_()
        leaves.append(w)
        forward = lambda: F.conv2d(x, w, None, stride, kernel // 2)
    elif kind == "bn":
        w, b = torch.ones(cin, requires_grad=True), torch.zeros(cin, requires_grad=True)
        mean, var = torch.zeros(cin), torch.ones(cin)
        leaves += [w, b]
        forward = lambda: F.batch_norm(x, mean, var, w, b, True, 0.1, 1e-5)
    elif kind == "relu":
        forward = lambda: F.relu(x)
    elif kind == "add":
        other = torch.randn(batch, cin, size, size, generator=gen).requires_grad_()
        leaves.append(other)
        forward = lambda: x + other
    else:
        w = (torch.randn(cout, cin, generator=gen) * 0.1).requires_grad_()
        b = torch.zeros(cout, requires_grad=True)
        labels = torch.randint(0, cout, (batch,), generator=gen)
        leaves += [w, b]
        forward = lambda: F.cross_entropy(
            F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), w, b), labels)
    times = {"forward": [], "backward": []}

    def rep():
        start = time.perf_counter()
        for t in leaves:
            t.grad = None
        y = forward()
        t_fwd = time.perf_counter()
        if kind == "head":
            y.backward()
        else:
            y.backward(grad_out)
        del y
        end = time.perf_counter()
        return t_fwd - start, end - t_fwd

    warm_up(rep, *warmup)
    for _ in range(reps):
        fwd, bwd = rep()
        times["forward"].append(fwd)
        times["backward"].append(bwd)
    return {phase: (statistics.median(ts), min(ts)) for phase, ts in times.items()}


def bench_resnet20_ops(warmup, reps):
    """Each distinct layer of the ResNet-20 step alone, summed per kind of op
    with the number of times the step uses it (as bench_resnet20_ops.c)."""
    results = [time_layer(kind, cin, size, cout, k, s, grad, warmup, reps)
               for kind, _, cin, size, cout, k, s, grad in RESNET20_LAYERS]
    for kind, kind_name in KIND_NAMES.items():
        rows = [(layer, res) for layer, res in zip(RESNET20_LAYERS, results) if layer[0] == kind]
        for phase in ("forward", "backward"):
            emit_summary(f"{OPS_PREFIX}{kind_name} {phase}",
                         sum(layer[1] * res[phase][0] for layer, res in rows),
                         sum(layer[1] * res[phase][1] for layer, res in rows), reps)
        for layer, res in rows:
            emit_summary(layer_case_name(*layer[:7]),
                         res["forward"][0] + res["backward"][0],
                         res["forward"][1] + res["backward"][1], reps)


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
    if args.only in OPS_PREFIX:
        bench_resnet20_ops(warmup, args.reps)


if __name__ == "__main__":
    main()
