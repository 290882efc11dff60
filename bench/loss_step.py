#!/usr/bin/python3
"""A distillation loss's training-step cost over plain KD, in kdengine.

usage: bench/loss_step.py BUILD_DIR [--losses kd,dkd,dist,rkd] [--threads N]
                          [--warmup N] [--steps N] [--runs N] [--alone-only]
                          [--keep DIR] [--json FILE] [--wait-quiet S]

First, BUILD_DIR/bench/bench_losses times each loss alone (forward +
backward on the step's shapes: [128, 10] logits, [128, 64] pooled features)
and its JSON lines are printed as they are; --alone-only stops there.

The KD step of bench/kd_step.py (teacher ResNet-56, student ResNet-20,
Fashion-MNIST batch 128, SGD, 2 loader workers, a metrics line every step)
with its 0.9-weighted kd loss swapped for each loss in turn, at the
CIFAR-100 defaults of its manifest (rkd on the pre_logits taps; dkd's
warm-up off, so every step computes the full loss). Each run times every
loss once, in the order given, kd first; a step's time is 128 / img_per_s
from metrics.jsonl, the warm-up steps dropped, the median taken. Each row
gives the loss's median and ratio = loss step / kd step of the same run;
the last lines give each loss's median ratio over the runs. A run during
which other processes kept more than 0.25 CPUs busy is marked "*".
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import kd_step

# The loss entry each name stands for, next to ce 0.1, in the kd step's job.
LOSSES = {
    "kd": {"name": "kd", "weight": 0.9, "temperature": 4},
    "dkd": {"name": "dkd", "weight": 0.9, "warmup": 0},
    "dist": {"name": "dist", "weight": 0.9},
    "rkd": {"name": "rkd", "weight": 0.9},
}


def run_loss(args, work, run, loss, teacher):
    """The loss's step: (median seconds, min seconds, CPUs others kept busy)."""
    out_dir = os.path.join(work, f"run{run}-{loss}")
    job = kd_step.job_json(args, out_dir, teacher)
    job["losses"] = [{"name": "ce", "weight": 0.1}, LOSSES[loss]]
    job_path = out_dir + ".json"
    with open(job_path, "w") as f:
        json.dump(job, f, indent=1)
    env = dict(os.environ, KDENGINE_PLUGIN_PATH=os.path.join(args.build_dir, "plugin-dir"))
    proc, others = kd_step.measured([os.path.join(args.build_dir, "kdengine"), "run", job_path],
                                    env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"kdengine run {job_path} failed ({proc.returncode}):\n"
                           + proc.stderr[-3000:])
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        steps = [kd_step.BATCH / row["img_per_s"] for row in map(json.loads, f)
                 if row.get("type") == "train"]
    timed = steps[args.warmup:]
    if not timed:
        raise RuntimeError(f"{out_dir}/metrics.jsonl: {len(steps)} train lines, none after "
                           f"the {args.warmup} warm-up steps")
    return statistics.median(timed), min(timed), others


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("usage: ")[1].split("\n\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("--losses", default="kd,dkd,dist,rkd",
                    help="comma-separated, from " + ", ".join(LOSSES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the medians")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--alone-only", action="store_true",
                    help="time the losses alone (bench_losses), not the whole steps")
    ap.add_argument("--keep", metavar="DIR", help="write the jobs and runs here and keep them")
    ap.add_argument("--json", metavar="FILE", help="also write the rows here, one JSON line each")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                    help="before each run, wait up to S seconds for other processes to go quiet")
    args = ap.parse_args()
    losses = args.losses.split(",")
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or "kd" not in losses:
        ap.error(f"--losses: unknown {unknown}" if unknown else "--losses must include kd")
    losses = ["kd"] + [name for name in losses if name != "kd"]

    make = subprocess.run(["make", "-C", args.build_dir, "kdengine", "stage-plugins",
                           "bench/bench_losses"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if make.returncode != 0:
        print(make.stdout[-4000:], end="")
        print(f"loss_step: building {args.build_dir}/kdengine failed", file=sys.stderr)
        return 1

    alone = subprocess.run([os.path.join(args.build_dir, "bench", "bench_losses"),
                            os.path.join(args.build_dir, "plugin-dir"), "--threads",
                            str(args.threads)], stdout=subprocess.PIPE, text=True)
    print(alone.stdout, end="", flush=True)
    if alone.returncode != 0:
        print("loss_step: bench_losses failed", file=sys.stderr)
        return 1
    if args.alone_only:
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="loss_step.") as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        teacher = os.path.join(work, "teacher-resnet56.safetensors")
        subprocess.run([kd_step.TORCH_PYTHON, kd_step.TORCH_SIDE, "--write-teacher", teacher],
                       check=True)
        print(f"# kdengine: {kd_step.kdengine_version(args.build_dir)}")
        for run in range(1, args.runs + 1):
            kd_ms = None
            for loss in losses:
                if args.wait_quiet > 0:
                    kd_step.wait_until_quiet(args.wait_quiet)
                median, least, others = run_loss(args, work, run, loss, teacher)
                kd_ms = kd_ms or median * 1e3
                noisy = others > kd_step.BUSY_WARNING
                row = {"loss": loss, "run": run, "median_ms": round(median * 1e3, 2),
                       "min_ms": round(least * 1e3, 2),
                       "ratio_to_kd": round(median * 1e3 / kd_ms, 4),
                       "steps": args.steps, "threads": args.threads,
                       "others_cpus": round(others, 2), "noisy": noisy}
                rows.append(row)
                print(f"run {run}: {loss}: {row['median_ms']:.1f} ms (min {row['min_ms']:.1f}), "
                      f"ratio to kd {row['ratio_to_kd']:.3f}{'*' if noisy else ''} (others kept "
                      f"{others:.2f} CPUs busy)", flush=True)

    if any(r["noisy"] for r in rows):
        print(f"# *: other processes kept more than {kd_step.BUSY_WARNING} CPUs busy: "
              "a noisy timing")
    for loss in losses[1:]:
        ratios = [r["ratio_to_kd"] for r in rows if r["loss"] == loss]
        print(f"{loss} step / kd step over {len(ratios)} runs: "
              f"{', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
    for row in rows:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
