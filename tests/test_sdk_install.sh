#!/usr/bin/env bash
# The out-of-tree SDK, end to end: installs BUILD_DIR into a temporary
# staging root (make install DESTDIR=...), builds sdk/examples/mse_logits
# from a copy outside the source tree against the installed SDK only, and
# checks that the installed kdengine finds and lists the example loss and
# that the library loads and computes the loss.
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

# --- the library loads and computes the loss (the example's own check)
if make -C "$example" check CFLAGS="-O2 -Wall -Wextra -Werror" >"$tmp/check.log" 2>&1; then
    pass "example loads and computes the loss ($(grep -c '^ok' "$tmp/check.log") checks)"
else
    fail "example loads and computes the loss" "$(grep -v '^ok' "$tmp/check.log" | \
        tail -n 4 | tr '\n' ' ')"
fi

# --- a job that trains with the example loss (kdengine run)
if "$kdengine" run --help >/dev/null 2>&1; then
    fail "job with mse_logits" "the installed kdengine has a run command: this check must \
run a short job with the loss mse_logits and plugin_dirs [\"$example\"]"
else
    skip "job with mse_logits" "the installed kdengine has no run command"
fi

finish
