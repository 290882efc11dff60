/* 2-D pooling over NCHW planes: max, average and adaptive average.
 *
 * Every pool here reads a rectangular window per output, and the windows
 * are separable: output row oy covers input rows [lo[oy], hi[oy]) and
 * output column ox covers columns [lo[ox], hi[ox]), worked out once per
 * call. Averages divide by count_h[oy] * count_w[ox], which covers torch's
 * count_include_pad both ways and the adaptive bins. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_ADAPTIVE } pool_kind;

static const char *const pool_names[] = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"};

/* Windows along one dim: lo/hi clipped to the input, count the divisor. */
typedef struct pool_axis {
    int64_t *lo, *hi, *count;
} pool_axis;

typedef struct pool_geom {
    int64_t planes, h, w, oh, ow;
    pool_axis rows, cols;
    /* Windowed pools: kernel column kx of output ox reads input column
     * ox * sw + kx - pw, inside the input for ox in [kx_lo[kx], kx_hi[kx]). */
    int64_t kw, sw, pw;
    int64_t *kx_lo, *kx_hi;
    void *mem;
} pool_geom;

/* iarg layout of a recorded pool. */
enum { A_KIND, A_KH, A_KW, A_SH, A_SW, A_PH, A_PW, A_INCLUDE_PAD, A_OH, A_OW };

static void axis_windows(const int64_t *a, int64_t out, int64_t size, int k, int s, int p,
                         pool_axis *ax)
{
    bool include_pad = a[A_INCLUDE_PAD] != 0;
    for (int64_t i = 0; i < out; i++) {
        int64_t lo = i * s - p, hi = lo + k;
        int64_t padded_hi = hi < size + p ? hi : size + p;
        int64_t span = padded_hi - lo;
        lo = lo > 0 ? lo : 0;
        hi = hi < size ? hi : size;
        ax->lo[i] = lo;
        ax->hi[i] = hi;
        ax->count[i] = include_pad ? span : hi - lo;
    }
}

static void axis_adaptive(int64_t out, int64_t size, pool_axis *ax)
{
    for (int64_t i = 0; i < out; i++) {
        ax->lo[i] = i * size / out;
        ax->hi[i] = ((i + 1) * size + out - 1) / out;
        ax->count[i] = ax->hi[i] - ax->lo[i];
    }
}

static kd_status geom_init(const kd_tensor *x, const int64_t *a, pool_geom *g)
{
    g->planes = x->shape[0] * x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->oh = a[A_OH];
    g->ow = a[A_OW];
    g->kw = a[A_KW];
    g->sw = a[A_SW];
    g->pw = a[A_PW];
    g->mem = malloc((size_t)((g->oh + g->ow) * 3 + 2 * g->kw) * sizeof(int64_t));
    if (!g->mem)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory", pool_names[a[A_KIND]]);
    int64_t *m = g->mem;
    g->rows = (pool_axis){m, m + g->oh, m + 2 * g->oh};
    m += 3 * g->oh;
    g->cols = (pool_axis){m, m + g->ow, m + 2 * g->ow};
    m += 3 * g->ow;
    g->kx_lo = m;
    g->kx_hi = m + g->kw;
    if (a[A_KIND] == POOL_ADAPTIVE) {
        axis_adaptive(g->oh, g->h, &g->rows);
        axis_adaptive(g->ow, g->w, &g->cols);
        return KD_OK;
    }
    axis_windows(a, g->oh, g->h, (int)a[A_KH], (int)a[A_SH], (int)a[A_PH], &g->rows);
    axis_windows(a, g->ow, g->w, (int)a[A_KW], (int)a[A_SW], (int)a[A_PW], &g->cols);
    for (int64_t kx = 0; kx < g->kw; kx++) {
        int64_t first = g->pw - kx, limit = g->w + g->pw - kx; /* ox * sw in [first, limit) */
        int64_t lo = first <= 0 ? 0 : (first + g->sw - 1) / g->sw;
        int64_t hi = limit <= 0 ? 0 : (limit + g->sw - 1) / g->sw;
        g->kx_lo[kx] = lo < g->ow ? lo : g->ow;
        g->kx_hi[kx] = hi < g->ow ? (hi > g->kx_lo[kx] ? hi : g->kx_lo[kx]) : g->ow;
    }
    return KD_OK;
}

