/* CRD's global batch over several processes (crd_ranks.h). Everything goes
 * through the host's all_gather and all_reduce on float64 tensors: counts
 * and dataset indices are exact in float64 below 2^53, rng words below
 * 2^32. all_gather wants one shape on every rank, so each rank sends its
 * share padded to the largest, and the padding is dropped here. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>

#include "crd_ranks.h"

/* [rows, cols] (cols 0: [rows]) float64 zeros, scope-owned. */
static kd_tensor *zeros(int64_t rows, int64_t cols)
{
    const int64_t shape[2] = {rows, cols};
    return kd_tensor_zeros(KD_F64, KD_CPU, cols ? 2 : 1, shape);
}

static kd_status gather(const kd_host_services *host, kd_tensor *t, kd_tensor **out,
                        const char *who, const char *what)
{
    kd_status st = host->all_gather(host->host, t, out);
    return st == KD_OK ? st : kd_error_wrap(st, "%s: gathering the ranks' %s", who, what);
}

kd_status crd_batch_gather(const kd_host_services *host, const int64_t *index, int64_t n,
                           crd_batch *out, const char *who)
{
    *out = (crd_batch){0};
    int world = host->world_size;
    kd_tensor *count = zeros(1, 0), *counts = NULL;
    if (!count)
        return kd_error_wrap(kd_last_status(), "%s", who);
    *(double *)kd_tensor_data(count) = (double)n;
    kd_status st = gather(host, count, &counts, who, "batch sizes");
    if (st != KD_OK)
        return st;
    out->shares = malloc((size_t)world * sizeof *out->shares);
    if (!out->shares)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", who);
    const double *c = kd_tensor_data(counts);
    for (int r = 0; r < world; r++) {
        int64_t share = out->shares[r] = (int64_t)c[r];
        if (r < host->rank)
            out->offset += share;
        out->total += share;
        out->most = share > out->most ? share : out->most;
    }
    kd_tensor *mine = zeros(out->most, 0), *all = NULL;
    if (!mine)
        return kd_error_wrap(kd_last_status(), "%s", who);
    for (int64_t i = 0; i < n; i++)
        ((double *)kd_tensor_data(mine))[i] = (double)index[i];
    if ((st = gather(host, mine, &all, who, "dataset indices")) != KD_OK)
        return st;
    out->index = malloc((size_t)(out->total ? out->total : 1) * sizeof *out->index);
    if (!out->index)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for %lld dataset indices", who,
                        (long long)out->total);
    const double *a = kd_tensor_data(all);
    for (int64_t r = 0, at = 0; r < world; r++)
        for (int64_t i = 0; i < out->shares[r]; i++)
            out->index[at++] = (int64_t)a[r * out->most + i];
    return KD_OK;
}

void crd_batch_free(crd_batch *b)
{
    free(b->shares);
    free(b->index);
    *b = (crd_batch){0};
}

kd_tensor *crd_batch_rows(const kd_host_services *host, const crd_batch *b, kd_tensor *v,
                          const char *who)
{
    int64_t n = v->shape[0], d = v->shape[1];
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *v64 = kd_contiguous(kd_cast(v, KD_F64));
    kd_tensor *mine = v64 ? zeros(b->most, d) : NULL, *all = NULL;
    kd_tensor *rows = mine ? zeros(b->total, d) : NULL;
    kd_set_grad_enabled(grad);
    if (!rows) {
        kd_error_wrap(kd_last_status(), "%s", who);
        return NULL;
    }
    memcpy(kd_tensor_data(mine), kd_tensor_data(v64), (size_t)(n * d) * sizeof(double));
    if (gather(host, mine, &all, who, "embeddings") != KD_OK)
        return NULL;
    /* rank r's rows start at r * most; its padding is dropped */
    const double *a = kd_tensor_data(all);
    double *dst = kd_tensor_data(rows);
    for (int64_t r = 0, at = 0; r < host->world_size; r++) {
        memcpy(dst + at * d, a + r * b->most * d, (size_t)(b->shares[r] * d) * sizeof(double));
        at += b->shares[r];
    }
    if (v->dtype == KD_F64)
        return rows;
    grad = kd_set_grad_enabled(false);
    kd_tensor *cast = kd_cast(rows, v->dtype);
    kd_set_grad_enabled(grad);
    return cast;
}

kd_status crd_sum_over_ranks(const kd_host_services *host, double *values, int n,
                             const char *who)
{
    kd_tensor *t = zeros(n, 0);
    if (!t)
        return kd_error_wrap(kd_last_status(), "%s", who);
    memcpy(kd_tensor_data(t), values, (size_t)n * sizeof *values);
    kd_status st = host->all_reduce(host->host, t, KD_REDUCE_OP_SUM);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s: summing over the ranks", who);
    memcpy(values, kd_tensor_data(t), (size_t)n * sizeof *values);
    return KD_OK;
}

kd_status crd_rng_from_rank0(const kd_host_services *host, kd_rng *rng, const char *who)
{
    /* rank 0's words, zeros elsewhere: their sum is rank 0's rng */
    double w[6] = {0};
    if (host->rank == 0) {
        w[0] = rng->key[0], w[1] = rng->key[1];
        w[2] = rng->stream[0], w[3] = rng->stream[1];
        w[4] = (double)(uint32_t)rng->counter, w[5] = (double)(rng->counter >> 32);
    }
    kd_status st = crd_sum_over_ranks(host, w, 6, who);
    if (st != KD_OK)
        return st;
    rng->key[0] = (uint32_t)w[0], rng->key[1] = (uint32_t)w[1];
    rng->stream[0] = (uint32_t)w[2], rng->stream[1] = (uint32_t)w[3];
    rng->counter = (uint64_t)w[4] | (uint64_t)w[5] << 32;
    return KD_OK;
}
