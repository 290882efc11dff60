/* Normalisation: batch norm, layer norm over the last dim, layer norm over
 * the channels of NCHW (ConvNeXt's LayerNorm2d) and group norm. The fronts:
 * checks, affine parameters, running statistics and the autograd record;
 * the kernels are in core/backend/cpu/norm.c.
 *
 * Every input is read as [N, C, S] (S = the product of the dims after C;
 * layer norm over the last dim is N rows of C channels with S = 1). Mean
 * and 1/std are kept per normalised group (f64) for the backward pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

typedef enum norm_kind { NORM_GROUP, NORM_CHANNELS } norm_kind;

/* ------------------------------------------------------------ shared */

/* An affine parameter as a contiguous [C] array of x's dtype: the given
 * tensor, or `fill` everywhere when it is NULL. */
static kd_tensor *affine_param(const char *op, const char *what, kd_tensor *p,
                               const kd_tensor *x, int64_t C, double fill)
{
    if (!p)
        return kd_tensor_full(x->dtype, KD_CPU, 1, &C, fill);
    if (kd_check_same(op, x, p) != KD_OK)
        return NULL;
    if (kd_tensor_numel(p) != C || p->ndim != 1) {
        char s[96], xs[96];
        kd_error(KD_ERR_INVALID, "%s: %s %s for input %s (expected [%lld])", op, what,
                 kd_shape_str(p, s, sizeof s), kd_shape_str(x, xs, sizeof xs), (long long)C);
        return NULL;
    }
    return kd_contiguous_raw(p);
}

static kd_status check_input(const char *op, const kd_tensor *x, int min_ndim)
{
    if (kd_check_float(op, x) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (kd_backend_check(op, x) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (x->ndim < min_ndim) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "%s: input %s needs at least %d dims", op,
                        kd_shape_str(x, s, sizeof s), min_ndim);
    }
    return KD_OK;
}

/* Weight and bias gradients from per-channel sums (weight sums in [0, C),
 * bias sums in [C, 2C)). */
static kd_status affine_grads(kd_tensor *weight, kd_tensor *bias, const double *sums, int64_t C)
{
    kd_tensor *params[2] = {weight, bias};
    for (int k = 0; k < 2; k++) {
        kd_tensor *p = params[k];
        if (!p || !p->requires_grad)
            continue;
        kd_tensor *gp = kd_tensor_empty_like(p);
        if (!gp)
            return KD_ERR_NOMEM;
        for (int64_t c = 0; c < C; c++) {
            double s = sums[k * C + c];
            if (p->dtype == KD_F32)
                ((float *)kd_tensor_data(gp))[c] = (float)s;
            else
                ((double *)kd_tensor_data(gp))[c] = s;
        }
        kd_status st = kd_grad_accumulate_take(p, gp);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

/* ------------------------------------------------------------ group, layer, channel norms */

/* node: inputs x, weight, bias; saved x (contiguous), stats, weight
 * array; iarg kind, N, G, C/G, S. */
static kd_status instance_norm_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *weight = node->inputs[1], *bias = node->inputs[2];
    kd_tensor *xc = node->saved[0], *stats = node->saved[1], *w = node->saved[2];
    norm_kind kind = (norm_kind)node->iarg[0];
    int64_t N = node->iarg[1], G = node->iarg[2], Cg = node->iarg[3], S = node->iarg[4];
    int64_t C = G * Cg;
    bool want_affine = (weight && weight->requires_grad) || (bias && bias->requires_grad);
    double *sums = want_affine ? malloc(2 * (size_t)C * sizeof *sums) : NULL;
    if (want_affine && !sums)
        return kd_error(KD_ERR_NOMEM, "%s backward: out of host memory", node->op);
    kd_tensor *gx = x->requires_grad ? kd_tensor_empty_like(x) : NULL;
    kd_status st = KD_OK;
    if (x->requires_grad && !gx)
        st = KD_ERR_NOMEM;
    else if (kind == NORM_CHANNELS)
        st = kd_cpu_channel_norm_backward(x->dtype, kd_tensor_data(xc), kd_tensor_data(g),
                                          kd_tensor_data(stats), kd_tensor_data(w),
                                          gx ? kd_tensor_data(gx) : NULL, sums, N, C, S);
    else
        st = kd_cpu_group_norm_backward(x->dtype, kd_tensor_data(xc), kd_tensor_data(g),
                                        kd_tensor_data(stats), kd_tensor_data(w),
                                        gx ? kd_tensor_data(gx) : NULL, sums, N, G, Cg, S);
    if (st == KD_OK && gx)
        st = kd_grad_accumulate_take(x, gx);
    if (st == KD_OK && sums)
        st = affine_grads(weight, bias, sums, C);
    free(sums);
    return st;
}

/* x read as [N, G groups of Cg channels, S]; NORM_GROUP normalises each
 * (n, group), NORM_CHANNELS each (n, s) over all C (G is 1 then). */
static kd_tensor *instance_norm(const char *op, norm_kind kind, kd_tensor *x,
                                kd_tensor *weight, kd_tensor *bias, int64_t N, int64_t G,
                                int64_t C, int64_t S, double eps)
{
    kd_tensor *w = affine_param(op, "weight", weight, x, C, 1.0);
    kd_tensor *b = w ? affine_param(op, "bias", bias, x, C, 0.0) : NULL;
    kd_tensor *xc = b ? kd_contiguous_raw(x) : NULL;
    kd_tensor *out = xc ? kd_tensor_empty_like(x) : NULL;
    int64_t nstats = kind == NORM_CHANNELS ? N * S : N * G;
    kd_tensor *stats = out ? kd_tensor_empty(KD_F64, KD_CPU, 2, (int64_t[]){nstats, 2}) : NULL;
    if (!stats)
        return NULL;
    int64_t Cg = C / G;
    if (kind == NORM_CHANNELS)
        kd_cpu_channel_norm_forward(x->dtype, kd_tensor_data(xc), kd_tensor_data(out),
                                    kd_tensor_data(stats), kd_tensor_data(w), kd_tensor_data(b),
                                    N, C, S, eps);
    else
        kd_cpu_group_norm_forward(x->dtype, kd_tensor_data(xc), kd_tensor_data(out),
                                  kd_tensor_data(stats), kd_tensor_data(w), kd_tensor_data(b), N,
                                  G, Cg, S, eps);
    kd_tensor *inputs[3] = {x, weight, bias};
    kd_node *node;
    if (kd_record(op, instance_norm_backward, out, 3, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = stats;
        node->saved[2] = w;
        node->iarg[0] = kind;
        node->iarg[1] = N;
        node->iarg[2] = G;
        node->iarg[3] = Cg;
        node->iarg[4] = S;
    }
    return out;
}

kd_tensor *kd_layer_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias, double eps)
{
    if (!x || check_input("layer_norm", x, 1) != KD_OK)
        return NULL;
    int64_t C = x->shape[x->ndim - 1];
    int64_t rows = kd_shape_numel(x->ndim - 1, x->shape);
    return instance_norm("layer_norm", NORM_GROUP, x, weight, bias, rows, 1, C, 1, eps);
}

kd_tensor *kd_layer_norm2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias, double eps)
{
    if (!x || check_input("layer_norm2d", x, 2) != KD_OK)
        return NULL;
    int64_t S = kd_shape_numel(x->ndim - 2, x->shape + 2);
    return instance_norm("layer_norm2d", NORM_CHANNELS, x, weight, bias, x->shape[0], 1,
                         x->shape[1], S, eps);
}

