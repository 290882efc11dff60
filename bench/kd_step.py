#!/usr/bin/python3
"""The full KD training step, as a kdengine job and as the same PyTorch code.

usage: bench/kd_step.py BUILD_DIR [--threads N] [--warmup N] [--steps N]
                        [--runs N] [--loader workers|inline] [--profile]
                        [--keep DIR] [--json FILE] [--wait-quiet S]

Writes a ResNet-56 teacher's weights (freshly initialised, from
bench/torch_kd_step.py) and a KD job into a temp dir: teacher resnet56,
student resnet20 (10 classes, 1 channel), 0.1 ce + 0.9 kd (T 4), SGD lr 0.05
momentum 0.9 weight decay 5e-4, Fashion-MNIST with random crop (pad 2),
hflip and normalize, batch 128, 2 loader workers, the given threads, no
eval, one epoch of warmup + steps batches, a metrics line every step. Runs
`BUILD_DIR/kdengine run` on it, takes each step's seconds from
metrics.jsonl (batch / img_per_s: the time from the end of one step to the
end of the next, waiting for the loader included), drops the warm-up steps
and takes the median. Then runs bench/torch_kd_step.py, the same step in
PyTorch, timed the same way. Each of the --runs pairs prints both medians and
ratio = kdengine / pytorch (below 1.0: kdengine is faster); the last line is
the median ratio over the runs. A run during which other processes kept more
than 0.25 CPUs busy is marked "*".

--profile also times the student's supervised step alone (ce only, no
teacher) on both sides, so "kd - student" is the teacher's forward and the
kd loss, and prints torch's own per-part medians.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
TORCH_PYTHON = "/usr/bin/python3"
TORCH_SIDE = os.path.join(HERE, "torch_kd_step.py")
BATCH = 128
DATA_DIR = "/usr/share/datasets/fashion-mnist"
BUSY_WARNING = 0.25
KD_NAME = "kd step resnet56->resnet20 b128 1x28x28"
STUDENT_NAME = "student step resnet20 b128 1x28x28"


def busy_cpu_seconds():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_until_quiet(limit_s):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy0 = busy_cpu_seconds()
        time.sleep(1.0)
        if busy_cpu_seconds() - busy0 <= BUSY_WARNING:
            return


def measured(cmd, **kw):
    """Runs cmd; returns (its CompletedProcess, CPUs other processes kept busy)."""
    busy0, own0, wall0 = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    wall = time.monotonic() - wall0
    others = max(0.0, (busy_cpu_seconds() - busy0) - (children_cpu_seconds() - own0))
    return proc, others / wall if wall > 0 else 0.0


def job_json(args, out_dir, teacher_weights):
    augment = [{"name": "random_crop", "size": [28], "padding": 2}, {"name": "hflip"},
               {"name": "normalize", "mean": [0.286], "std": [0.353]}]
    job = {
        "seed": 0, "threads": args.threads, "output": out_dir,
        "data": {"train": {
            "dataset": {"name": "idx",
                        "images": f"{DATA_DIR}/train-images-idx3-ubyte.gz",
                        "labels": f"{DATA_DIR}/train-labels-idx1-ubyte.gz"},
            "transforms": augment, "batch_size": BATCH, "workers": 2,
            "subset": BATCH * (args.warmup + args.steps)}},
        "student": {"model": "resnet20", "num_classes": 10, "in_chans": 1},
        "losses": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "temperature": 4}],
        # no_decay false: decay every parameter, as torch.optim.SGD does
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                  "no_decay": False},
        "schedule": {"name": "constant", "epochs": 1},
        "eval": {"every_epochs": 0},
        "log": {"every_steps": 1},
    }
    if teacher_weights:
        job["teacher"] = {"model": "resnet56", "num_classes": 10, "in_chans": 1,
                          "weights": teacher_weights}
    else:
        job["losses"] = [{"name": "ce", "weight": 1.0}]
    return job


def summary(workload, step_s, **extra):
    return {"workload": workload, "median_ms": statistics.median(step_s) * 1e3,
            "min_ms": min(step_s) * 1e3, "reps": len(step_s), **extra}


def run_kdengine(args, work, name, teacher_weights):
    """Runs the job; returns its summary row, the run's header line and the
    CPUs other processes kept busy."""
    out_dir = os.path.join(work, name)
    job_path = os.path.join(work, name + ".json")
    with open(job_path, "w") as f:
        json.dump(job_json(args, out_dir, teacher_weights), f, indent=1)
    env = dict(os.environ, KDENGINE_PLUGIN_PATH=os.path.join(args.build_dir, "plugin-dir"))
    proc, others = measured([os.path.join(args.build_dir, "kdengine"), "run", job_path], env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"kdengine run {job_path} failed ({proc.returncode}):\n"
                           + proc.stderr[-3000:])
    steps = []
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row.get("type") == "train":
                steps.append(BATCH / row["img_per_s"])
    timed = steps[args.warmup:]
    if not timed:
        raise RuntimeError(f"{out_dir}/metrics.jsonl: {len(steps)} train lines, none after "
                           f"the {args.warmup} warm-up steps")
    header = next((ln for ln in proc.stderr.splitlines() if " threads " in ln), "")
    workload = KD_NAME if teacher_weights else STUDENT_NAME
    return summary(workload, timed), header.strip(), others


def run_torch(args, teacher_weights, extra):
    cmd = [TORCH_PYTHON, TORCH_SIDE, "--threads", str(args.threads), "--warmup",
           str(args.warmup), "--steps", str(args.steps),
           "--loader", args.loader] + extra
    cmd += ["--teacher", teacher_weights] if teacher_weights else ["--no-teacher"]
    proc, others = measured(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + proc.stderr[-3000:])
    rows, notes = [], []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
        elif line.strip():
            notes.append(line)
    return rows, notes, others


def kdengine_version(build_dir):
    proc = subprocess.run([os.path.join(build_dir, "kdengine"), "version"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.stdout.strip()


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("usage: ")[1].split("\n\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the medians")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--runs", type=int, default=3, help="kdengine/pytorch pairs")
    ap.add_argument("--loader", choices=["workers", "inline"], default="workers",
                    help="the PyTorch loader: a DataLoader with 2 worker processes, or "
                         "the main process drawing each batch between steps")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="write the jobs and runs here and keep them")
    ap.add_argument("--json", metavar="FILE", help="also write the rows here, one JSON line each")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                    help="before each run, wait up to S seconds for other processes to go quiet")
    args = ap.parse_args()

    make = subprocess.run(["make", "-C", args.build_dir, "kdengine", "stage-plugins"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if make.returncode != 0:
        print(make.stdout[-4000:], end="")
        print(f"kd_step: building {args.build_dir}/kdengine failed", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="kd_step.") as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        teacher = os.path.join(work, "teacher-resnet56.safetensors")
        subprocess.run([TORCH_PYTHON, TORCH_SIDE, "--write-teacher", teacher], check=True)
        print(f"# kdengine: {kdengine_version(args.build_dir)}")
        variants = [(KD_NAME, teacher)] + ([(STUDENT_NAME, None)] if args.profile else [])
        rows, ratios = [], []
        for run in range(1, args.runs + 1):
            for workload, weights in variants:
                if args.wait_quiet > 0:
                    wait_until_quiet(args.wait_quiet)
                kd, header, kd_others = run_kdengine(args, work, f"run{run}-{workload.split()[0]}",
                                                     weights)
                extra = ["--profile"] if args.profile and run == args.runs else []
                pt_rows, notes, pt_others = run_torch(args, weights, extra)
                if run == 1 and workload == KD_NAME:
                    print(f"# kdengine job: {header}")
                    for line in notes:
                        print(line)
                pt = pt_rows[0]
                noisy = max(kd_others, pt_others) > BUSY_WARNING
                ratio = kd["median_ms"] / pt["median_ms"]
                row = {"workload": workload, "run": run, "kdengine_ms": round(kd["median_ms"], 2),
                       "kdengine_min_ms": round(kd["min_ms"], 2),
                       "pytorch_ms": round(pt["median_ms"], 2),
                       "pytorch_min_ms": round(pt["min_ms"], 2), "ratio": round(ratio, 4),
                       "steps": kd["reps"], "threads": args.threads,
                       "pytorch_loader": args.loader,
                       "others_cpus": round(max(kd_others, pt_others), 2), "noisy": noisy}
                rows.append(row)
                if workload == KD_NAME:
                    ratios.append(ratio)
                print(f"run {run}: {workload}: kdengine {kd['median_ms']:.1f} ms "
                      f"(min {kd['min_ms']:.1f}), pytorch {pt['median_ms']:.1f} ms "
                      f"(min {pt['min_ms']:.1f}), ratio = kdengine / pytorch = "
                      f"{ratio:.2f}{'*' if noisy else ''} (others kept "
                      f"{max(kd_others, pt_others):.2f} CPUs busy)", flush=True)
                for part in pt_rows[1:]:
                    print(f"    pytorch {part['workload'].strip()}: {part['median_ms']:.1f} ms")

    if args.profile:
        kd_steps = {r["run"]: r for r in rows if r["workload"] == KD_NAME}
        for r in rows:
            if r["workload"] == STUDENT_NAME:
                k = kd_steps[r["run"]]
                print(f"run {r['run']}: teacher forward + kd loss (kd step - student step): "
                      f"kdengine {k['kdengine_ms'] - r['kdengine_ms']:.1f} ms, pytorch "
                      f"{k['pytorch_ms'] - r['pytorch_ms']:.1f} ms")
    if any(r["noisy"] for r in rows):
        print(f"# *: other processes kept more than {BUSY_WARNING} CPUs busy: a noisy timing")
    print(f"{KD_NAME}: ratio = kdengine / pytorch over {len(ratios)} runs: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
    for row in rows:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
