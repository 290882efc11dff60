/* softmax and log_softmax over any dim, on the [outer, reduce, inner] view.
 * The row maximum is subtracted before exponentiating; backward uses only
 * the saved output. log_softmax is (x - m) - log(sum): m + log(sum) rounded
 * to f32 would lose a rounding unit of m, large next to small outputs. */
#include <math.h>

#include "../internal.h"
#include "softmax_rows.h"

#define PAR_MIN 16384 /* elements below which a kernel stays on one thread */
#define TILE 128      /* inner elements a thread handles at once */

#define DEFINE_SOFTMAX_KERNELS(T, S)                                             \
    /* inner == 1: each row of `reduce` contiguous elements. */                 \
    static void softmax_rows_##S(const T *x, T *y, int64_t outer,               \
                                 int64_t reduce, bool log_out)                  \
    {                                                                           \
        _Pragma("omp parallel for if (outer * reduce > PAR_MIN) schedule(static)") \
        for (int64_t o = 0; o < outer; o++) {                                   \
            const T *xr = x + o * reduce;                                       \
            T *yr = y + o * reduce;                                             \
            if (!log_out) {                                                     \
                kd_row_softmax_##S(xr, yr, reduce);                             \
                continue;                                                       \
            }                                                                   \
            T m = kd_row_max_##S(xr, reduce);                                   \
            T ls = (T)log(kd_row_sum_exp_##S(xr, NULL, reduce, m));             \
            _Pragma("omp simd")                                                 \
            for (int64_t r = 0; r < reduce; r++)                                \
                yr[r] = (xr[r] - m) - ls;                                       \
        }                                                                       \
    }                                                                           \
    /* inner > 1: a tile of inner positions, reduce strided by inner. */        \
    static void softmax_tiles_##S(const T *x, T *y, int64_t outer,              \
                                  int64_t reduce, int64_t inner, bool log_out)  \
    {                                                                           \
        int64_t tiles = (inner + TILE - 1) / TILE;                              \
        _Pragma("omp parallel for if (outer * reduce * inner > PAR_MIN) schedule(static)") \
        for (int64_t t = 0; t < outer * tiles; t++) {                           \
            int64_t o = t / tiles, i0 = (t - o * tiles) * TILE;                 \
            int64_t n = inner - i0 < TILE ? inner - i0 : TILE;                  \
            const T *xb = x + o * reduce * inner + i0;                          \
            T *yb = y + o * reduce * inner + i0;                                \
            T m[TILE], s[TILE];                                                 \
            for (int64_t i = 0; i < n; i++) {                                   \
                m[i] = xb[i];                                                   \
                s[i] = 0;                                                       \
            }                                                                   \
            for (int64_t r = 1; r < reduce; r++)                                \
                for (int64_t i = 0; i < n; i++)                                 \
                    m[i] = xb[r * inner + i] > m[i] ? xb[r * inner + i] : m[i]; \
            for (int64_t r = 0; r < reduce; r++)                                \
                for (int64_t i = 0; i < n; i++) {                               \
                    T e = kd_exp_shifted_##S(xb[r * inner + i], m[i]);          \
                    yb[r * inner + i] = e;                                      \
                    s[i] += e;                                                  \
                }                                                               \
            for (int64_t i = 0; i < n; i++)                                     \
                s[i] = log_out ? log(s[i]) : 1 / s[i];                          \
            if (log_out) {                                                      \
                for (int64_t r = 0; r < reduce; r++)                            \
                    for (int64_t i = 0; i < n; i++)                             \
                        yb[r * inner + i] = (xb[r * inner + i] - m[i]) - s[i];  \
            } else {                                                            \
                for (int64_t r = 0; r < reduce; r++)                            \
                    for (int64_t i = 0; i < n; i++)                             \
                        yb[r * inner + i] *= s[i];                              \
            }                                                                   \
        }                                                                       \
    }                                                                           \
    /* softmax: gx = y (g - sum g y); log_softmax: gx = g - exp(y) sum g.      \
     * Rows of `reduce` run at stride `inner`; inner == 1 is the fast case. */ \
    static void softmax_backward_##S(const T *y, const T *g, T *gx,             \
                                     int64_t outer, int64_t reduce,             \
                                     int64_t inner, bool log_out)               \
    {                                                                           \
        _Pragma("omp parallel for collapse(2) if (outer * reduce * inner > PAR_MIN) schedule(static)") \
        for (int64_t o = 0; o < outer; o++)                                     \
            for (int64_t i = 0; i < inner; i++) {                               \
                int64_t base = o * reduce * inner + i;                          \
                const T *yr = y + base, *gr = g + base;                         \
                T *xr = gx + base;                                              \
                double acc = 0;                                                 \
                if (inner == 1) {                                               \
                    if (log_out) {                                              \
                        _Pragma("omp simd reduction(+ : acc)")                  \
                        for (int64_t r = 0; r < reduce; r++)                    \
                            acc += gr[r];                                       \
                        /* exp(y) = exp(y - m) exp(m), m = max y: a shift \
                         * known only at run time keeps the loop vector */ \
                        T m = kd_row_max_##S(yr, reduce);                       \
                        T k = (T)(acc * exp((double)m));                        \
                        KD_SIMD_EXP_##S                                         \
                        for (int64_t r = 0; r < reduce; r++)                    \
                            xr[r] = gr[r] - kd_exp_shifted_##S(yr[r], m) * k;   \
                    } else {                                                    \
                        _Pragma("omp simd reduction(+ : acc)")                  \
                        for (int64_t r = 0; r < reduce; r++)                    \
                            acc += gr[r] * yr[r];                               \
                        T a = (T)acc;                                           \
                        _Pragma("omp simd")                                     \
                        for (int64_t r = 0; r < reduce; r++)                    \
                            xr[r] = yr[r] * (gr[r] - a);                        \
                    }                                                           \
                    continue;                                                   \
                }                                                               \
                for (int64_t r = 0; r < reduce; r++)                            \
                    acc += log_out ? gr[r * inner] : gr[r * inner] * yr[r * inner]; \
                T a = (T)acc;                                                   \
                for (int64_t r = 0; r < reduce; r++) {                          \
                    int64_t k = r * inner;                                      \
                    xr[k] = log_out ? gr[k] - kd_exp_shifted_##S(yr[k], 0) * a  \
                                    : yr[k] * (gr[k] - a);                      \
                }                                                               \
            }                                                                   \
    }