kd_tensor *kd_group_norm(kd_tensor *x, int groups, kd_tensor *weight, kd_tensor *bias,
                         double eps)
{
    if (!x || check_input("group_norm", x, 2) != KD_OK)
        return NULL;
    int64_t C = x->shape[1];
    if (groups < 1 || C % groups != 0) {
        char s[96];
        kd_error(KD_ERR_INVALID, "group_norm: %d groups do not divide the %lld channels of %s",
                 groups, (long long)C, kd_shape_str(x, s, sizeof s));
        return NULL;
    }
    int64_t S = kd_shape_numel(x->ndim - 2, x->shape + 2);
    return instance_norm("group_norm", NORM_GROUP, x, weight, bias, x->shape[0], groups, C, S,
                         eps);
}

/* ------------------------------------------------------------ batch norm */

/* Per-channel values as x's dtype, for the elementwise passes. */
static kd_tensor *channel_values(const kd_tensor *x, int64_t C, const double *v)
{
    kd_tensor *t = kd_tensor_empty(x->dtype, KD_CPU, 1, &C);
    if (!t)
        return NULL;
    for (int64_t c = 0; c < C; c++) {
        if (x->dtype == KD_F32)
            ((float *)kd_tensor_data(t))[c] = (float)v[c];
        else
            ((double *)kd_tensor_data(t))[c] = v[c];
    }
    return t;
}

