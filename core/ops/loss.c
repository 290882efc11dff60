/* Losses: cross-entropy with hard labels (label smoothing) or soft targets,
 * and KL divergence as torch's F.kl_div. Each is one fused kernel forward
 * and one backward; row statistics are kept instead of probabilities: per
 * row the maximum m and log sum exp(x - m), as two numbers because their
 * sum rounded to f32 would lose a rounding unit of m, and backward shifts
 * by (x - m) - log sum. The kernels are in core/backend/cpu/loss.c. */
#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

static kd_tensor *scalar_like(const kd_tensor *x, double v)
{
    return kd_tensor_full(x->dtype, KD_CPU, 0, NULL, v);
}

/* ------------------------------------------------------------ cross_entropy */

static kd_status cross_entropy_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->saved[0], *labels = node->saved[1], *stats = node->saved[2];
    kd_tensor *gx = kd_tensor_empty_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t n = x->shape[0], c = x->shape[1];
    double eps = node->farg[0], scale = kd_tensor_get(g, 0) / (double)n;
    kd_cpu_cross_entropy_backward(x->dtype, kd_tensor_data(x), kd_tensor_data(labels),
                                  kd_tensor_data(stats), kd_tensor_data(gx), n, c, eps, scale);
    return kd_grad_accumulate_take(node->inputs[0], gx);
}

kd_tensor *kd_cross_entropy(kd_tensor *logits, kd_tensor *labels, double label_smoothing)
{
    const char *op = "cross_entropy";
    if (!logits || !labels || kd_check_float(op, logits) != KD_OK ||
        kd_backend_check(op, logits) != KD_OK || kd_backend_check(op, labels) != KD_OK)
        return NULL;
    char a[96], b[96];
    if (logits->ndim != 2 || labels->ndim != 1 || labels->dtype != KD_I64 ||
        labels->shape[0] != logits->shape[0]) {
        kd_error(KD_ERR_INVALID, "%s: logits %s and labels %s %s (expected [N, C] and I64 [N])",
                 op, kd_shape_str(logits, a, sizeof a), kd_shape_str(labels, b, sizeof b),
                 kd_dtype_name(labels->dtype));
        return NULL;
    }
    if (!(label_smoothing >= 0 && label_smoothing <= 1)) {
        kd_error(KD_ERR_INVALID, "%s: label_smoothing %g outside [0, 1]", op, label_smoothing);
        return NULL;
    }
    int64_t n = logits->shape[0], c = logits->shape[1];
    kd_tensor *lc = kd_contiguous_raw(labels);
    if (!lc)
        return NULL;
    const int64_t *lab = kd_tensor_data(lc);
    for (int64_t i = 0; i < n; i++) {
        if (lab[i] < 0 || lab[i] >= c) {
            kd_error(KD_ERR_INVALID, "%s: label %lld in row %lld is outside [0, %lld)", op,
                     (long long)lab[i], (long long)i, (long long)c);
            return NULL;
        }
    }
    if (n > 0 && c == 0) {
        kd_error(KD_ERR_INVALID, "%s: logits %s have no classes", op,
                 kd_shape_str(logits, a, sizeof a));
        return NULL;
    }
    kd_tensor *xc = kd_contiguous_raw(logits);
    kd_tensor *stats = xc ? kd_tensor_empty(KD_F64, KD_CPU, 2, (int64_t[]){n, 2}) : NULL;
    if (!stats)
        return NULL;
    double total = kd_cpu_cross_entropy_forward(logits->dtype, kd_tensor_data(xc), lab,
                                                kd_tensor_data(stats), n, c, label_smoothing);
    kd_tensor *out = scalar_like(logits, total / (double)n);
    kd_node *node;
    if (!out || kd_record(op, cross_entropy_backward, out, 1, &logits, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = lc;
        node->saved[2] = stats;
        node->farg[0] = label_smoothing;
    }
    return out;
}

/* ------------------------------------------------------------ soft targets */

static kd_status soft_ce_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *logits = node->inputs[0], *target = node->inputs[1];
    kd_tensor *x = node->saved[0], *t = node->saved[1], *stats = node->saved[2];
    kd_tensor *gx = logits->requires_grad ? kd_tensor_empty_like(x) : NULL;
    kd_tensor *gt = target->requires_grad ? kd_tensor_empty_like(t) : NULL;
    if ((logits->requires_grad && !gx) || (target->requires_grad && !gt))
        return KD_ERR_NOMEM;
    int64_t n = x->shape[0], c = x->shape[1];
    double scale = kd_tensor_get(g, 0) / (double)n;
    kd_cpu_soft_ce_backward(x->dtype, kd_tensor_data(x), kd_tensor_data(t), kd_tensor_data(stats),
                            gx ? kd_tensor_data(gx) : NULL, gt ? kd_tensor_data(gt) : NULL, n, c,
                            scale);
    kd_status st = gx ? kd_grad_accumulate_take(logits, gx) : KD_OK;
    return st == KD_OK && gt ? kd_grad_accumulate_take(target, gt) : st;
}

