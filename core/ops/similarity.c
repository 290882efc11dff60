/* Cosine similarity along a dim (broadcasting) and pairwise Euclidean
 * distances (cdist). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "../internal.h"

#define PAR_MIN 16384 /* elements below which a kernel stays on one thread */
#define TILE 128      /* inner elements a thread handles at once */

/* ------------------------------------------------------------ cosine */

/* As torch 1.13: each norm is clamped to eps on its own,
 * cos = sum(a b) / (max(|a|, eps) max(|b|, eps)). Its gradient treats the
 * clamped norm n as if dn/da = a / n, as torch's does:
 * d cos / da = b / (n_a n_b) - cos a / n_a^2. */
#define DEFINE_COSINE_KERNELS(T, S)                                              \
    static void cosine_forward_##S(const T *a, const T *b, T *out, double *inv, \
                                   int64_t outer, int64_t reduce,               \
                                   int64_t inner, double eps)                   \
    {                                                                           \
        int64_t m = outer * inner;                                              \
        int64_t tiles = (inner + TILE - 1) / TILE;                              \
        _Pragma("omp parallel for if (m * reduce > PAR_MIN) schedule(static)")  \
        for (int64_t t = 0; t < outer * tiles; t++) {                           \
            int64_t o = t / tiles, i0 = (t - o * tiles) * TILE;                 \
            int64_t n = inner - i0 < TILE ? inner - i0 : TILE;                  \
            const T *pa = a + o * reduce * inner + i0;                          \
            const T *pb = b + o * reduce * inner + i0;                          \
            double w12[TILE], w1[TILE], w2[TILE];                               \
            if (n == 1) {                                                       \
                double s12 = 0, s1 = 0, s2 = 0;                                 \
                _Pragma("omp simd reduction(+ : s12, s1, s2)")                  \
                for (int64_t r = 0; r < reduce; r++) {                          \
                    double va = pa[r * inner], vb = pb[r * inner];              \
                    s12 += va * vb;                                             \
                    s1 += va * va;                                              \
                    s2 += vb * vb;                                              \
                }                                                               \
                w12[0] = s12;                                                   \
                w1[0] = s1;                                                     \
                w2[0] = s2;                                                     \
            } else {                                                            \
                for (int64_t i = 0; i < n; i++)                                 \
                    w12[i] = w1[i] = w2[i] = 0;                                 \
                for (int64_t r = 0; r < reduce; r++)                            \
                    for (int64_t i = 0; i < n; i++) {                           \
                        double va = pa[r * inner + i], vb = pb[r * inner + i];  \
                        w12[i] += va * vb;                                      \
                        w1[i] += va * va;                                       \
                        w2[i] += vb * vb;                                       \
                    }                                                           \
            }                                                                   \
            for (int64_t i = 0; i < n; i++) {                                   \
                int64_t k = o * inner + i0 + i;                                 \
                double na = fmax(sqrt(w1[i]), eps), nb = fmax(sqrt(w2[i]), eps); \
                inv[k] = 1 / na;                                                \
                inv[m + k] = 1 / nb;                                            \
                out[k] = (T)(w12[i] / (na * nb));                               \
            }                                                                   \
        }                                                                       \
    }                                                                           \
    static void cosine_backward_##S(const T *a, const T *b, const T *cos,       \
                                    const double *inv, const T *g, T *ga,       \
                                    T *gb, int64_t outer, int64_t reduce,       \
                                    int64_t inner)                              \
    {                                                                           \
        int64_t m = outer * inner;                                              \
        _Pragma("omp parallel for if (m * reduce > PAR_MIN) schedule(static)")  \
        for (int64_t o = 0; o < outer; o++)                                     \
            for (int64_t r = 0; r < reduce; r++) {                              \
                int64_t base = (o * reduce + r) * inner;                        \
                const T *pg = g + o * inner, *pc = cos + o * inner;             \
                const double *ia = inv + o * inner, *ib = inv + m + o * inner;  \
                for (int64_t i = 0; i < inner; i++) {                           \
                    T va = a[base + i], vb = b[base + i];                       \
                    T gab = pg[i] * (T)(ia[i] * ib[i]);                         \
                    T gc = pg[i] * pc[i];                                       \
                    if (ga)                                                     \
                        ga[base + i] = gab * vb - gc * va * (T)(ia[i] * ia[i]); \
                    if (gb)                                                     \
                        gb[base + i] = gab * va - gc * vb * (T)(ib[i] * ib[i]); \
                }                                                               \
            }                                                                   \
    }