static kd_status check_running(const kd_tensor *x, const kd_tensor *r, const char *what, int64_t C)
{
    if (kd_check_float("batch_norm", r) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (r->device != KD_CPU || r->ndim != 1 || r->shape[0] != C || !kd_tensor_is_contiguous(r)) {
        char s[96], xs[96];
        return kd_error(KD_ERR_INVALID,
                        "batch_norm: %s %s for input %s (a contiguous CPU [%lld] expected)",
                        what, kd_shape_str(r, s, sizeof s), kd_shape_str(x, xs, sizeof xs),
                        (long long)C);
    }
    return KD_OK;
}

/* new = (1 - momentum) * old + momentum * batch, in place. */
static void update_running(kd_tensor *r, const double *batch, double scale, double momentum)
{
    int64_t C = r->shape[0];
    for (int64_t c = 0; c < C; c++) {
        double v = batch[c] * scale;
        if (r->dtype == KD_F32) {
            float *p = (float *)kd_tensor_data(r) + c;
            *p = (float)((1 - momentum) * *p + momentum * v);
        } else {
            double *p = (double *)kd_tensor_data(r) + c;
            *p = (1 - momentum) * *p + momentum * v;
        }
    }
}

/* The reducer of synchronised batch norm on this thread (ops.h), taken by
 * each training-mode batch norm when it runs: {NULL, NULL} is one process. */
static _Thread_local kd_batch_norm_sync bn_sync;

kd_batch_norm_sync kd_set_batch_norm_sync(kd_batch_norm_sync sync)
{
    kd_batch_norm_sync previous = bn_sync;
    bn_sync = sync;
    return previous;
}

/* The global mean and (biased) variance from this process's, and the
 * global count in *count: sums and count over the processes first, then
 * each one's squared deviations from the global mean (Chan's pairwise
 * merge: no sum of squares minus a squared sum, which cancels in float32
 * compute and for large means). */
static kd_status sync_batch_stats(const kd_batch_norm_sync *sync, double *mean, double *var,
                                  double *count, int64_t C)
{
    double *v = malloc((size_t)(C + 1) * sizeof *v);
    if (!v)
        return kd_error(KD_ERR_NOMEM, "batch_norm: out of memory for the synchronised "
                        "statistics of %lld channels", (long long)C);
    double n = *count;
    v[C] = n;
    for (int64_t c = 0; c < C; c++)
        v[c] = n > 0 ? mean[c] * n : 0; /* an empty share adds nothing */
    kd_status st = sync->reduce(v, C + 1, sync->ctx);
    double total = v[C];
    if (st == KD_OK && total < 2)
        st = kd_error(KD_ERR_INVALID, "batch_norm: training needs more than 1 value per channel "
                      "over all processes, got %g", total);
    if (st == KD_OK) {
        for (int64_t c = 0; c < C; c++) {
            double global_mean = v[c] / total, d = mean[c] - global_mean;
            v[c] = n > 0 ? var[c] * n + n * d * d : 0;
            mean[c] = global_mean;
        }
        st = sync->reduce(v, C, sync->ctx);
    }
    for (int64_t c = 0; st == KD_OK && c < C; c++)
        var[c] = v[c] / total;
    *count = total;
    free(v);
    return st == KD_OK ? st : kd_error_wrap(st, "batch_norm: synchronising the statistics");
}

/* node: inputs x, weight, bias; saved x (contiguous), stats [4, C] (mean
 * and 1/std first), weight array; iarg N, C, S, training; farg[0] the
 * count the statistics were taken over (all processes' when synchronised);
 * ctx the kd_batch_norm_sync it ran with, or NULL. */
static kd_status batch_norm_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *weight = node->inputs[1], *bias = node->inputs[2];
    kd_tensor *xc = node->saved[0], *stats = node->saved[1], *w = node->saved[2];
    int64_t N = node->iarg[0], C = node->iarg[1], S = node->iarg[2];
    bool training = node->iarg[3] != 0;
    const kd_batch_norm_sync *sync = node->ctx;
    const double *mean = kd_tensor_data(stats), *rstd = mean + C;
    /* g * xhat, then g: this process's (the affine gradients, which the
     * host averages with the other parameters'), then all processes' */
    double *sums = malloc((size_t)C * 4 * sizeof *sums);
    double *k = malloc((size_t)C * 3 * sizeof *k);
    kd_status st = sums && k ? KD_OK : kd_error(KD_ERR_NOMEM, "batch_norm backward: out of memory");
    double *all = sums + 2 * C;
    if (st == KD_OK) {
        kd_cpu_batch_norm_grad_sums(x->dtype, kd_tensor_data(xc), kd_tensor_data(g), mean, rstd,
                                    sums + C, sums, N, C, S);
        memcpy(all, sums, (size_t)C * 2 * sizeof *sums);
    }
    if (st == KD_OK && x->requires_grad && sync &&
        (st = sync->reduce(all, 2 * C, sync->ctx)) != KD_OK)
        st = kd_error_wrap(st, "batch_norm backward: synchronising the gradient sums");
    if (st == KD_OK && x->requires_grad) {
        /* gx = w rstd (g - mean(g) - xhat mean(g xhat)); in eval the batch
         * statistics are constants and only the first term is left. */
        double count = node->farg[0];
        for (int64_t c = 0; c < C; c++) {
            double wc = kd_tensor_get(w, c);
            k[c] = wc * rstd[c];
            k[C + c] = training ? all[C + c] / count : 0;
            k[2 * C + c] = training ? all[c] / count * rstd[c] : 0;
        }
        kd_tensor *scale = channel_values(x, C, k), *k1 = channel_values(x, C, k + C);
        kd_tensor *k2 = channel_values(x, C, k + 2 * C), *shift = channel_values(x, C, mean);
        kd_tensor *gx = k2 && shift ? kd_tensor_empty_like(x) : NULL;
        if (!gx || !scale || !k1) {
            st = KD_ERR_NOMEM;
        } else {
            kd_cpu_batch_norm_apply(x->dtype, kd_tensor_data(xc), kd_tensor_data(g),
                                    kd_tensor_data(gx), kd_tensor_data(shift),
                                    kd_tensor_data(scale), NULL, kd_tensor_data(k1),
                                    kd_tensor_data(k2), N, C, S);
            st = kd_grad_accumulate_take(x, gx);
        }
    }
    if (st == KD_OK)
        st = affine_grads(weight, bias, sums, C);
    free(sums);
    free(k);
    return st;
}

