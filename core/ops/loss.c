/* Losses: cross-entropy with hard labels (label smoothing) or soft targets,
 * and KL divergence as torch's F.kl_div. Each is one fused kernel forward
 * and one backward; row statistics are kept instead of probabilities: per
 * row the maximum m and log sum exp(x - m), as two numbers because their
 * sum rounded to f32 would lose a rounding unit of m, and backward shifts
 * by (x - m) - log sum. */
#include <tgmath.h>

#include "../internal.h"
#include "../backend/cpu/softmax_rows.h"

#define PAR_MIN 16384 /* elements below which a kernel stays on one thread */

static kd_status check_cpu(const char *op, const kd_tensor *x)
{
    if (x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: cuda tensors are not supported", op);
    return KD_OK;
}

static kd_tensor *scalar_like(const kd_tensor *x, double v)
{
    return kd_tensor_full(x->dtype, KD_CPU, 0, NULL, v);
}

/* ------------------------------------------------------------ cross_entropy */

/* With lse = log sum exp of the row, -log p_j = lse - x_j, so
 * (1-eps) nll + eps mean_j(-log p_j) = lse - (1-eps) x_y - eps mean_j x_j. */
#define DEFINE_CE_KERNELS(T, S)                                                  \
    static double ce_forward_##S(const T *x, const int64_t *labels,           \
                                 double *stats, int64_t n, int64_t c,           \
                                 double eps)                                    \
    {                                                                           \
        double total = 0;                                                       \
        _Pragma("omp parallel for reduction(+ : total) if (n * c > PAR_MIN) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                       \
            const T *row = x + i * c;                                           \
            T m = kd_row_max_##S(row, c);                                       \
            double s = kd_row_sum_exp_##S(row, NULL, c, m);                     \
            double sx = 0;                                                      \
            _Pragma("omp simd reduction(+ : sx)")                               \
            for (int64_t j = 0; j < c; j++)                                     \
                sx += row[j];                                                   \
            stats[2 * i] = m;                                                   \
            stats[2 * i + 1] = log(s);                                          \
            total += m + log(s) - (1 - eps) * row[labels[i]] - eps * sx / (double)c; \
        }                                                                       \
        return total;                                                           \
    }                                                                           \
    /* gx = (softmax - smoothed one-hot) * scale */                            \
    static void ce_backward_##S(const T *x, const int64_t *labels,              \
                                const double *stats, T *gx, int64_t n,          \
                                int64_t c, double eps, double scale)            \
    {                                                                           \
        T off = (T)(eps / (double)c * scale);                                   \
        _Pragma("omp parallel for if (n * c > PAR_MIN) schedule(static)")       \
        for (int64_t i = 0; i < n; i++) {                                       \
            const T *row = x + i * c;                                           \
            T *g = gx + i * c;                                                  \
            T m = (T)stats[2 * i], ls = (T)stats[2 * i + 1], sc = (T)scale;     \
            KD_SIMD_EXP_##S                                                     \
            for (int64_t j = 0; j < c; j++)                                     \
                g[j] = kd_exp_shifted_##S(row[j] - m, ls) * sc - off;           \
            g[labels[i]] -= (T)((1 - eps) * scale);                             \
        }                                                                       \
    }

DEFINE_CE_KERNELS(float, f32)
DEFINE_CE_KERNELS(double, f64)

static kd_status cross_entropy_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->saved[0], *labels = node->saved[1], *stats = node->saved[2];
    kd_tensor *gx = kd_tensor_empty_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t n = x->shape[0], c = x->shape[1];
    double eps = node->farg[0], scale = kd_tensor_get(g, 0) / (double)n;
    if (x->dtype == KD_F32)
        ce_backward_f32(kd_tensor_data(x), kd_tensor_data(labels), kd_tensor_data(stats),
                        kd_tensor_data(gx), n, c, eps, scale);
    else
        ce_backward_f64(kd_tensor_data(x), kd_tensor_data(labels), kd_tensor_data(stats),
                        kd_tensor_data(gx), n, c, eps, scale);
    return kd_grad_accumulate_take(node->inputs[0], gx);
}

kd_tensor *kd_cross_entropy(kd_tensor *logits, kd_tensor *labels, double label_smoothing)
{
    const char *op = "cross_entropy";
    if (!logits || !labels || kd_check_float(op, logits) != KD_OK ||
        check_cpu(op, logits) != KD_OK || check_cpu(op, labels) != KD_OK)
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
    double total = logits->dtype == KD_F32
                       ? ce_forward_f32(kd_tensor_data(xc), lab, kd_tensor_data(stats), n, c,
                                        label_smoothing)
                       : ce_forward_f64(kd_tensor_data(xc), lab, kd_tensor_data(stats), n, c,
                                        label_smoothing);
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

/* loss_i = sum_j t_ij (lse_i - x_ij); d/dx = p sum_j t - t; d/dt = lse - x,
 * with lse - x taken as log sum - (x - m). */
#define DEFINE_SOFT_CE_KERNELS(T, S)                                             \
    static double soft_ce_forward_##S(const T *x, const T *t, double *stats,    \
                                      int64_t n, int64_t c)                     \
    {                                                                           \
        double total = 0;                                                       \
        _Pragma("omp parallel for reduction(+ : total) if (n * c > PAR_MIN) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                       \
            const T *row = x + i * c, *tr = t + i * c;                          \
            T m = kd_row_max_##S(row, c);                                       \
            double s = kd_row_sum_exp_##S(row, NULL, c, m);                     \
            double st = 0, stx = 0;                                             \
            _Pragma("omp simd reduction(+ : st, stx)")                          \
            for (int64_t j = 0; j < c; j++) {                                   \
                st += tr[j];                                                    \
                stx += tr[j] * row[j];                                          \
            }                                                                   \
            stats[2 * i] = m;                                                   \
            stats[2 * i + 1] = log(s);                                          \
            total += (m + log(s)) * st - stx;                                   \
        }                                                                       \
        return total;                                                           \
    }                                                                           \
    static void soft_ce_backward_##S(const T *x, const T *t,                    \
                                     const double *stats, T *gx, T *gt,         \
                                     int64_t n, int64_t c, double scale)        \
    {                                                                           \
        _Pragma("omp parallel for if (n * c > PAR_MIN) schedule(static)")       \
        for (int64_t i = 0; i < n; i++) {                                       \
            const T *row = x + i * c, *tr = t + i * c;                          \
            T m = (T)stats[2 * i], ls = (T)stats[2 * i + 1], sc = (T)scale;     \
            if (gx) {                                                           \
                double st = 0;                                                  \
                _Pragma("omp simd reduction(+ : st)")                           \
                for (int64_t j = 0; j < c; j++)                                 \
                    st += tr[j];                                                \
                T k = (T)(st * scale);                                          \
                KD_SIMD_EXP_##S                                                 \
                for (int64_t j = 0; j < c; j++)                                 \
                    gx[i * c + j] = kd_exp_shifted_##S(row[j] - m, ls) * k - tr[j] * sc; \
            }                                                                   \
            if (gt)                                                             \
                _Pragma("omp simd")                                             \
                for (int64_t j = 0; j < c; j++)                                 \
                    gt[i * c + j] = (ls - (row[j] - m)) * sc;                   \
        }                                                                       \
    }

DEFINE_SOFT_CE_KERNELS(float, f32)
DEFINE_SOFT_CE_KERNELS(double, f64)

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
    if (x->dtype == KD_F32)
        soft_ce_backward_f32(kd_tensor_data(x), kd_tensor_data(t), kd_tensor_data(stats),
                             gx ? kd_tensor_data(gx) : NULL, gt ? kd_tensor_data(gt) : NULL,
                             n, c, scale);
    else
        soft_ce_backward_f64(kd_tensor_data(x), kd_tensor_data(t), kd_tensor_data(stats),
                             gx ? kd_tensor_data(gx) : NULL, gt ? kd_tensor_data(gt) : NULL,
                             n, c, scale);
    kd_status st = gx ? kd_grad_accumulate_take(logits, gx) : KD_OK;
    return st == KD_OK && gt ? kd_grad_accumulate_take(target, gt) : st;
}

kd_tensor *kd_cross_entropy_soft(kd_tensor *logits, kd_tensor *target)
{
    const char *op = "cross_entropy_soft";
    if (!logits || !target || kd_check_float(op, logits) != KD_OK ||
        kd_check_float(op, target) != KD_OK || kd_check_same(op, logits, target) != KD_OK ||
        check_cpu(op, logits) != KD_OK)
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
        total = logits->dtype == KD_F32
                    ? soft_ce_forward_f32(kd_tensor_data(xc), kd_tensor_data(tc),
                                          kd_tensor_data(stats), n, c)
                    : soft_ce_forward_f64(kd_tensor_data(xc), kd_tensor_data(tc),
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

/* Pointwise t (log t - x), with 0 log 0 = 0; or exp(t) (t - x) for log
 * targets. Returns the sum; writes the pointwise values when out != NULL. */
#define DEFINE_KL_KERNELS(T, S)                                                  \
    static double kl_forward_##S(const T *x, const T *t, T *out, int64_t n,     \
                                 bool log_target)                               \
    {                                                                           \
        double total = 0;                                                       \
        _Pragma("omp parallel for reduction(+ : total) if (n > PAR_MIN) schedule(static)") \
        for (int64_t i = 0; i < n; i++) {                                       \
            T v = log_target ? exp(t[i]) * (t[i] - x[i])                        \
                             : (t[i] == 0 ? 0 : t[i] * log(t[i])) - t[i] * x[i]; \
            if (out)                                                            \
                out[i] = v;                                                     \
            total += v;                                                         \
        }                                                                       \
        return total;                                                           \
    }                                                                           \
    /* g is one value (gs, times scale) or pointwise (gp). */                  \
    static void kl_backward_##S(const T *x, const T *t, const T *gp, double gs, \
                                T *gx, T *gt, int64_t n, bool log_target)       \
    {                                                                           \
        if (!log_target && !gp && !gt) { /* distillation: only the input learns */ \
            T g = (T)-gs;                                                       \
            _Pragma("omp parallel for simd if (n > PAR_MIN) schedule(static)")  \
            for (int64_t i = 0; i < n; i++)                                     \
                gx[i] = g * t[i];                                               \
            return;                                                             \
        }                                                                       \
        _Pragma("omp parallel for if (n > PAR_MIN) schedule(static)")           \
        for (int64_t i = 0; i < n; i++) {                                       \
            T g = gp ? gp[i] : (T)gs;                                           \
            T w = log_target ? exp(t[i]) : t[i];                                \
            if (gx)                                                             \
                gx[i] = -g * w;                                                 \
            if (gt)                                                             \
                gt[i] = log_target ? g * w * (t[i] - x[i] + 1)                  \
                                   : g * (log(t[i]) + 1 - x[i]);                \
        }                                                                       \
    }

DEFINE_KL_KERNELS(float, f32)
DEFINE_KL_KERNELS(double, f64)

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
    if (x->dtype == KD_F32)
        kl_backward_f32(kd_tensor_data(x), kd_tensor_data(t), gc ? kd_tensor_data(gc) : NULL,
                        gs, gx ? kd_tensor_data(gx) : NULL, gt ? kd_tensor_data(gt) : NULL,
                        n, log_target);
    else
        kl_backward_f64(kd_tensor_data(x), kd_tensor_data(t), gc ? kd_tensor_data(gc) : NULL,
                        gs, gx ? kd_tensor_data(gx) : NULL, gt ? kd_tensor_data(gt) : NULL,
                        n, log_target);
    kd_status st = gx ? kd_grad_accumulate_take(input, gx) : KD_OK;
    return st == KD_OK && gt ? kd_grad_accumulate_take(target, gt) : st;
}

kd_tensor *kd_kl_div(kd_tensor *input, kd_tensor *target, bool log_target,
                     kd_reduction reduction)
{
    const char *op = "kl_div";
    if (!input || !target || kd_check_float(op, input) != KD_OK ||
        kd_check_float(op, target) != KD_OK || kd_check_same(op, input, target) != KD_OK ||
        check_cpu(op, input) != KD_OK)
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
    void *pw = pointwise ? kd_tensor_data(pointwise) : NULL;
    double total = input->dtype == KD_F32
                       ? kl_forward_f32(kd_tensor_data(x), kd_tensor_data(t), pw, n, log_target)
                       : kl_forward_f64(kd_tensor_data(x), kd_tensor_data(t), pw, n, log_target);
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