DEFINE_COSINE_KERNELS(float, f32)
DEFINE_COSINE_KERNELS(double, f64)

/* x broadcast to shape[ndim], contiguous (x itself when nothing changes). */
static kd_tensor *broadcast_to(kd_tensor *x, int ndim, const int64_t *shape)
{
    if (x->ndim == ndim && memcmp(x->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return kd_contiguous_raw(x);
    kd_tensor *view = kd_tensor_alias(x);
    kd_tensor *out = view ? kd_tensor_empty(x->dtype, x->device, ndim, shape) : NULL;
    if (!out)
        return NULL;
    kd_broadcast_strides(x, ndim, shape, view->stride);
    view->ndim = ndim;
    memcpy(view->shape, shape, (size_t)ndim * sizeof *shape);
    return kd_tensor_copy_(out, view) == KD_OK ? out : NULL;
}

static kd_status cosine_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *a = node->inputs[0], *b = node->inputs[1];
    kd_tensor *ae = node->saved[0], *be = node->saved[1], *inv = node->saved[2];
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *ga = a->requires_grad ? kd_tensor_empty_like(ae) : NULL;
    kd_tensor *gb = b->requires_grad ? kd_tensor_empty_like(be) : NULL;
    if (!gc || (a->requires_grad && !ga) || (b->requires_grad && !gb))
        return KD_ERR_NOMEM;
    int64_t outer = node->iarg[0], reduce = node->iarg[1], inner = node->iarg[2];
    if (ae->dtype == KD_F32)
        cosine_backward_f32(kd_tensor_data(ae), kd_tensor_data(be),
                            kd_tensor_data(node->saved[3]), kd_tensor_data(inv),
                            kd_tensor_data(gc), ga ? kd_tensor_data(ga) : NULL,
                            gb ? kd_tensor_data(gb) : NULL, outer, reduce, inner);
    else
        cosine_backward_f64(kd_tensor_data(ae), kd_tensor_data(be),
                            kd_tensor_data(node->saved[3]), kd_tensor_data(inv),
                            kd_tensor_data(gc), ga ? kd_tensor_data(ga) : NULL,
                            gb ? kd_tensor_data(gb) : NULL, outer, reduce, inner);
    if (ga) {
        kd_tensor *r = kd_sum_to_shape(ga, a->ndim, a->shape);
        kd_status st = r ? kd_grad_accumulate_take(a, r) : KD_ERR_NOMEM;
        if (st != KD_OK)
            return st;
    }
    if (gb) {
        kd_tensor *r = kd_sum_to_shape(gb, b->ndim, b->shape);
        return r ? kd_grad_accumulate_take(b, r) : KD_ERR_NOMEM;
    }
    return KD_OK;
}

kd_tensor *kd_cosine_similarity(kd_tensor *a, kd_tensor *b, int dim, double eps)
{
    const char *op = "cosine_similarity";
    int ndim, d;
    int64_t shape[KD_MAX_DIMS];
    if (!a || !b || kd_check_float(op, a) != KD_OK || kd_check_float(op, b) != KD_OK ||
        kd_check_same(op, a, b) != KD_OK ||
        kd_broadcast_shape(op, a, b, &ndim, shape) != KD_OK ||
        kd_norm_dim(op, ndim, dim, &d) != KD_OK)
        return NULL;
    if (a->device != KD_CPU) {
        kd_error(KD_ERR_UNSUPPORTED, "%s: cuda tensors are not supported", op);
        return NULL;
    }
    if (ndim == 0) {
        kd_error(KD_ERR_INVALID, "%s: inputs have no dims", op);
        return NULL;
    }
    int64_t outer = kd_shape_numel(d, shape), reduce = shape[d];
    int64_t inner = kd_shape_numel(ndim - d - 1, shape + d + 1);
    int64_t out_shape[KD_MAX_DIMS];
    for (int i = 0, k = 0; i < ndim; i++)
        if (i != d)
            out_shape[k++] = shape[i];
    kd_tensor *ae = broadcast_to(a, ndim, shape), *be = broadcast_to(b, ndim, shape);
    kd_tensor *out = ae && be ? kd_tensor_empty(a->dtype, KD_CPU, ndim - 1, out_shape) : NULL;
    int64_t inv_shape[2] = {2, outer * inner};
    kd_tensor *inv = out ? kd_tensor_empty(KD_F64, KD_CPU, 2, inv_shape) : NULL;
    if (!inv)
        return NULL;
    if (a->dtype == KD_F32)
        cosine_forward_f32(kd_tensor_data(ae), kd_tensor_data(be), kd_tensor_data(out),
                           kd_tensor_data(inv), outer, reduce, inner, eps);
    else
        cosine_forward_f64(kd_tensor_data(ae), kd_tensor_data(be), kd_tensor_data(out),
                           kd_tensor_data(inv), outer, reduce, inner, eps);
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record(op, cosine_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = ae;
        node->saved[1] = be;
        node->saved[2] = inv;
        node->saved[3] = out;
        node->iarg[0] = outer;
        node->iarg[1] = reduce;
        node->iarg[2] = inner;
    }
    return out;
}

/* ------------------------------------------------------------ cdist */

/* Computed directly (not through |a|^2 + |b|^2 - 2 a.b) so small distances
 * keep their precision. */
#define DEFINE_CDIST_KERNEL(T, S)                                                \
    static void cdist_forward_##S(const T *a, const T *b, T *out, int64_t n,    \
                                  int64_t m, int64_t d)                         \
    {                                                                           \
        _Pragma("omp parallel for if (n * m * d > PAR_MIN) schedule(static)")   \
        for (int64_t i = 0; i < n; i++)                                         \
            for (int64_t j = 0; j < m; j++) {                                   \
                const T *pa = a + i * d, *pb = b + j * d;                       \
                T s = 0;                                                        \
                _Pragma("omp simd reduction(+ : s)")                            \
                for (int64_t k = 0; k < d; k++)                                 \
                    s += (pa[k] - pb[k]) * (pa[k] - pb[k]);                     \
                out[i * m + j] = sqrt(s);                                       \
            }                                                                   \
    }                                                                           \
    /* w = g / dist (0 where dist is 0); rowsum[i] = sum_j w, colsum[j] =     \
     * sum_i w. */                                                              \
    static void cdist_weights_##S(const T *g, const T *dist, T *w, T *rowsum,   \
                                  T *colsum, int64_t n, int64_t m)              \
    {                                                                           \
        for (int64_t j = 0; j < m; j++)                                         \
            colsum[j] = 0;                                                      \
        for (int64_t i = 0; i < n; i++) {                                       \
            T rs = 0;                                                           \
            for (int64_t j = 0; j < m; j++) {                                   \
                T v = dist[i * m + j] == 0 ? 0 : g[i * m + j] / dist[i * m + j]; \
                w[i * m + j] = v;                                               \
                rs += v;                                                        \
                colsum[j] += v;                                                 \
            }                                                                   \
            rowsum[i] = rs;                                                     \
        }                                                                       \
    }                                                                           \
    /* out[r, :] = scale[r] * x[r, :] - out[r, :] */                           \
    static void cdist_finish_##S(T *out, const T *x, const T *scale,           \
                                 int64_t rows, int64_t d)                       \
    {                                                                           \
        for (int64_t r = 0; r < rows; r++)                                      \
            for (int64_t k = 0; k < d; k++)                                     \
                out[r * d + k] = scale[r] * x[r * d + k] - out[r * d + k];      \
    }

