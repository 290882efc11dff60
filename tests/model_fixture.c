/* Model plugin instances in tests (see model_fixture.h). */
#include <string.h>

#include "model_fixture.h"

bool kt_model_open(kt_model *m, const char *provider, const char *params_json, kd_dtype dtype,
                   uint64_t seed, kd_status *st)
{
    memset(m, 0, sizeof *m);
    const kd_vtable_header *h = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_MODEL, provider, &h);
    kd_params *p = e ? kt_params(e, params_json) : NULL;
    if (!p) {
        kd_status s = kd_error(KD_ERR_INVALID, "no provider %s, or its params %s do not "
                               "validate", provider, params_json);
        if (st)
            *st = s;
        return false;
    }
    m->vt = (const kd_model_vtable *)h;
    kd_create_args args = kt_create_args(e, p, seed);
    args.dtype = dtype;
    kd_status s = m->vt->create(&args, &m->self);
    kd_params_free(p);
    kd_tensor_list tl = {0};
    kd_tap_list taps = {0};
    if (s == KD_OK)
        s = m->vt->tensors(m->self, &tl);
    if (s == KD_OK)
        s = m->vt->taps(m->self, &taps);
    if (s == KD_OK && (tl.elem_size != sizeof(kd_named_tensor) ||
                       taps.elem_size != sizeof(kd_tap_info) || taps.n > KT_MAX_TAPS))
        s = kd_error(KD_ERR_FORMAT, "%s: list elements of another size, or over %d taps",
                     provider, KT_MAX_TAPS);
    if (st)
        *st = s;
    if (s != KD_OK) {
        kt_model_close(m);
        return false;
    }
    m->n_tensors = tl.n;
    m->tensors = tl.items;
    m->n_taps = taps.n;
    m->taps = taps.items;
    return true;
}

void kt_model_close(kt_model *m)
{
    if (m->self)
        m->vt->destroy(m->self);
    m->self = NULL;
}

int kt_model_tap(const kt_model *m, const char *name)
{
    for (int i = 0; i < m->n_taps; i++)
        if (strcmp(m->taps[i].name, name) == 0)
            return i;
    return -1;
}

const kd_named_tensor *kt_model_tensor(const kt_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

kd_status kt_model_run(const kt_model *m, int from, kd_tensor *input, bool training,
                       const bool *want, kd_tensor **taps)
{
    bool all[KT_MAX_TAPS];
    for (int i = 0; i < m->n_taps; i++) {
        all[i] = true;
        taps[i] = NULL;
    }
    kd_forward_args a = {sizeof a, input, training, kd_rng_make(0, 0, 0), want ? want : all,
                         taps};
    return from < 0 ? m->vt->forward(m->self, &a) : m->vt->forward_from(m->self, from, &a);
}

int64_t kt_model_params(const kt_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].flags & KD_TENSOR_PARAM)
            n += kd_tensor_numel(m->tensors[i].tensor);
    return n;
}
