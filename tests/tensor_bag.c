#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "harness.h"
#include "tensor_bag.h"

bool kt_bag_add(kt_bag *b, const kd_tensor *t, const char *fmt, ...)
{
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        char **names = realloc(b->names, (size_t)cap * sizeof *names);
        if (names)
            b->names = names;
        kd_tensor **ts = names ? realloc(b->t, (size_t)cap * sizeof *ts) : NULL;
        if (!ts)
            return false;
        b->t = ts;
        b->cap = cap;
    }
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char *owned = strdup(name);
    if (!owned)
        return false;
    b->names[b->n] = owned;
    b->t[b->n++] = t ? kd_tensor_keep(kd_tensor_to_device((kd_tensor *)t, KD_CPU)) : NULL;
    return true;
}

bool kt_bag_add_value(kt_bag *b, double v, const char *name)
{
    const int64_t one = 1;
    kd_tensor *t = kd_tensor_from_data(KD_F64, 1, &one, &v);
    bool ok = t && kt_bag_add(b, t, "%s", name);
    kd_tensor_free(t);
    return ok;
}

void kt_bag_free(kt_bag *b)
{
    for (int i = 0; i < b->n; i++) {
        free(b->names[i]);
        kd_tensor_free(b->t[i]);
    }
    free(b->names);
    free(b->t);
    memset(b, 0, sizeof *b);
}

bool kt_bag_run_reference(const char *what, const char *script, const kt_bag *in, int nmeta,
                          const char **meta, kd_safetensors **ref)
{
    *ref = NULL;
    char cmd[1536];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    if (system(cmd) != 0) {
        kt_skip(what, "torch is not importable by %s", KD_TORCH_PYTHON);
        return false;
    }
    char dir[] = "/tmp/kdparity.XXXXXX", in_path[128], out_path[128], path[512];
    if (!mkdtemp(dir)) {
        kt_fail(what, "cannot make a temporary directory");
        return false;
    }
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
    kt_source_path(script, path, sizeof path);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, path, in_path, out_path);
    if (kd_safetensors_save(in_path, in->n, (const char *const *)in->names, in->t, nmeta, meta) !=
        KD_OK)
        kt_fail(what, "writing %s: %s", in_path, kd_last_error());
    else if (system(cmd) != 0)
        kt_fail(what, "the torch reference failed: %s", cmd);
    else if (kd_safetensors_open(out_path, ref) != KD_OK)
        kt_fail(what, "reading the torch results: %s", kd_last_error());
    unlink(in_path);
    unlink(out_path);
    rmdir(dir);
    return *ref != NULL;
}
