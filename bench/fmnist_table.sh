#!/usr/bin/env bash
# kdengine vs the same recipe in PyTorch (bench/fmnist_recipe.py) on the
# Fashion-MNIST example jobs: final top-1 on the 10,000 test images, per
# seed, then a markdown table of mean and spread over the seeds.
#
# usage: bench/fmnist_table.sh BUILD_DIR [--seeds "0 1 2"] [--threads N]
#            [--out DIR] [--only-kdengine | --only-pytorch]
#            [--epochs N] [--subset N] [--teacher FILE] [--same-init]
#            [--same-data] [--jobs "student kd kd-logit-stand"]
#
# --epochs, --subset and --teacher override the jobs' schedule.epochs,
# data.train.subset and teacher.weights on both sides (smoke tests).
# --same-init starts PyTorch's student from kdengine's initial weights for
# the seed (`kdengine export` without --weights), so that only the data
# order and augmentation draws differ between the engines; kdengine's own
# runs are the same bits either way. --same-data makes PyTorch draw the
# shuffle order, crops and flips as kdengine's loader does
# (fmnist_recipe.py --data-stream kdengine); with --same-init the two
# engines then differ only in their arithmetic.
#
# Runs are sequential (both engines on --threads, 2 by default); with the
# teacher trained (examples/fashion-mnist/teacher.safetensors) a full table
# is 3 jobs x 3 seeds x 2 engines of 10 epochs each. Every run's result
# stays in --out (default: a new folder under /tmp), one JSON line per run in
# results.jsonl, so a table can be rebuilt from it: runs whose result is
# already there with the same settings are not repeated.
set -euo pipefail

usage() {
    sed -n '6,10p' "$0" | sed 's/^# //' >&2
    exit 2
}

[ $# -ge 1 ] || usage
build=$(cd "$1" && pwd)
shift
seeds="0 1 2"
threads=2
out=""
engines="kdengine pytorch"
epochs=job
subset=job
kd_sets=()
py_opts=()
teacher=examples/fashion-mnist/teacher.safetensors
same_init=no
same_data=no
jobs="student kd kd-logit-stand"
while [ $# -gt 0 ]; do
    case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --only-kdengine) engines=kdengine; shift ;;
    --only-pytorch) engines=pytorch; shift ;;
    --epochs)
        epochs=$2
        kd_sets+=(--set "schedule.epochs=$2")
        py_opts+=(--epochs "$2")
        shift 2
        ;;
    --subset)
        subset=$2
        kd_sets+=(--set "data.train.subset=$2")
        py_opts+=(--subset "$2")
        shift 2
        ;;
    --teacher) teacher=$2; shift 2 ;;
    --same-init) same_init=yes; shift ;;
    --same-data)
        same_data=yes
        py_opts+=(--data-stream kdengine)
        shift
        ;;
    --jobs) jobs=$2; shift 2 ;;
    *) usage ;;
    esac
done

[ ! -f "$teacher" ] || teacher=$(realpath "$teacher")
[ -z "$out" ] || out=$(realpath -m "$out")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=/usr/bin/python3
if [ ! -f "$teacher" ]; then
    echo "fmnist_table: $teacher is missing; train it first:" >&2
    echo "  $build/kdengine run examples/fashion-mnist/teacher.json" >&2
    echo "  $build/kdengine export examples/fashion-mnist/teacher.json \\" >&2
    echo "      --weights runs/fashion-mnist/teacher/best.safetensors --out $teacher" >&2
    exit 1
fi

[ -n "$out" ] || out=$(mktemp -d /tmp/fmnist-table.XXXXXX)
mkdir -p "$out"
results=$out/results.jsonl
touch "$results"
# a result is reused only for the same settings
config="epochs=$epochs subset=$subset threads=$threads teacher=$teacher same_init=$same_init"
[ "$same_data" = no ] || config="$config same_data=yes"
export KDENGINE_PLUGIN_PATH=$build/plugin-dir

# and the same job file (a recipe edited since is run again)
job_md5() { md5sum <"examples/fashion-mnist/$1.json" | cut -c1-12; }

have() { # engine job seed
    "$py" - "$results" "$1" "$2" "$3" "$config" "$(job_md5 "$2")" <<'EOF'
import json, sys
path, engine, job, seed, config, md5 = sys.argv[1:]
for line in open(path):
    r = json.loads(line)
    if (r["engine"], r["name"], r["seed"], r["config"], r.get("job_md5")) == \
            (engine, job, int(seed), config, md5):
        sys.exit(0)
sys.exit(1)
EOF
}

record() { # engine job seed top1 seconds
    "$py" -c 'import json, sys
e, j, s, t, sec, c, md5 = sys.argv[1:]
print(json.dumps({"engine": e, "name": j, "seed": int(s), "top1": float(t),
                  "seconds": float(sec), "config": c, "job_md5": md5}))' \
        "$@" "$config" "$(job_md5 "$2")" >>"$results"
}