kd_tensor *kd_cross_entropy_soft(kd_tensor *logits, kd_tensor *target)
{
    const char *op = "cross_entropy_soft";
    if (!logits || !target || kd_check_float(op, logits) != KD_OK ||
        kd_check_float(op, target) != KD_OK || kd_check_same(op, logits, target) != KD_OK ||
        kd_backend_check(op, logits) != KD_OK)
        return NULL;
    if (logits->ndim != 2 || !kd_tensor_same_shape(logits, target)) {
        char a[96], b[96];
        kd_error(KD_ERR_INVALID, "%s: logits %s and target %s (expected both [N, C])", op,
                 kd_shape_str(logits, a, sizeof a), kd_shape_str(target, b, sizeof b));
        return NULL;
    }
    int64_t n = logits->shape[0], c = logits->shape[1];
    kd_tensor *xc = kd_contiguous_raw(logits), *tc = kd_contiguous_raw(target);
    kd_tensor *stats = xc && tc ? kd_tensor_empty(KD_F64, KD_CPU, 2, (int64_t[]){n, 2}) : NULL;
    if (!stats)
        return NULL;
    double total = 0;
    if (c > 0)
        total = kd_cpu_soft_ce_forward(logits->dtype, kd_tensor_data(xc), kd_tensor_data(tc),
                                       kd_tensor_data(stats), n, c);
    kd_tensor *out = scalar_like(logits, total / (double)n);
    kd_tensor *inputs[2] = {logits, target};
    kd_node *node;
    if (!out || kd_record(op, soft_ce_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = tc;
        node->saved[2] = stats;
    }
    return out;
}

/* ------------------------------------------------------------ kl_div */

static kd_status kl_div_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *input = node->inputs[0], *target = node->inputs[1];
    kd_tensor *x = node->saved[0], *t = node->saved[1];
    bool log_target = node->iarg[0];
    kd_reduction reduction = (kd_reduction)node->iarg[1];
    kd_tensor *gx = input->requires_grad ? kd_tensor_empty_like(x) : NULL;
    kd_tensor *gt = target->requires_grad ? kd_tensor_empty_like(t) : NULL;
    kd_tensor *gc = reduction == KD_REDUCE_NONE ? kd_contiguous_raw(g) : NULL;
    if ((input->requires_grad && !gx) || (target->requires_grad && !gt) ||
        (reduction == KD_REDUCE_NONE && !gc))
        return KD_ERR_NOMEM;
    double gs = gc ? 0 : kd_tensor_get(g, 0) * node->farg[0];
    int64_t n = kd_tensor_numel(x);
    kd_cpu_kl_div_backward(x->dtype, kd_tensor_data(x), kd_tensor_data(t),
                           gc ? kd_tensor_data(gc) : NULL, gs, gx ? kd_tensor_data(gx) : NULL,
                           gt ? kd_tensor_data(gt) : NULL, n, log_target);
    kd_status st = gx ? kd_grad_accumulate_take(input, gx) : KD_OK;
    return st == KD_OK && gt ? kd_grad_accumulate_take(target, gt) : st;
}

kd_tensor *kd_kl_div(kd_tensor *input, kd_tensor *target, bool log_target,
                     kd_reduction reduction)
{
    const char *op = "kl_div";
    if (!input || !target || kd_check_float(op, input) != KD_OK ||
        kd_check_float(op, target) != KD_OK || kd_check_same(op, input, target) != KD_OK ||
        kd_backend_check(op, input) != KD_OK)
        return NULL;
    if (!kd_tensor_same_shape(input, target)) {
        char a[96], b[96];
        kd_error(KD_ERR_INVALID, "%s: input %s and target %s differ in shape", op,
                 kd_shape_str(input, a, sizeof a), kd_shape_str(target, b, sizeof b));
        return NULL;
    }
    int64_t n = kd_tensor_numel(input);
    double factor; /* d(reduced)/d(pointwise sum) */
    switch (reduction) {
    case KD_REDUCE_MEAN: factor = 1.0 / (double)n; break;
    case KD_REDUCE_SUM: factor = 1.0; break;
    case KD_REDUCE_BATCHMEAN: factor = input->ndim ? 1.0 / (double)input->shape[0] : 1.0; break;
    case KD_REDUCE_NONE: factor = 1.0; break;
    default:
        kd_error(KD_ERR_INVALID, "%s: unknown reduction %d", op, (int)reduction);
        return NULL;
    }
    kd_tensor *x = kd_contiguous_raw(input), *t = kd_contiguous_raw(target);
    kd_tensor *pointwise = x && t && reduction == KD_REDUCE_NONE ? kd_tensor_empty_like(x)
                                                                 : NULL;
    if (!x || !t || (reduction == KD_REDUCE_NONE && !pointwise))
        return NULL;
    double total = kd_cpu_kl_div_forward(input->dtype, kd_tensor_data(x), kd_tensor_data(t),
                                         pointwise ? kd_tensor_data(pointwise) : NULL, n,
                                         log_target);
    kd_tensor *out = pointwise ? pointwise : scalar_like(input, total * factor);
    kd_tensor *inputs[2] = {input, target};
    kd_node *node;
    if (!out || kd_record(op, kl_div_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = x;
        node->saved[1] = t;
        node->iarg[0] = log_target;
        node->iarg[1] = reduction;
        node->farg[0] = factor;
    }
    return out;
}
