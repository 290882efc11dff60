#!/usr/bin/env bash
# FKD's economics on Fashion-MNIST: one training epoch of online KD (the
# teacher runs every step), of the same student from stored labels (the
# fkd loss, no teacher) and of the student alone (ce), each as `kdengine
# run` times it ("done: ... img/s"), for the ResNet-56 -> ResNet-20 and
# resnet32x4 -> resnet8x4 pairs. The `kdengine label` pass that makes the
# store is timed too: it is paid once, for every student trained from it.
# Teachers are the seed's initial weights (`kdengine export`): their values
# do not change the time.
#
# usage: bench/fkd_speedup.sh BUILD_DIR [--subset N] [--threads N] [--out DIR]
#
# --subset: training samples (default 10000, the examples' subset);
# --threads: for every run (default 2); --out: where the runs and stores
# go (default: a new folder under /tmp). Jobs: examples/fashion-mnist/kd.json
# and fkd.json with the models and lengths set on the command line.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '10,15p' "$0" | sed 's/^# //' >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
subset=10000
threads=2
out=""
while [ $# -gt 0 ]; do
    case $1 in
        --subset) subset=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "fkd_speedup.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
top=$(cd "$(dirname "$0")/.." && pwd)
out=${out:-$(mktemp -d /tmp/kdfkd-bench.XXXXXX)}
mkdir -p "$out"
export KDENGINE_PLUGIN_PATH=$build/plugin-dir
kdengine=$build/kdengine
examples=$top/examples/fashion-mnist
common=(--set "data.train.subset=$subset" --set schedule.epochs=1 --set eval.every_epochs=0
        --set "threads=$threads")

# img/s from a run's "done: N steps in T s (R img/s)" line.
rate() { sed -n 's/^done: .*(\([0-9.]*\) img\/s).*/\1/p' "$1" | tail -n 1; }

printf '%-22s %12s %12s %12s %12s %9s\n' "pair" "label img/s" "kd img/s" "fkd img/s" \
    "alone img/s" "fkd/kd"
for pair in resnet56:resnet20 resnet32x4:resnet8x4; do
    teacher=${pair%%:*} student=${pair##*:}
    "$kdengine" export "$examples/kd.json" --set "student.model=$teacher" \
        --out "$out/$teacher.safetensors" >/dev/null
    models=(--set "teacher.model=$teacher" --set "teacher.weights=$out/$teacher.safetensors"
            --set "student.model=$student")
    labels=$out/labels-$teacher
    t0=$(date +%s.%N)
    "$kdengine" label "$examples/kd.json" "${models[@]}" "${common[@]}" --epochs 1 \
        --out "$labels" >"$out/label-$teacher.log" 2>&1
    t1=$(date +%s.%N)
    label_rate=$(sed -n 's/^label epoch 1: .*(\([0-9.]*\) img\/s).*/\1/p' \
        "$out/label-$teacher.log")
    "$kdengine" run "$examples/kd.json" "${models[@]}" "${common[@]}" \
        --set "output=$out/kd-$teacher" >"$out/kd-$teacher.log" 2>&1
    "$kdengine" run "$examples/fkd.json" --set "student.model=$student" "${common[@]}" \
        --set "losses[1].labels=$labels" --set "output=$out/fkd-$teacher" \
        >"$out/fkd-$teacher.log" 2>&1
    "$kdengine" run "$examples/fkd.json" --set "student.model=$student" "${common[@]}" \
        --set 'losses=[{"name": "ce"}]' --set "output=$out/alone-$student" \
        >"$out/alone-$student.log" 2>&1
    kd=$(rate "$out/kd-$teacher.log") fkd=$(rate "$out/fkd-$teacher.log")
    alone=$(rate "$out/alone-$student.log")
    printf '%-22s %12s %12s %12s %12s %8.2fx\n' "$teacher -> $student" "$label_rate" "$kd" \
        "$fkd" "$alone" "$(echo "$fkd / $kd" | bc -l)"
    echo "  (label pass $(echo "$t1 - $t0" | bc -l | cut -c1-6) s; logs in $out)"
done