DEFINE_CDIST_KERNEL(float, f32)
DEFINE_CDIST_KERNEL(double, f64)

/* ga_i = sum_j w_ij (a_i - b_j) = rowsum_i a_i - (W b)_i;
 * gb_j = sum_i w_ij (b_j - a_i) = colsum_j b_j - (W^T a)_j. */
static kd_status cdist_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *ain = node->inputs[0], *bin = node->inputs[1];
    kd_tensor *a = node->saved[0], *b = node->saved[1], *dist = node->saved[2];
    int64_t n = a->shape[0], m = b->shape[0], d = a->shape[1];
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *w = gc ? kd_tensor_empty_like(dist) : NULL;
    kd_tensor *rs = w ? kd_tensor_empty(a->dtype, KD_CPU, 1, &n) : NULL;
    kd_tensor *cs = rs ? kd_tensor_empty(a->dtype, KD_CPU, 1, &m) : NULL;
    kd_tensor *ga = cs ? kd_tensor_empty_like(a) : NULL;
    kd_tensor *gb = ga ? kd_tensor_empty_like(b) : NULL;
    if (!gb)
        return KD_ERR_NOMEM;
    bool f32 = a->dtype == KD_F32;
    if (f32)
        cdist_weights_f32(kd_tensor_data(gc), kd_tensor_data(dist), kd_tensor_data(w),
                          kd_tensor_data(rs), kd_tensor_data(cs), n, m);
    else
        cdist_weights_f64(kd_tensor_data(gc), kd_tensor_data(dist), kd_tensor_data(w),
                          kd_tensor_data(rs), kd_tensor_data(cs), n, m);
    if (ain->requires_grad && n * d > 0) {
        if (f32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)m,
                        1.0f, kd_tensor_data(w), (int)m, kd_tensor_data(b), (int)d, 0.0f,
                        kd_tensor_data(ga), (int)d);
            cdist_finish_f32(kd_tensor_data(ga), kd_tensor_data(a), kd_tensor_data(rs), n, d);
        } else {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)m,
                        1.0, kd_tensor_data(w), (int)m, kd_tensor_data(b), (int)d, 0.0,
                        kd_tensor_data(ga), (int)d);
            cdist_finish_f64(kd_tensor_data(ga), kd_tensor_data(a), kd_tensor_data(rs), n, d);
        }
        kd_status st = kd_grad_accumulate_take(ain, ga);
        if (st != KD_OK)
            return st;
    }
    if (bin->requires_grad && m * d > 0) {
        if (f32) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)d, (int)n,
                        1.0f, kd_tensor_data(w), (int)m, kd_tensor_data(a), (int)d, 0.0f,
                        kd_tensor_data(gb), (int)d);
            cdist_finish_f32(kd_tensor_data(gb), kd_tensor_data(b), kd_tensor_data(cs), m, d);
        } else {
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)d, (int)n,
                        1.0, kd_tensor_data(w), (int)m, kd_tensor_data(a), (int)d, 0.0,
                        kd_tensor_data(gb), (int)d);
            cdist_finish_f64(kd_tensor_data(gb), kd_tensor_data(b), kd_tensor_data(cs), m, d);
        }
        return kd_grad_accumulate_take(bin, gb);
    }
    return KD_OK;
}