DEFINE_SOFTMAX_KERNELS(float, f32)
DEFINE_SOFTMAX_KERNELS(double, f64)

static kd_status softmax_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *y = node->saved[0];
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *gx = gc ? kd_tensor_empty_like(y) : NULL;
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t outer = node->iarg[0], reduce = node->iarg[1], inner = node->iarg[2];
    bool log_out = node->iarg[3];
    if (y->dtype == KD_F32)
        softmax_backward_f32(kd_tensor_data(y), kd_tensor_data(gc), kd_tensor_data(gx),
                             outer, reduce, inner, log_out);
    else
        softmax_backward_f64(kd_tensor_data(y), kd_tensor_data(gc), kd_tensor_data(gx),
                             outer, reduce, inner, log_out);
    return kd_grad_accumulate_take(node->inputs[0], gx);
}

static kd_tensor *softmax_impl(const char *op, kd_tensor *x, int dim, bool log_out)
{
    int d;
    if (!x || kd_check_float(op, x) != KD_OK || kd_norm_dim(op, x->ndim, dim, &d) != KD_OK)
        return NULL;
    if (x->device != KD_CPU) {
        kd_error(KD_ERR_UNSUPPORTED, "%s: cuda tensors are not supported", op);
        return NULL;
    }
    int64_t outer = kd_shape_numel(d, x->shape);
    int64_t reduce = x->ndim ? x->shape[d] : 1;
    int64_t inner = x->ndim ? kd_shape_numel(x->ndim - d - 1, x->shape + d + 1) : 1;
    kd_tensor *xc = kd_contiguous_raw(x);
    kd_tensor *y = xc ? kd_tensor_empty_like(x) : NULL;
    if (!y)
        return NULL;
    if (kd_tensor_numel(x) > 0) {
        if (inner == 1 && x->dtype == KD_F32)
            softmax_rows_f32(kd_tensor_data(xc), kd_tensor_data(y), outer, reduce, log_out);
        else if (inner == 1)
            softmax_rows_f64(kd_tensor_data(xc), kd_tensor_data(y), outer, reduce, log_out);
        else if (x->dtype == KD_F32)
            softmax_tiles_f32(kd_tensor_data(xc), kd_tensor_data(y), outer, reduce, inner,
                              log_out);
        else
            softmax_tiles_f64(kd_tensor_data(xc), kd_tensor_data(y), outer, reduce, inner,
                              log_out);
    }
    kd_node *node;
    if (kd_record(op, softmax_backward, y, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = y;
        node->iarg[0] = outer;
        node->iarg[1] = reduce;
        node->iarg[2] = inner;
        node->iarg[3] = log_out;
    }
    return y;
}

kd_tensor *kd_softmax(kd_tensor *x, int dim) { return softmax_impl("softmax", x, dim, false); }

kd_tensor *kd_log_softmax(kd_tensor *x, int dim)
{
    return softmax_impl("log_softmax", x, dim, true);
}