kd_tensor *kd_batch_norm(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                         kd_tensor *running_mean, kd_tensor *running_var, bool training,
                         double momentum, double eps)
{
    if (!x || check_input("batch_norm", x, 2) != KD_OK)
        return NULL;
    int64_t N = x->shape[0], C = x->shape[1];
    int64_t S = kd_shape_numel(x->ndim - 2, x->shape + 2);
    if ((running_mean && check_running(x, running_mean, "running_mean", C) != KD_OK) ||
        (running_var && check_running(x, running_var, "running_var", C) != KD_OK))
        return NULL;
    char xs[96];
    if (!training && (!running_mean || !running_var)) {
        kd_error(KD_ERR_INVALID, "batch_norm: eval mode needs running_mean and running_var");
        return NULL;
    }
    kd_batch_norm_sync sync = training ? bn_sync : (kd_batch_norm_sync){NULL, NULL};
    if (training && !sync.reduce && N * S < 2) {
        kd_error(KD_ERR_INVALID, "batch_norm: training needs more than 1 value per channel, "
                 "got input %s", kd_shape_str(x, xs, sizeof xs));
        return NULL;
    }
    kd_tensor *w = affine_param("batch_norm", "weight", weight, x, C, 1.0);
    kd_tensor *b = w ? affine_param("batch_norm", "bias", bias, x, C, 0.0) : NULL;
    kd_tensor *xc = b ? kd_contiguous_raw(x) : NULL;
    /* rows: mean, 1/std (kept for backward), variance, w/std */
    kd_tensor *stats = xc ? kd_tensor_empty(KD_F64, KD_CPU, 2, (int64_t[]){4, C}) : NULL;
    if (!stats)
        return NULL;
    double *mean = kd_tensor_data(stats), *rstd = mean + C, *var = rstd + C, *scale = var + C;
    double count = (double)(N * S);
    if (training) {
        kd_cpu_batch_norm_stats(x->dtype, kd_tensor_data(xc), mean, var, N, C, S);
        if (sync.reduce && sync_batch_stats(&sync, mean, var, &count, C) != KD_OK)
            return NULL;
        if (running_mean)
            update_running(running_mean, mean, 1.0, momentum);
        if (running_var)
            update_running(running_var, var, count / (count - 1), momentum);
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = kd_tensor_get(running_mean, c);
            var[c] = kd_tensor_get(running_var, c);
        }
    }
    for (int64_t c = 0; c < C; c++) {
        rstd[c] = 1.0 / sqrt(var[c] + eps);
        scale[c] = rstd[c] * kd_tensor_get(w, c);
    }
    kd_tensor *shift_t = channel_values(x, C, mean), *scale_t = channel_values(x, C, scale);
    kd_tensor *out = shift_t && scale_t ? kd_tensor_empty_like(x) : NULL;
    if (!out)
        return NULL;
    kd_cpu_batch_norm_apply(x->dtype, kd_tensor_data(xc), NULL, kd_tensor_data(out),
                            kd_tensor_data(shift_t), kd_tensor_data(scale_t), kd_tensor_data(b),
                            NULL, NULL, N, C, S);
    kd_tensor *inputs[3] = {x, weight, bias};
    kd_node *node;
    if (kd_record("batch_norm", batch_norm_backward, out, 3, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = stats;
        node->saved[2] = w;
        node->iarg[0] = N;
        node->iarg[1] = C;
        node->iarg[2] = S;
        node->iarg[3] = training;
        node->farg[0] = count;
        if (sync.reduce) {
            kd_batch_norm_sync *kept = kd_node_ctx(node, sizeof *kept);
            if (!kept) {
                kd_error(KD_ERR_NOMEM, "batch_norm: out of memory");
                return NULL;
            }
            *kept = sync;
        }
    }
    return out;
}
