#!/usr/bin/python3
"""One model per zoo family, kdengine against timm 0.9.16, side by side.

usage: bench/models.py BUILD_DIR [--threads N] [--reps N] [--warmup N]
                       [--warmup-s S] [--batch N] [--size N] [--only SUBSTRING]
                       [--json FILE] [--wait-quiet S] [--retries N]

Makes BUILD_DIR/bench/bench_models, then for each model runs it (on the
staged plugins, BUILD_DIR/plugin-dir) and bench/torch_models.py under
/usr/bin/python3 with the same options, kdengine first, PyTorch right after,
so both sides of a ratio see the same machine. Each side times a training
step and an inference (batch 8 at 224 by default); rows are medians and
ratio = kdengine / pytorch (below 1.0: kdengine is faster). Other
processes' CPU use is watched as bench/run does (its Attempt and Side): a
model is run again when they were busy, and a row that stayed noisy has its
ratio marked "*".
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_PYTHON = "/usr/bin/python3"
MODELS = [
    "resnet50",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "deit_small_patch16_224",
    "mixer_s16_224",
    "swin_tiny_patch4_window7_224",
    "beit_base_patch16_224",
]


def load_bench_run():
    """bench/run (a script without .py) as a module: its Attempt, Side,
    wait_until_quiet, cell and BUSY_WARNING."""
    loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(HERE, "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("usage: ")[1].split("\n\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--reps", default="5")
    ap.add_argument("--warmup", default="2")
    ap.add_argument("--warmup-s", default="0")
    ap.add_argument("--batch", default="8")
    ap.add_argument("--size", default="224")
    ap.add_argument("--only", help="the workloads whose name contains this")
    ap.add_argument("--json", help="also write the joined rows here, one JSON line each")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="S")
    ap.add_argument("--retries", type=int, default=2)
    args = ap.parse_args()
    run = load_bench_run()

    make = subprocess.run(["make", "-C", args.build_dir, "bench/bench_models"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if make.returncode != 0:
        print(make.stdout[-4000:], end="")
        print("bench/models.py: building bench_models failed", file=sys.stderr)
        return 1
    shared = []
    for opt in ("threads", "reps", "warmup", "warmup_s", "batch", "size"):
        shared += ["--" + opt.replace("_", "-"), getattr(args, opt)]
    kd_cmd = [os.path.join(args.build_dir, "bench", "bench_models"),
              os.path.join(args.build_dir, "plugin-dir")] + shared
    pt_cmd = [TORCH_PYTHON, os.path.join(HERE, "torch_models.py")] + shared
    kdengine, pytorch = run.Side("kdengine"), run.Side("pytorch")
    for model in MODELS:
        names = [f"{model} train step b{args.batch} {args.size}",
                 f"{model} inference b{args.batch} {args.size}"]
        if args.only and not any(args.only in n for n in names):
            continue
        only = ["--only", args.only if args.only else model]
        for attempt in range(args.retries + 1):
            if args.wait_quiet > 0:
                run.wait_until_quiet(args.wait_quiet)
            kd = run.Attempt("kdengine", kd_cmd + only)
            pt = run.Attempt("pytorch", pt_cmd + only)
            noisy = max(kd.others(), pt.others()) > run.BUSY_WARNING
            if not noisy or attempt == args.retries:
                break
            print(f"== other processes were busy during '{model}': running it again",
                  flush=True)
        kdengine.add(kd, noisy)
        pytorch.add(pt, noisy)

    print()
    for side in (kdengine, pytorch):
        for line in side.notes + [side.busy_note()]:
            print(line)
    print()
    kd_rows, pt_rows = kdengine.rows, pytorch.rows
    order = list(kd_rows) + [w for w in pt_rows if w not in kd_rows]
    width = max([len("workload")] + [len(w) for w in order])
    print(f"{'workload':<{width}} | {'kdengine ms':>11} | {'pytorch ms':>10} | {'ratio':>6}")
    print(f"{'-' * width}-|-{'-' * 11}-|-{'-' * 10}-|-{'-' * 6}")
    joined = []
    for workload in order:
        kd, pt = kd_rows.get(workload), pt_rows.get(workload)
        ratio = None
        if kd and pt and "median_ms" in kd and "median_ms" in pt and pt["median_ms"] > 0:
            ratio = kd["median_ms"] / pt["median_ms"]
        noisy = bool((kd or {}).get("noisy") or (pt or {}).get("noisy"))
        ratio_cell = (f"{ratio:.2f}" if ratio is not None else "-") + ("*" if noisy else "")
        print(f"{workload:<{width}} | {run.cell(kd):>11} | {run.cell(pt):>10} | {ratio_cell:>6}")
        joined.append({"workload": workload,
                       "kdengine_ms": (kd or {}).get("median_ms"),
                       "pytorch_ms": (pt or {}).get("median_ms"),
                       "ratio": round(ratio, 4) if ratio is not None else None,
                       "threads": int(args.threads), "reps": int(args.reps), "noisy": noisy,
                       **({"kdengine_error": kd["error"]} if kd and "error" in kd else {})})
    print()
    for row in joined:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            for row in joined:
                f.write(json.dumps(row) + "\n")
    return 1 if any(r["ratio"] is None for r in joined) else 0


if __name__ == "__main__":
    sys.exit(main())