kd_tensor *kd_cdist(kd_tensor *a, kd_tensor *b)
{
    const char *op = "cdist";
    if (!a || !b || kd_check_float(op, a) != KD_OK || kd_check_float(op, b) != KD_OK ||
        kd_check_same(op, a, b) != KD_OK)
        return NULL;
    if (a->device != KD_CPU) {
        kd_error(KD_ERR_UNSUPPORTED, "%s: cuda tensors are not supported", op);
        return NULL;
    }
    if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[1]) {
        char x[96], y[96];
        kd_error(KD_ERR_INVALID, "%s: a %s and b %s (expected [N, D] and [M, D])", op,
                 kd_shape_str(a, x, sizeof x), kd_shape_str(b, y, sizeof y));
        return NULL;
    }
    int64_t n = a->shape[0], m = b->shape[0], d = a->shape[1];
    kd_tensor *ac = kd_contiguous_raw(a), *bc = kd_contiguous_raw(b);
    int64_t shape[2] = {n, m};
    kd_tensor *out = ac && bc ? kd_tensor_empty(a->dtype, KD_CPU, 2, shape) : NULL;
    if (!out)
        return NULL;
    if (a->dtype == KD_F32)
        cdist_forward_f32(kd_tensor_data(ac), kd_tensor_data(bc), kd_tensor_data(out), n, m, d);
    else
        cdist_forward_f64(kd_tensor_data(ac), kd_tensor_data(bc), kd_tensor_data(out), n, m, d);
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record(op, cdist_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = ac;
        node->saved[1] = bc;
        node->saved[2] = out;
    }
    return out;
}
