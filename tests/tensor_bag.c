#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
