#!/usr/bin/env bash
# The out-of-tree SDK, end to end: installs BUILD_DIR into a temporary
# staging root (make install DESTDIR=...), builds sdk/examples/mse_logits
# from a copy outside the source tree against the installed SDK only, and
# checks that the installed kdengine finds and lists the example loss and
# that the library loads and computes the loss (the example's check, on the
# installed test kit).
#
# usage: tests/test_sdk_install.sh BUILD_DIR
# Prints "ok NAME", "FAIL NAME: why" and "skip NAME: why" lines and ends
# with "RESULT passed failed skipped", like the C tests.
set -u
build=$(cd "${1:?usage: tests/test_sdk_install.sh BUILD_DIR}" && pwd) || exit 2
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/kdsdk.XXXXXX) || exit 2
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0 skipped=0

pass() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "skip $1: $2"; skipped=$((skipped + 1)); }
finish() {
    echo "RESULT $passed $failed $skipped"
    [ "$failed" -eq 0 ]
    exit
}
# The last lines of a log, on one line, for a FAIL message.
tail_of() { tail -n 5 "$1" | tr '\n' ' '; }

# --- install into the staging root
root=$tmp/root
if make -C "$build" install DESTDIR="$root" >"$tmp/install.log" 2>&1; then
    pass "make install DESTDIR"
else
    fail "make install DESTDIR" "$(tail_of "$tmp/install.log")"
    finish
fi
pc=$(find "$root" -path '*/pkgconfig/kdengine.pc' | head -n 1)
kdengine=$(find "$root" -path '*/bin/kdengine' -type f | head -n 1)
if [ -z "$pc" ] || [ -z "$kdengine" ]; then
    fail "installed files" "no kdengine.pc or bin/kdengine under the staging root"
    finish
fi
libdir=$(dirname "$(dirname "$pc")")
# The .pc names the configured prefix; the sysroot points it into the
# staging root, as for a cross or staged install.
export PKG_CONFIG_PATH=$libdir/pkgconfig PKG_CONFIG_LIBDIR=$libdir/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$root
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
unset KDENGINE_PLUGIN_PATH CPATH C_INCLUDE_PATH LIBRARY_PATH
plugins=$(pkg-config --variable=plugindir kdengine)

if ldd "$kdengine" | grep -q "libkdcore.so.* => $libdir/"; then
    pass "installed kdengine runs on the installed libkdcore"
else
    fail "installed kdengine runs on the installed libkdcore" "$(ldd "$kdengine" | grep kdcore)"
fi

# --- the example, built from a copy outside the source tree
example=$tmp/mse_logits
cp -R "$src/sdk/examples/mse_logits" "$example"
rm -f "$example/mse_logits.so" "$example/check_mse_logits"
if make -C "$example" CFLAGS="-O2 -Wall -Wextra -Werror" >"$tmp/example.log" 2>&1; then
    pass "example builds against the installed SDK"
else
    fail "example builds against the installed SDK" "$(tail_of "$tmp/example.log")"
    finish
fi
if grep -qF -e "$src" -e "$build" "$tmp/example.log"; then
    fail "example build uses no source or build tree path" "$(grep -F -e "$src" -e "$build" \
        "$tmp/example.log" | head -n 1)"
else
    pass "example build uses no source or build tree path"
fi

# --- the installed kdengine finds it
listing=$("$kdengine" plugins --plugin-dir "$example" 2>&1)
if echo "$listing" | grep -qE '^loss +mse_logits +mse_logits@1\.0\.0 '; then
    pass "kdengine plugins --plugin-dir lists mse_logits"
else
    fail "kdengine plugins --plugin-dir lists mse_logits" "$(echo "$listing" | tr '\n' ' ')"
fi
listing=$(KDENGINE_PLUGIN_PATH=$example "$kdengine" plugins 2>&1)
if echo "$listing" | grep -qE '^loss +mse_logits '; then
    pass "KDENGINE_PLUGIN_PATH finds mse_logits"
else
    fail "KDENGINE_PLUGIN_PATH finds mse_logits" "$(echo "$listing" | tr '\n' ' ')"