#define POOL_PARALLEL "omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)"

#define DEFINE_POOL_KERNELS(T, SUFFIX)                                                  \
    /* Window maxima; the first maximum wins a tie and NaN propagates, as    \
     * in torch. argmax (NULL when no gradient is needed) gets its offset    \
     * in the plane. A row of outputs is updated together, one window        \
     * element at a time, in the window's row-major order. */                   \
    static void max_forward_##SUFFIX(const pool_geom *g, const T *x, T *y,              \
                                     int32_t *argmax)                                  \
    {                                                                                  \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            const T *xp = x + pl * g->h * g->w;                                         \
            for (int64_t oy = 0; oy < g->oh; oy++) {                                   \
                T *yr = y + (pl * g->oh + oy) * g->ow;                                 \
                int32_t *ar = argmax ? argmax + (pl * g->oh + oy) * g->ow : NULL;      \
                for (int64_t ox = 0; ox < g->ow; ox++)                                 \
                    yr[ox] = -INFINITY;                                                \
                if (ar)                                                                \
                    for (int64_t ox = 0; ox < g->ow; ox++)                             \
                        ar[ox] = (int32_t)(g->rows.lo[oy] * g->w + g->cols.lo[ox]);    \
                for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++) {         \
                    for (int64_t kx = 0; kx < g->kw; kx++) {                           \
                        int64_t o0 = g->kx_lo[kx], o1 = g->kx_hi[kx], sw = g->sw;      \
                        int64_t at = iy * g->w + kx - g->pw;                           \
                        const T *xr = xp + at;                                         \
                        if (ar) {                                                      \
                            _Pragma("omp simd")                                        \
                            for (int64_t ox = o0; ox < o1; ox++) {                     \
                                T v = xr[ox * sw];                                     \
                                bool take = v > yr[ox] || v != v;                      \
                                yr[ox] = take ? v : yr[ox];                            \
                                ar[ox] = take ? (int32_t)(at + ox * sw) : ar[ox];      \
                            }                                                          \
                        } else {                                                       \
                            _Pragma("omp simd")                                        \
                            for (int64_t ox = o0; ox < o1; ox++) {                     \
                                T v = xr[ox * sw];                                     \
                                yr[ox] = (v > yr[ox] || v != v) ? v : yr[ox];          \
                            }                                                          \
                        }                                                              \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    static void max_backward_##SUFFIX(const pool_geom *g, const T *gy,                  \
                                      const int32_t *argmax, T *gx)                     \
    {                                                                                  \
        int64_t out = g->oh * g->ow;                                                   \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            T *gp = gx + pl * g->h * g->w;                                              \
            memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));                           \
            for (int64_t o = pl * out; o < (pl + 1) * out; o++)                        \
                gp[argmax[o]] += gy[o];                                                \
        }                                                                              \
    }                                                                                  \
    /* avg_pool2d's windows, a row of outputs at a time as for the maxima. */   \
    static void window_avg_forward_##SUFFIX(const pool_geom *g, const T *x, T *y)       \
    {                                                                                  \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            const T *xp = x + pl * g->h * g->w;                                         \
            for (int64_t oy = 0; oy < g->oh; oy++) {                                   \
                T *yr = y + (pl * g->oh + oy) * g->ow;                                 \
                for (int64_t ox = 0; ox < g->ow; ox++)                                 \
                    yr[ox] = 0;                                                        \
                for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++) {         \
                    for (int64_t kx = 0; kx < g->kw; kx++) {                           \
                        int64_t o0 = g->kx_lo[kx], o1 = g->kx_hi[kx], sw = g->sw;      \
                        const T *xr = xp + iy * g->w + kx - g->pw;                     \
                        _Pragma("omp simd")                                            \
                        for (int64_t ox = o0; ox < o1; ox++)                           \
                            yr[ox] += xr[ox * sw];                                     \
                    }                                                                  \
                }                                                                      \
                T ch = (T)g->rows.count[oy];                                           \
                for (int64_t ox = 0; ox < g->ow; ox++)                                 \
                    yr[ox] /= ch * (T)g->cols.count[ox];                               \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    /* gs holds gy already divided by each window's count. */                      \
    static void window_avg_backward_##SUFFIX(const pool_geom *g, const T *gs, T *gx)    \
    {                                                                                  \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            T *gp = gx + pl * g->h * g->w;                                              \
            memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));                           \
            for (int64_t oy = 0; oy < g->oh; oy++) {                                   \
                const T *gr = gs + (pl * g->oh + oy) * g->ow;                          \
                for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++) {         \
                    for (int64_t kx = 0; kx < g->kw; kx++) {                           \
                        int64_t o0 = g->kx_lo[kx], o1 = g->kx_hi[kx], sw = g->sw;      \
                        T *dst = gp + iy * g->w + kx - g->pw;                          \
                        _Pragma("omp simd")                                            \
                        for (int64_t ox = o0; ox < o1; ox++)                           \
                            dst[ox * sw] += gr[ox];                                    \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    static void scale_by_counts_##SUFFIX(const pool_geom *g, const T *gy, T *gs)        \
    {                                                                                  \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++)                                     \
            for (int64_t oy = 0; oy < g->oh; oy++) {                                   \
                int64_t o = (pl * g->oh + oy) * g->ow;                                 \
                T ch = (T)g->rows.count[oy];                                           \
                for (int64_t ox = 0; ox < g->ow; ox++)                                 \
                    gs[o + ox] = gy[o + ox] / (ch * (T)g->cols.count[ox]);             \
            }                                                                          \
    }                                                                                  \
    /* Adaptive bins: any window per output. */                                    \
    static void avg_forward_##SUFFIX(const pool_geom *g, const T *x, T *y)              \
    {                                                                                  \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            const T *xp = x + pl * g->h * g->w;                                         \
            for (int64_t oy = 0; oy < g->oh; oy++) {                                   \
                for (int64_t ox = 0; ox < g->ow; ox++) {                               \
                    T s = 0;                                                           \
                    for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++)       \
                        for (int64_t ix = g->cols.lo[ox]; ix < g->cols.hi[ox]; ix++)   \
                            s += xp[iy * g->w + ix];                                   \
                    y[(pl * g->oh + oy) * g->ow + ox] =                                \
                        s / (T)(g->rows.count[oy] * g->cols.count[ox]);                \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    static void avg_backward_##SUFFIX(const pool_geom *g, const T *gy, T *gx)           \
    {                                                                                  \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            T *gp = gx + pl * g->h * g->w;                                              \
            memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));                           \
            for (int64_t oy = 0; oy < g->oh; oy++) {                                   \
                for (int64_t ox = 0; ox < g->ow; ox++) {                               \
                    T v = gy[(pl * g->oh + oy) * g->ow + ox] /                         \
                          (T)(g->rows.count[oy] * g->cols.count[ox]);                  \
                    for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++)       \
                        for (int64_t ix = g->cols.lo[ox]; ix < g->cols.hi[ox]; ix++)   \
                            gp[iy * g->w + ix] += v;                                   \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    /* Global pooling: one mean per plane, one value spread per plane. */      \
    static void global_forward_##SUFFIX(const pool_geom *g, const T *x, T *y)           \
    {                                                                                  \
        int64_t n = g->h * g->w;                                                       \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            const T *xp = x + pl * n;                                                  \
            T s = 0;                                                                   \
            _Pragma("omp simd reduction(+ : s)")                                       \
            for (int64_t i = 0; i < n; i++)                                            \
                s += xp[i];                                                            \
            y[pl] = s / (T)n;                                                          \
        }                                                                              \
    }                                                                                  \
    static void global_backward_##SUFFIX(const pool_geom *g, const T *gy, T *gx)        \
    {                                                                                  \
        int64_t n = g->h * g->w;                                                       \
        _Pragma(POOL_PARALLEL)                                                          \
        for (int64_t pl = 0; pl < g->planes; pl++) {                                   \
            T v = gy[pl] / (T)n, *gp = gx + pl * n;                                    \
            for (int64_t i = 0; i < n; i++)                                            \
                gp[i] = v;                                                             \
        }                                                                              \
    }

DEFINE_POOL_KERNELS(float, f32)
DEFINE_POOL_KERNELS(double, f64)

static bool is_global(const pool_geom *g)
{
    return g->oh == 1 && g->ow == 1 && g->rows.lo[0] == 0 && g->rows.hi[0] == g->h &&
           g->cols.lo[0] == 0 && g->cols.hi[0] == g->w &&
           g->rows.count[0] * g->cols.count[0] == g->h * g->w;
}

static kd_status pool_backward(kd_node *node, kd_tensor *gy)
{
    kd_tensor *x = node->inputs[0];
    const int64_t *a = node->iarg;
    pool_geom g;
    kd_status st = geom_init(x, a, &g);
    if (st != KD_OK)
        return st;
    kd_tensor *gx = kd_tensor_empty(x->dtype, KD_CPU, 4, x->shape);
    kd_tensor *gs = a[A_KIND] == POOL_AVG ? kd_tensor_empty_like(gy) : gx;
    if (!gx || !gs) {
        free(g.mem);
        return KD_ERR_NOMEM;
    }
    bool f32 = x->dtype == KD_F32;
    void *gxd = kd_tensor_data(gx);
    const void *gyd = kd_tensor_data(gy);
    if (a[A_KIND] == POOL_MAX) {
        if (f32)
            max_backward_f32(&g, gyd, node->ctx, gxd);
        else
            max_backward_f64(&g, gyd, node->ctx, gxd);
    } else if (is_global(&g)) {
        if (f32)
            global_backward_f32(&g, gyd, gxd);
        else
            global_backward_f64(&g, gyd, gxd);
    } else if (a[A_KIND] == POOL_AVG) {
        void *gsd = kd_tensor_data(gs);
        if (f32) {
            scale_by_counts_f32(&g, gyd, gsd);
            window_avg_backward_f32(&g, gsd, gxd);
        } else {
            scale_by_counts_f64(&g, gyd, gsd);
            window_avg_backward_f64(&g, gsd, gxd);
        }
    } else {
        if (f32)
            avg_backward_f32(&g, gyd, gxd);
        else
            avg_backward_f64(&g, gyd, gxd);
    }
    free(g.mem);
    return kd_grad_accumulate_take(x, gx);
}

/* Checks x, makes the output, runs the forward and records it. */
static kd_tensor *pool(kd_tensor *x, int64_t *a)
{
    const char *op = pool_names[a[A_KIND]];
    if (kd_check_float(op, x) != KD_OK)
        return NULL;
    char sx[96];
    if (x->device != KD_CPU) {
        kd_error(KD_ERR_UNSUPPORTED, "%s: CUDA tensors are not supported yet", op);
        return NULL;
    }
    if (x->ndim != 4) {
        kd_error(KD_ERR_INVALID, "%s: input %s must be 4-D (NCHW)", op,
                 kd_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    if (x->shape[2] * x->shape[3] > INT32_MAX) {
        kd_error(KD_ERR_UNSUPPORTED, "%s: input %s has planes over 2^31 elements", op,
                 kd_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    kd_tensor *xc = kd_contiguous_raw(x);
    int64_t shape[4] = {x->shape[0], x->shape[1], a[A_OH], a[A_OW]};
    kd_tensor *y = xc ? kd_tensor_empty(x->dtype, KD_CPU, 4, shape) : NULL;
    pool_geom g;
    if (!y || geom_init(x, a, &g) != KD_OK)
        return NULL;
    kd_node *node;
    if (kd_record(op, pool_backward, y, 1, &x, &node) != KD_OK) {
        free(g.mem);
        return NULL;
    }
    if (node)
        memcpy(node->iarg, a, (A_OW + 1) * sizeof *a);
    bool f32 = x->dtype == KD_F32;
    const void *xd = kd_tensor_data(xc);
    void *yd = kd_tensor_data(y);
    if (a[A_KIND] == POOL_MAX) {
        int32_t *argmax = NULL;
        if (node) {
            argmax = kd_node_ctx(node, (size_t)kd_tensor_numel(y) * sizeof *argmax + 1);
            if (!argmax) {
                free(g.mem);
                kd_error(KD_ERR_NOMEM, "%s: out of host memory", op);
                return NULL;
            }
        }
        if (f32)
            max_forward_f32(&g, xd, yd, argmax);
        else
            max_forward_f64(&g, xd, yd, argmax);
    } else if (is_global(&g)) {
        if (f32)
            global_forward_f32(&g, xd, yd);
        else
            global_forward_f64(&g, xd, yd);
    } else if (a[A_KIND] == POOL_AVG) {
        if (f32)
            window_avg_forward_f32(&g, xd, yd);
        else
            window_avg_forward_f64(&g, xd, yd);
    } else {
        if (f32)
            avg_forward_f32(&g, xd, yd);
        else
            avg_forward_f64(&g, xd, yd);
    }
    free(g.mem);
    return y;
}

/* Checks a windowed pool's parameters and runs it. */
static kd_tensor *windowed(pool_kind kind, kd_tensor *x, const int kernel[2],
                           const int stride[2], const int padding[2], bool include_pad)
{
    if (!x)
        return NULL;
    const char *op = pool_names[kind];
    if (!kernel) {
        kd_error(KD_ERR_INVALID, "%s: NULL kernel size", op);
        return NULL;
    }
    int s[2] = {stride ? stride[0] : kernel[0], stride ? stride[1] : kernel[1]};
    int p[2] = {padding ? padding[0] : 0, padding ? padding[1] : 0};
    for (int i = 0; i < 2; i++) {
        if (kernel[i] < 1 || s[i] < 1 || p[i] < 0 || p[i] > kernel[i] / 2) {
            kd_error(KD_ERR_INVALID,
                     "%s: kernel (%d, %d), stride (%d, %d), padding (%d, %d): kernel and "
                     "stride must be >= 1 and padding at most half the kernel",
                     op, kernel[0], kernel[1], s[0], s[1], p[0], p[1]);
            return NULL;
        }
    }
    if (x->ndim == 4 && (x->shape[2] + 2 * p[0] < kernel[0] ||
                         x->shape[3] + 2 * p[1] < kernel[1])) {
        char sx[96];
        kd_error(KD_ERR_INVALID, "%s: kernel (%d, %d) is larger than input %s padded by (%d, %d)",
                 op, kernel[0], kernel[1], kd_shape_str(x, sx, sizeof sx), p[0], p[1]);
        return NULL;
    }
    int64_t a[A_OW + 1] = {kind, kernel[0], kernel[1], s[0], s[1], p[0], p[1], include_pad};
    if (x->ndim == 4) {
        a[A_OH] = (x->shape[2] + 2 * p[0] - kernel[0]) / s[0] + 1;
        a[A_OW] = (x->shape[3] + 2 * p[1] - kernel[1]) / s[1] + 1;
    }
    return pool(x, a);
}

kd_tensor *kd_max_pool2d(kd_tensor *x, const int kernel[2], const int stride[2],
                         const int padding[2])
{
    return windowed(POOL_MAX, x, kernel, stride, padding, false);
}

kd_tensor *kd_avg_pool2d(kd_tensor *x, const int kernel[2], const int stride[2],
                         const int padding[2], bool count_include_pad)
{
    return windowed(POOL_AVG, x, kernel, stride, padding, count_include_pad);
}

kd_tensor *kd_adaptive_avg_pool2d(kd_tensor *x, int out_h, int out_w)
{
    if (!x)
        return NULL;
    if (out_h < 1 || out_w < 1) {
        kd_error(KD_ERR_INVALID, "adaptive_avg_pool2d: output size (%d, %d) must be >= 1",
                 out_h, out_w);
        return NULL;
    }
    int64_t a[A_OW + 1] = {POOL_ADAPTIVE};
    a[A_OH] = out_h;
    a[A_OW] = out_w;
    return pool(x, a);
}
