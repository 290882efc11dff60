#!/usr/bin/python3
"""Whether OpenMP's wait policy changes a KD step: kdengine only.

usage: bench/wait_policy.py BUILD_DIR [--rounds N] [--warmup N] [--steps N]
                            [--threads N] [--workers N] [--settings LIST]
                            [--keep DIR]

Runs bench/kd_step.py's KD job (ResNet-56 -> ResNet-20, batch 128, the
given threads and loader workers) once per setting and round, the settings
interleaved (round 1: every setting, round 2: every setting, ...), so a
change in the machine's load hits all of them alike. Settings: libgomp's
default (spin 300000 turns, then sleep; given as GOMP_SPINCOUNT=300000,
since with neither variable set kdengine restarts itself passive),
OMP_WAIT_POLICY passive, and GOMP_SPINCOUNT 10000 (--settings default,passive,spin10k picks
some). Each run's step time is the median of
its steps after the warm-up (from metrics.jsonl, waiting for the loader
included); the table prints every run, then per setting the median over
rounds, the spread (min-max of the run medians) and the median ratio to the
default paired by round. Other processes' CPU use during each run is shown
(as kd_step.py measures it), since this is meant for a shared machine.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import kd_step

# "default" is libgomp's (spin 300000 turns, then sleep), named explicitly:
# with neither variable set the CLI would restart itself passive.
SETTINGS = [("default", {"GOMP_SPINCOUNT": "300000"}),
            ("passive", {"OMP_WAIT_POLICY": "passive"}),
            ("spin10k", {"GOMP_SPINCOUNT": "10000"})]


def run_once(args, work, name, teacher, extra_env):
    out_dir = os.path.join(work, name)
    job_path = os.path.join(work, name + ".json")
    job = kd_step.job_json(args, out_dir, teacher)
    job["data"]["train"]["workers"] = args.workers
    with open(job_path, "w") as f:
        kd_step.json.dump(job, f, indent=1)
    env = dict(os.environ, KDENGINE_PLUGIN_PATH=os.path.join(args.build_dir, "plugin-dir"))
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(key, None)
    env.update(extra_env)
    proc, others = kd_step.measured([os.path.join(args.build_dir, "kdengine"), "run", job_path],
                                    env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"kdengine run {job_path} failed ({proc.returncode}):\n"
                           + proc.stderr[-3000:])
    steps = []
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            row = kd_step.json.loads(line)
            if row.get("type") == "train":
                steps.append(kd_step.BATCH / row["img_per_s"])
    timed = steps[args.warmup:]
    if not timed:
        raise RuntimeError(f"{out_dir}/metrics.jsonl: no step after the warm-up")
    return statistics.median(timed) * 1e3, others


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("usage: ")[1].split("\n\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--settings", default=",".join(name for name, _ in SETTINGS))
    ap.add_argument("--keep", metavar="DIR")
    args = ap.parse_args()
    chosen = args.settings.split(",")
    unknown = set(chosen) - {name for name, _ in SETTINGS}
    if unknown or "default" not in chosen:
        ap.error(f"--settings: {args.settings}: names from {[n for n, _ in SETTINGS]}, "
                 "default among them (the ratios are to it)")
    settings = [(name, env) for name, env in SETTINGS if name in chosen]
    with tempfile.TemporaryDirectory(prefix="wait_policy.") as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        teacher = os.path.join(work, "teacher-resnet56.safetensors")
        subprocess.run([kd_step.TORCH_PYTHON, kd_step.TORCH_SIDE, "--write-teacher", teacher],
                       check=True)
        print(f"# kdengine: {kd_step.kdengine_version(args.build_dir)}; threads {args.threads}, "
              f"workers {args.workers}, median of {args.steps} steps after {args.warmup}")
        ms = {name: [] for name, _ in settings}
        for r in range(1, args.rounds + 1):
            for name, env in settings:
                step, others = run_once(args, work, f"r{r}-{name}", teacher, env)
                ms[name].append(step)
                print(f"round {r} {name:8s} {step:8.1f} ms  (others {others:.2f} CPUs)",
                      flush=True)
        base = ms["default"]
        for name, _ in settings:
            v = ms[name]
            ratio = statistics.median(a / b for a, b in zip(v, base))
            print(f"{name:8s} median {statistics.median(v):8.1f} ms, runs {min(v):.1f}-"
                  f"{max(v):.1f}, ratio to default (paired) {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
