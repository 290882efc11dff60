#include "crd_scores.h"

#include <stdlib.h>
#include <string.h>

#include <kdengine/custom_op.h>
#include <kdengine/ops.h>

typedef struct scores_ctx {
    kd_tensor *bank, *idx;
    int64_t b, kk, d;
    int64_t n_own;
    int64_t *own;     /* [n_own] the rows that change before the backward, sorted */
    double *snapshot; /* [n_own, d] their values at the forward, in that order */
} scores_ctx;

static void free_ctx(void *p)
{
    scores_ctx *c = p;
    if (!c)
        return;
    free(c->own);
    free(c->snapshot);
    free(c);
}

static double element(const kd_tensor *t, int64_t i)
{
    return t->dtype == KD_F64 ? ((const double *)kd_tensor_data(t))[i]
                              : (double)((const float *)kd_tensor_data(t))[i];
}

static int compare_rows(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Row r of the bank as doubles: a pointer into it (f64) or into buf. */
static const double *bank_row(const kd_tensor *bank, int64_t r, int64_t d, double *buf)
{
    if (bank->dtype == KD_F64)
        return (const double *)kd_tensor_data(bank) + r * d;
    const float *f = (const float *)kd_tensor_data(bank) + r * d;
    for (int64_t j = 0; j < d; j++)
        buf[j] = f[j];
    return buf;
}

/* Row r of the bank as it was at the forward. */
static const double *old_row(const scores_ctx *c, int64_t r, double *buf)
{
    const int64_t *hit = bsearch(&r, c->own, (size_t)c->n_own, sizeof r, compare_rows);
    if (hit)
        return c->snapshot + (hit - c->own) * c->d;
    return bank_row(c->bank, r, c->d, buf);
}

static void store(kd_tensor *t, int64_t i, double v)
{
    if (t->dtype == KD_F64)
        ((double *)kd_tensor_data(t))[i] = v;
    else
        ((float *)kd_tensor_data(t))[i] = (float)v;
}

static kd_status scores_backward(void *p, const kd_tensor *grad_output, int n_inputs,
                                 kd_tensor *const *inputs, const kd_tensor *output,
                                 kd_tensor **grad_inputs)
{
    (void)n_inputs;
    (void)output;
    const scores_ctx *c = p;
    kd_tensor *go = (kd_tensor *)grad_output;
    kd_tensor *g = kd_contiguous(go->dtype == KD_F64 ? go : kd_cast(go, KD_F64));
    const int64_t shape[2] = {c->b, c->d};
    kd_tensor *gv = kd_tensor_empty(inputs[0]->dtype, KD_CPU, 2, shape);
    double *acc = calloc((size_t)c->d, sizeof *acc), *buf = malloc((size_t)c->d * sizeof *buf);
    if (!g || !gv || !acc || !buf) {
        free(acc);
        free(buf);
        return g && gv ? kd_error(KD_ERR_NOMEM, "crd scores: out of memory")
                       : kd_last_status();
    }
    const double *gd = kd_tensor_data(g);
    const int64_t *idx = kd_tensor_data(c->idx);
    for (int64_t b = 0; b < c->b; b++) {
        memset(acc, 0, (size_t)c->d * sizeof *acc);
        for (int64_t k = 0; k < c->kk; k++) {
            double w = gd[b * c->kk + k];
            const double *row = old_row(c, idx[b * c->kk + k], buf);
            for (int64_t j = 0; j < c->d; j++)
                acc[j] += w * row[j];
        }
        for (int64_t j = 0; j < c->d; j++)
            store(gv, b * c->d + j, acc[j]);
    }
    free(acc);
    free(buf);
    grad_inputs[0] = gv;
    return KD_OK;
}

static const kd_custom_op SCORES_OP = {sizeof(kd_custom_op), "crd_bank_scores", scores_backward,
                                       free_ctx};

kd_tensor *crd_bank_scores(kd_tensor *bank, kd_tensor *idx, kd_tensor *v, const int64_t *own,
                           int64_t n_own)
{
    v = kd_contiguous(v);
    if (!v)
        return NULL;
    scores_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        kd_error(KD_ERR_NOMEM, "crd scores: out of memory");
        return NULL;
    }
    c->bank = bank;
    c->idx = idx;
    c->b = v->shape[0];
    c->d = v->shape[1];
    c->kk = kd_tensor_numel(idx) / c->b;
    c->n_own = n_own;
    c->own = malloc((size_t)n_own * sizeof *c->own);
    c->snapshot = malloc((size_t)(n_own * c->d) * sizeof *c->snapshot);
    double *vd = malloc((size_t)(c->b * c->d) * sizeof *vd), *buf = malloc((size_t)c->d * sizeof *buf);
    const int64_t shape[2] = {c->b, c->kk};
    kd_tensor *out = kd_tensor_empty(v->dtype, KD_CPU, 2, shape);
    if (!c->own || !c->snapshot || !vd || !buf || !out) {
        free_ctx(c);
        free(vd);
        free(buf);
        kd_error(KD_ERR_NOMEM, "crd scores: out of memory");
        return NULL;
    }
    memcpy(c->own, own, (size_t)n_own * sizeof *own);
    qsort(c->own, (size_t)n_own, sizeof *c->own, compare_rows);
    for (int64_t r = 0; r < n_own; r++)
        memcpy(c->snapshot + r * c->d, bank_row(bank, c->own[r], c->d, buf),
               (size_t)c->d * sizeof *buf);
    for (int64_t i = 0; i < c->b * c->d; i++)
        vd[i] = element(v, i);
    const int64_t *ix = kd_tensor_data(idx);
    for (int64_t b = 0; b < c->b; b++)
        for (int64_t k = 0; k < c->kk; k++) {
            const double *row = bank_row(bank, ix[b * c->kk + k], c->d, buf), *x = vd + b * c->d;
            double s = 0;
            for (int64_t j = 0; j < c->d; j++)
                s += row[j] * x[j];
            store(out, b * c->kk + k, s);
        }
    free(vd);
    free(buf);
    return kd_custom_apply(&SCORES_OP, 1, &v, out, c);
}