echo "# results in $out" >&2
for seed in $seeds; do
    init_opt=()
    if [ "$same_init" = yes ]; then
        # the three jobs share the student, so one file per seed
        init=$out/init-$seed.safetensors
        "$build/kdengine" export examples/fashion-mnist/student.json --set seed="$seed" \
            --out "$init" >/dev/null || { echo "fmnist_table: export of the initial student failed" >&2; exit 1; }
        init_opt=(--student-weights "$init")
    fi
    for job in $jobs; do
        file=examples/fashion-mnist/$job.json
        teacher_set=()
        teacher_opt=()
        if "$py" -c 'import json, sys; sys.exit("teacher" not in json.load(open(sys.argv[1])))' \
            "$file"; then
            teacher_set=(--set "teacher.weights=$teacher")
            teacher_opt=(--teacher-weights "$teacher")
        fi
        for engine in $engines; do
            if have "$engine" "$job" "$seed"; then
                continue
            fi
            log=$out/$engine-$job-$seed.log
            echo "# $engine $job seed $seed (log: $log)" >&2
            start=$(date +%s.%N)
            if [ "$engine" = kdengine ]; then
                run=$out/$job-$seed
                "$build/kdengine" run "$file" --set seed="$seed" --set threads="$threads" \
                    --set output="$run" "${teacher_set[@]}" "${kd_sets[@]}" \
                    >"$log" 2>&1 || { echo "fmnist_table: kdengine failed, see $log" >&2; exit 1; }
                top1=$("$py" -c 'import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
print([l for l in lines if l.get("type") == "eval"][-1]["top1"])' "$run/metrics.jsonl")
            else
                "$py" bench/fmnist_recipe.py "$file" --seed "$seed" --threads "$threads" \
                    "${teacher_opt[@]}" "${init_opt[@]}" "${py_opts[@]}" \
                    >"$out/pytorch-$job-$seed.json" 2>"$log" ||
                    { echo "fmnist_table: pytorch failed, see $log" >&2; exit 1; }
                top1=$("$py" -c 'import json, sys
print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["top1"])' \
                    "$out/pytorch-$job-$seed.json")
            fi
            seconds=$("$py" -c "import sys; print(round($(date +%s.%N) - $start, 1))")
            echo "#   top-1 $top1 ($seconds s)" >&2
            record "$engine" "$job" "$seed" "$top1" "$seconds"
        done
    done
done

teacher_kd=$("$build/kdengine" eval examples/fashion-mnist/kd.json --teacher --json \
    --set teacher.weights="$teacher")
teacher_py=$("$py" bench/fmnist_recipe.py examples/fashion-mnist/kd.json --eval-teacher \
    --teacher-weights "$teacher" --threads "$threads")
teacher_top1=$("$py" -c 'import json, sys
print(" ".join(str(json.loads(a)["top1"]) for a in sys.argv[1:]))' "$teacher_kd" "$teacher_py")

md5s=$(for job in $jobs; do echo "$job=$(job_md5 "$job")"; done)
"$py" - "$results" "$seeds" "$jobs" "$teacher_top1" "$threads" "$teacher" "$config" "$md5s" <<'EOF'
import json, statistics, sys
path, seeds, jobs, teacher, threads, teacher_file, config, md5s = sys.argv[1:]
seeds = [int(s) for s in seeds.split()]
md5 = dict(line.split("=") for line in md5s.split())
rows = [r for r in map(json.loads, open(path))
        if r["config"] == config and r.get("job_md5") == md5.get(r["name"])]


def cell(engine, job):
    v = [r["top1"] for r in rows if (r["engine"], r["name"]) == (engine, job) and
         r["seed"] in seeds]
    if not v:
        return None, "-"
    m = statistics.mean(v)
    sec = statistics.mean(r["seconds"] for r in rows if (r["engine"], r["name"]) == (engine, job)
                          and r["seed"] in seeds)
    if len(v) == 1:
        return m, f"{m:.2f} (1 seed, {sec:.0f} s)"
    sd = statistics.stdev(v)
    return m, f"{m:.2f} ± {sd:.2f} [{min(v):.2f}, {max(v):.2f}] ({sec:.0f} s)"


print(f"Fashion-MNIST test top-1 (%) after the examples/fashion-mnist jobs ({config}), "
      f"seeds {' '.join(map(str, seeds))}: mean ± sample std [min, max] (mean seconds per run)")
print()
print("| job | kdengine | pytorch | difference (kdengine - pytorch) |")
print("|---|---|---|---|")
for job in jobs.split():
    (mk, k), (mp, p) = cell("kdengine", job), cell("pytorch", job)
    diff = f"{mk - mp:+.2f}" if mk is not None and mp is not None else "-"
    print(f"| {job} | {k} | {p} | {diff} |")
print()
tk, tp = (float(t) for t in teacher.split())
print(f"Teacher (ResNet-20, {teacher_file}): top-1 {tk:.2f}% "
      f"(kdengine eval), {tp:.2f}% (the same weights in PyTorch)")
EOF