fi
# Next to every installed plugin: no name collides and each one is listed.
listing=$("$kdengine" plugins --plugin-dir "$plugins" --plugin-dir "$example" 2>&1)
missing=""
for manifest in "$plugins"/*/manifest.json; do
    [ -f "$manifest" ] || continue
    name=$(basename "$(dirname "$manifest")")
    echo "$listing" | grep -qE " $name@" || missing="$missing $name"
done
if [ -n "$missing" ] || ! echo "$listing" | grep -qE '^loss +mse_logits '; then
    fail "mse_logits next to the installed plugins" "not listed:${missing:- mse_logits}: $(echo \
        "$listing" | head -n 3 | tr '\n' ' ')"
else
    pass "mse_logits next to the installed plugins"
fi
json=$("$kdengine" plugins --json --plugin-dir "$example" 2>&1)
if echo "$json" | grep -qF "\"library\": \"$example/mse_logits.so\""; then
    pass "kdengine plugins --json resolves the example's library"
else
    fail "kdengine plugins --json resolves the example's library" "$(echo "$json" | \
        grep -F mse_logits | tr '\n' ' ')"
fi

# --- the library loads and computes the loss (the example's own check,
# built on the installed test kit)
if make -C "$example" check CFLAGS="-O2 -Wall -Wextra -Werror" >"$tmp/check.log" 2>&1; then
    pass "example loads and computes the loss ($(grep -c '^ok' "$tmp/check.log") checks)"
else
    fail "example loads and computes the loss" "$(grep -v '^ok' "$tmp/check.log" | \
        tail -n 4 | tr '\n' ' ')"
fi
if ldd "$example/check_mse_logits" 2>/dev/null | grep -q "libkdtestkit.so.* => $libdir/" &&
    ! grep -qF -e "$src" -e "$build" "$tmp/check.log"; then
    pass "example check runs on the installed test kit"
else
    fail "example check runs on the installed test kit" "$(ldd "$example/check_mse_logits" \
        2>&1 | grep -e kdtestkit -e 'not found' | tr '\n' ' ')"
fi

# --- a job that trains with the example loss (kdengine run)
# A teacher trained for one epoch on 512 Fashion-MNIST images, exported,
# then a student distilled from it through mse_logits: the installed
# kdengine loads the out-of-tree plugin from the job's plugin_dirs.
fmnist=/usr/share/datasets/fashion-mnist
job() { # OUTPUT TEACHER_JSON LOSSES_JSON
    cat <<JOB
{"seed": 1, "threads": 2, "output": "$tmp/$1",
 "plugin_dirs": ["$plugins", "$example"],
 "data": {"train": {"dataset": {"name": "idx", "images": "$fmnist/train-images-idx3-ubyte.gz",
                                "labels": "$fmnist/train-labels-idx1-ubyte.gz"},
                    "transforms": [{"name": "normalize", "mean": [0.286], "std": [0.353]}],
                    "batch_size": 64, "subset": 512, "workers": 1}},
 $2
 "student": {"model": "resnet8", "num_classes": 10, "in_chans": 1},
 "losses": [$3],
 "optim": {"name": "sgd", "lr": 0.05},
 "schedule": {"name": "constant", "epochs": 1},
 "eval": {"every_epochs": 0}, "log": {"every_steps": 1}}
JOB
}
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
    skip "job with mse_logits" "no Fashion-MNIST in $fmnist (scripts/setup installs it)"
    finish
fi
job teacher "" '{"name": "ce"}' >"$tmp/teacher.json"
job student "\"teacher\": {\"model\": \"resnet8\", \"num_classes\": 10, \"in_chans\": 1, \"weights\": \"$tmp/teacher.safetensors\"}," \
    '{"name": "ce", "weight": 0.5}, {"name": "mse_logits", "weight": 0.5}' >"$tmp/student.json"
ckpt=$tmp/teacher/checkpoints/step-000000008.safetensors
if "$kdengine" run "$tmp/teacher.json" >"$tmp/teacher.log" 2>&1 &&
    "$kdengine" export "$tmp/teacher.json" --weights "$ckpt" --out "$tmp/teacher.safetensors" \
        >>"$tmp/teacher.log" 2>&1 &&
    "$kdengine" run "$tmp/student.json" >"$tmp/student.log" 2>&1 &&
    grep -q '"losses\[1\]":[0-9.e-]*[1-9]' "$tmp/student/metrics.jsonl"; then
    pass "a job distils through mse_logits with the installed kdengine"
else
    fail "a job distils through mse_logits with the installed kdengine" \
        "$(tail_of "$tmp/teacher.log") $(tail_of "$tmp/student.log" 2>/dev/null)"
fi

finish
