#!/usr/bin/env bash
# Data-parallel scaling on the CPU: one training epoch of the example
# student (examples/fashion-mnist/student.json) on 1 process and on N
# processes (`kdengine run --nproc N`, MPI) with the same global batch and
# the same threads per process, each as `kdengine run` times it ("done:
# ... img/s", the global batch's samples); prints the speed-up and the
# scaling efficiency (speed-up / N). On a machine with fewer than N x
# threads cores the processes share cores and the efficiency says so.
#
# usage: bench/dist_scaling.sh BUILD_DIR [--nproc N] [--subset N] [--threads N] [--out DIR]
#
# --nproc: processes of the parallel run (default 2); --subset: training
# samples (default 10000); --threads: per process (default 1); --out:
# where the runs go (default: a new folder under /tmp). As root, Open MPI
# needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (set here).
set -euo pipefail

[ $# -ge 1 ] || { sed -n '10,16p' "$0" | sed 's/^# //' >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
nproc=2
subset=10000
threads=1
out=""
while [ $# -gt 0 ]; do
    case $1 in
        --nproc) nproc=$2; shift 2 ;;
        --subset) subset=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "dist_scaling.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
top=$(cd "$(dirname "$0")/.." && pwd)
out=${out:-$(mktemp -d /tmp/kddist-bench.XXXXXX)}
mkdir -p "$out"
export KDENGINE_PLUGIN_PATH=$build/plugin-dir
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
kdengine=$build/kdengine
job=$top/examples/fashion-mnist/student.json
common=(--set "data.train.subset=$subset" --set schedule.epochs=1 --set eval.every_epochs=0
        --set "threads=$threads")

# img/s from a run's first "done: N steps in T s (R img/s)" line (rank 0's).
rate() { sed -n 's/^done: .*(\([0-9.]*\) img\/s).*/\1/p' "$1" | head -n 1; }

"$kdengine" run "$job" "${common[@]}" --set "output=$out/one" >"$out/one.log" 2>&1
"$kdengine" run "$job" "${common[@]}" --set "output=$out/many" --nproc "$nproc" \
    >"$out/many.log" 2>&1
one=$(rate "$out/one.log") many=$(rate "$out/many.log")
speedup=$(echo "$many / $one" | bc -l)
printf '%-12s %12s %12s %9s %11s\n' "threads/proc" "1 proc img/s" "$nproc proc img/s" \
    "speed-up" "efficiency"
printf '%-12s %12s %12s %8.2fx %10.0f%%\n' "$threads" "$one" "$many" "$speedup" \
    "$(echo "100 * $speedup / $nproc" | bc -l)"
echo "  ($(nproc) cores here; logs in $out)"
