#!/usr/bin/env bash
# libkdcore.so exports the SDK and nothing else: the dynamic symbols it
# defines are exactly the functions sdk/include/kdengine/*.h declare with
# KD_API, and every function those headers declare carries the mark. An
# internal symbol exported by mistake is one a plugin could start using.
#
# usage: tests/test_exports.sh BUILD_DIR
# Prints "ok NAME" and "FAIL NAME: why" lines and ends with
# "RESULT passed failed skipped", like the C tests.
set -u
build=${1:?usage: tests/test_exports.sh BUILD_DIR}
headers=$(cd "$(dirname "$0")/../sdk/include/kdengine" && pwd) || exit 2
lib=$build/.libs/libkdcore.so
tmp=$(mktemp -d /tmp/kdexports.XXXXXX) || exit 2
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

check() { # NAME FILE_OF_OFFENDERS WHY
    if [ -s "$2" ]; then
        echo "FAIL $1: $3: $(tr '\n' ' ' <"$2")"
        failed=$((failed + 1))
    else
        echo "ok   $1"
        passed=$((passed + 1))
    fi
}

# The declarations follow one style: KD_API, the return type and the name
# on the line that opens the declaration. A KD_API line this cannot read
# fails below rather than dropping out of the list.
grep -h '^KD_API' "$headers"/*.h >"$tmp/marked"
sed -n 's/^KD_API [^(]*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$tmp/marked" | sort >"$tmp/declared"
sed -n '/^KD_API [^(]*[ *][A-Za-z_][A-Za-z0-9_]*(/!p' "$tmp/marked" >"$tmp/unread"
check "every KD_API line names a function" "$tmp/unread" "cannot read"

# kd_plugin_entry is declared for plugins to define, not for libkdcore;
# static inline helpers are compiled into whoever includes them.
grep -hE '^[a-z_][a-z0-9_ ]*[ *]kd_[a-z0-9_]+\(' "$headers"/*.h |
    grep -vE '^(typedef|KD_API|static) |[ *]kd_plugin_entry\(' >"$tmp/unmarked"
check "every function the SDK headers declare is KD_API" "$tmp/unmarked" "not marked"

if [ ! -f "$lib" ]; then
    echo "FAIL libkdcore.so: $lib is missing"
    failed=$((failed + 1))
else
    nm -D --defined-only "$lib" | awk '{print $NF}' | sort >"$tmp/exported"
    comm -13 "$tmp/declared" "$tmp/exported" >"$tmp/stray"
    comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/missing"
    check "libkdcore.so exports nothing the SDK does not declare" "$tmp/stray" "exported"
    check "libkdcore.so exports every KD_API function" "$tmp/missing" "not exported"
fi

# libkdtestkit.so (host code for plugin authors' tests) exports exactly the
# KD_TESTKIT_API functions of testkit.h, and holds no core: it runs on
# libkdcore.so.
kit=$build/.libs/libkdtestkit.so
sed -n 's/^KD_TESTKIT_API [^(]*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$headers"/testkit.h |
    sort >"$tmp/kit_declared"
if [ ! -f "$kit" ]; then
    echo "FAIL libkdtestkit.so: $kit is missing"
    failed=$((failed + 1))
else
    nm -D --defined-only "$kit" | awk '{print $NF}' | sort >"$tmp/kit_exported"
    comm -3 "$tmp/kit_declared" "$tmp/kit_exported" >"$tmp/kit_diff"
    check "libkdtestkit.so exports exactly testkit.h's KD_TESTKIT_API functions" \
        "$tmp/kit_diff" "differs (declared or exported only)"
    nm --defined-only "$kit" | awk '{print $NF}' | sort -u | comm -12 "$tmp/declared" - \
        >"$tmp/kit_core"
    check "libkdtestkit.so holds no core" "$tmp/kit_core" "defines SDK functions"
fi

# One core per process: a binary that runs on libkdcore.so (and so may load
# plugins, which bring it too) must not also hold the core's objects, or the
# two copies would keep separate errors, scopes and allocators.
: >"$tmp/twice"
for bin in "$build"/.libs/* "$build"/tests/test_* "$build"/tests/.libs/* "$build"/bench/bench_*; do
    [ -f "$bin" ] && [ "$(head -c 4 "$bin")" = $'\x7fELF' ] || continue
    case $bin in *.so | *.so.*) continue ;; esac
    readelf -d "$bin" | grep -q 'NEEDED.*\[libkdcore\.so' || continue
    nm --defined-only "$bin" 2>/dev/null | awk '{print $NF}' | sort -u |
        comm -12 "$tmp/declared" - | head -n 1 | sed "s|^|${bin#"$build"/} (|; s|$|)|" >>"$tmp/twice"
done
check "no binary on libkdcore.so holds a second core" "$tmp/twice" "defines SDK functions"
echo "RESULT $passed $failed 0"
[ "$failed" -eq 0 ]
