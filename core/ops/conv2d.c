/* kd_conv2d: shape checks, the choice of kernel, and the backward pass.
 * Depthwise convolutions run the direct kernel below in every dtype (it
 * beats oneDNN 2.6, whose depthwise weight gradient is several times
 * slower). Others run on oneDNN in f32 when the build has it; f64 (the
 * gradient check) and builds without oneDNN run im2col + GEMM
 * (conv2d_im2col.c). */
#include <stdlib.h>
#include <string.h>

#include "conv2d_internal.h"

/* ------------------------------------------------------------ depthwise
 * groups == Cin == Cout: one small filter per channel, where GEMM-based
 * kernels have nothing to multiply. Each plane is first copied into a
 * zero-padded buffer with row length wp, so no inner loop tests bounds.
 * With stride 1 the output is computed on rows of length wp as well: every
 * filter tap is then a fixed offset into the flat padded plane, so a run of
 * outputs is one multiply-add per tap over contiguous memory; the extra
 * wp - ow columns are dropped (or are zero in a gradient). Strided
 * convolutions take plain row loops. */

static bool depthwise_applies(const kd_conv2d_geom *g)
{
    return g->groups > 1 && g->groups == g->cin && g->groups == g->cout;
}

#define DW_LANES 8
#define DW_STEP (4 * DW_LANES) /* four independent vector sums per run */

/* Buffer sizes for one plane; flat loops run in whole DW_STEPs and may
 * read up to one tap offset (reach) and one DW_STEP past their data. */
typedef struct dw_dims {
    int64_t hp, wp;  /* the padded plane */
    int64_t flat;    /* oh * wp: stride-1 outputs on padded rows */
    int64_t reach;   /* the largest tap offset in the flat plane */
    int64_t padded;  /* the padded-plane buffer */
    int64_t wide;    /* the buffer of gy or outputs on padded rows */
} dw_dims;

static dw_dims dw_dims_of(const kd_conv2d_geom *g)
{
    dw_dims d = {.hp = g->h + 2 * g->pad[0], .wp = g->w + 2 * g->pad[1]};
    d.flat = g->oh * d.wp;
    d.reach = (g->kh - 1) * g->dil[0] * d.wp + (g->kw - 1) * g->dil[1];
    d.padded = d.hp * d.wp + d.reach + DW_STEP;
    d.wide = d.flat + 2 * d.reach + 2 * DW_STEP;
    return d;
}

static bool dw_flat(const kd_conv2d_geom *g)
{
    return g->stride[0] == 1 && g->stride[1] == 1;
}

#define DW_KERNEL_ATTR __attribute__((target_clones("avx2", "default")))

#define DEFINE_DEPTHWISE(T, SUFFIX)                                                    \
    typedef T vec_##SUFFIX __attribute__((vector_size(DW_LANES * sizeof(T))));          \
    /* Rows are short: inline loops beat memcpy/memset calls. */                  \
    static inline void dw_copy_##SUFFIX(T *dst, const T *src, int64_t n)                \
    {                                                                                  \
        _Pragma("omp simd")                                                            \
        for (int64_t i = 0; i < n; i++)                                                \
            dst[i] = src[i];                                                           \
    }                                                                                  \
    static inline void dw_zero_##SUFFIX(T *dst, int64_t n)                              \
    {                                                                                  \
        _Pragma("omp simd")                                                            \
        for (int64_t i = 0; i < n; i++)                                                \
            dst[i] = 0;                                                                \
    }                                                                                  \
    static void dw_pad_##SUFFIX(const kd_conv2d_geom *g, const dw_dims *d, const T *src,\
                                T *dst)                                                \
    {                                                                                  \
        int64_t top = g->pad[0] * d->wp + g->pad[1], gap = d->wp - g->w;               \
        dw_zero_##SUFFIX(dst, top);                                                    \
        for (int64_t y = 0; y < g->h; y++) {                                           \
            T *row = dst + top + y * d->wp;                                            \
            dw_copy_##SUFFIX(row, src + y * g->w, g->w);                               \
            dw_zero_##SUFFIX(row + g->w, gap);                                         \
        }                                                                              \
        int64_t end = top + g->h * d->wp;                                              \
        dw_zero_##SUFFIX(dst + end, d->padded - end);                                  \
    }                                                                                  \
    /* gy's plane on rows of length wp at offset `at` of a zeroed buffer. */      \
    static void dw_widen_##SUFFIX(const kd_conv2d_geom *g, const dw_dims *d,            \
                                  const T *gy, int64_t at, T *dst)                     \
    {                                                                                  \
        memset(dst, 0, (size_t)d->wide * sizeof(T));                                   \
        for (int64_t y = 0; y < g->oh; y++)                                            \
            dw_copy_##SUFFIX(dst + at + y * d->wp, gy + y * g->ow, g->ow);             \
    }                                                                                  \
    /* dst[u] = b + sum over taps of w[tap] * src[u + sign * offset(tap)] for  \
     * u < n, in whole DW_STEPs. */                                                \
    DW_KERNEL_ATTR static void dw_taps_##SUFFIX(const kd_conv2d_geom *g,                \
                                                const dw_dims *d, const T *src,         \
                                                int64_t sign, int64_t n, const T *w,    \
                                                T b, T *dst)                            \
    {                                                                                  \
        for (int64_t u = 0; u < n; u += DW_STEP) {                                     \
            vec_##SUFFIX a0 = {0}, a1, a2, a3, v0, v1, v2, v3;                         \
            a0 += b;                                                                   \
            a1 = a2 = a3 = a0;                                                         \
            for (int64_t ki = 0; ki < g->kh; ki++) {                                   \
                for (int64_t kj = 0; kj < g->kw; kj++) {                               \
                    const T *p = src + u + sign * (ki * g->dil[0] * d->wp + kj * g->dil[1]); \
                    T wv = w[ki * g->kw + kj];                                         \
                    memcpy(&v0, p, sizeof v0);                                         \
                    memcpy(&v1, p + DW_LANES, sizeof v1);                              \
                    memcpy(&v2, p + 2 * DW_LANES, sizeof v2);                          \
                    memcpy(&v3, p + 3 * DW_LANES, sizeof v3);                          \
                    a0 += wv * v0;                                                     \
                    a1 += wv * v1;                                                     \
                    a2 += wv * v2;                                                     \
                    a3 += wv * v3;                                                     \
                }                                                                      \
            }                                                                          \
            memcpy(dst + u, &a0, sizeof a0);                                           \
            memcpy(dst + u + DW_LANES, &a1, sizeof a1);                                \
            memcpy(dst + u + 2 * DW_LANES, &a2, sizeof a2);                            \
            memcpy(dst + u + 3 * DW_LANES, &a3, sizeof a3);                            \
        }                                                                              \
    }                                                                                  \
    /* sum over u < n of a[u] * b[u], in whole DW_STEPs. */                         \
    DW_KERNEL_ATTR static T dw_dot_##SUFFIX(const T *a, const T *b, int64_t n)          \
    {                                                                                  \
        vec_##SUFFIX s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, x0, x1, x2, x3, y0, y1, y2, y3; \
        for (int64_t u = 0; u < n; u += DW_STEP) {                                     \
            memcpy(&x0, a + u, sizeof x0);                                             \
            memcpy(&x1, a + u + DW_LANES, sizeof x1);                                  \
            memcpy(&x2, a + u + 2 * DW_LANES, sizeof x2);                              \
            memcpy(&x3, a + u + 3 * DW_LANES, sizeof x3);                              \
            memcpy(&y0, b + u, sizeof y0);                                             \
            memcpy(&y1, b + u + DW_LANES, sizeof y1);                                  \
            memcpy(&y2, b + u + 2 * DW_LANES, sizeof y2);                              \
            memcpy(&y3, b + u + 3 * DW_LANES, sizeof y3);                              \
            s0 += x0 * y0;                                                             \
            s1 += x1 * y1;                                                             \
            s2 += x2 * y2;                                                             \
            s3 += x3 * y3;                                                             \
        }                                                                              \
        s0 += s1 + s2 + s3;                                                            \
        T s = 0;                                                                       \
        for (int l = 0; l < DW_LANES; l++)                                             \
            s += s0[l];                                                                \
        return s;                                                                      \
    }                                                                                  \
    /* One output plane from its padded input plane. */                            \
    DW_KERNEL_ATTR static void dw_forward_plane_##SUFFIX(                               \
        const kd_conv2d_geom *g, const dw_dims *d, const T *pad, const T *w, T b,      \
        T *wide, T *out)                                                               \
    {                                                                                  \
        if (dw_flat(g)) {                                                              \
            dw_taps_##SUFFIX(g, d, pad, 1, d->flat, w, b, wide);                       \
            for (int64_t y = 0; y < g->oh; y++)                                        \
                dw_copy_##SUFFIX(out + y * g->ow, wide + y * d->wp, g->ow);            \
            return;                                                                    \
        }                                                                              \
        int64_t sw = g->stride[1];                                                     \
        for (int64_t i = 0; i < g->oh * g->ow; i++)                                    \
            out[i] = b;                                                                \
        for (int64_t ki = 0; ki < g->kh; ki++)                                         \
            for (int64_t kj = 0; kj < g->kw; kj++) {                                   \
                T wv = w[ki * g->kw + kj];                                             \
                for (int64_t y = 0; y < g->oh; y++) {                                  \
                    const T *src = pad + (y * g->stride[0] + ki * g->dil[0]) * d->wp + \
                                   kj * g->dil[1];                                     \
                    T *dst = out + y * g->ow;                                          \
                    for (int64_t x = 0; x < g->ow; x++)                                \
                        dst[x] += wv * src[x * sw];                                    \
                }                                                                      \
            }                                                                          \
    }                                                                                  \
    /* One input-gradient plane gx from gy; gpad is scratch of the padded    \
     * plane's size. With stride 1 each padded input position gathers the    \
     * gy values that its taps reached, read from gy on padded rows with     \
     * `reach` zeros in front. */                                                  \
    DW_KERNEL_ATTR static void dw_backward_data_plane_##SUFFIX(                         \
        const kd_conv2d_geom *g, const dw_dims *d, const T *gy, const T *w, T *wide,   \
        T *gpad, T *gx)                                                                \
    {                                                                                  \
        int64_t first_row = g->pad[0];                                                 \
        if (dw_flat(g)) {                                                              \
            dw_widen_##SUFFIX(g, d, gy, d->reach, wide);                               \
            dw_taps_##SUFFIX(g, d, wide + d->reach + g->pad[0] * d->wp, -1,            \
                             g->h * d->wp, w, 0, gpad);                                \
            first_row = 0;                                                             \
        } else {                                                                       \
            int64_t sw = g->stride[1];                                                 \
            memset(gpad, 0, (size_t)d->padded * sizeof(T));                            \
            for (int64_t ki = 0; ki < g->kh; ki++)                                     \
                for (int64_t kj = 0; kj < g->kw; kj++) {                               \
                    T wv = w[ki * g->kw + kj];                                         \
                    for (int64_t y = 0; y < g->oh; y++) {                              \
                        T *dst = gpad + (y * g->stride[0] + ki * g->dil[0]) * d->wp +  \
                                 kj * g->dil[1];                                       \
                        const T *src = gy + y * g->ow;                                 \
                        for (int64_t x = 0; x < g->ow; x++)                            \
                            dst[x * sw] += wv * src[x];                                \
                    }                                                                  \
                }                                                                      \
        }                                                                              \
        for (int64_t r = 0; r < g->h; r++)                                             \
            dw_copy_##SUFFIX(gx + r * g->w, gpad + (r + first_row) * d->wp + g->pad[1], \
                             g->w);                                                    \
    }                                                                                  \
    /* Adds one plane's products into gw (kh x kw) and *gb. */                    \
    DW_KERNEL_ATTR static void dw_backward_weights_plane_##SUFFIX(                      \
        const kd_conv2d_geom *g, const dw_dims *d, const T *pad, const T *gy, T *wide, \
        T *gw, T *gb)                                                                  \
    {                                                                                  \
        T sb = 0;                                                                      \
        for (int64_t i = 0; i < g->oh * g->ow; i++)                                    \
            sb += gy[i];                                                               \
        *gb += sb;                                                                     \
        bool flat = dw_flat(g);                                                        \
        if (flat)                                                                      \
            dw_widen_##SUFFIX(g, d, gy, 0, wide);                                      \
        for (int64_t ki = 0; ki < g->kh; ki++)                                         \
            for (int64_t kj = 0; kj < g->kw; kj++) {                                   \
                const T *src = pad + ki * g->dil[0] * d->wp + kj * g->dil[1];          \
                T s = 0;                                                               \
                if (flat) {                                                            \
                    s = dw_dot_##SUFFIX(wide, src, d->flat);                           \
                } else {                                                               \
                    for (int64_t y = 0; y < g->oh; y++) {                              \
                        const T *row = src + y * g->stride[0] * d->wp;                 \
                        const T *dy = gy + y * g->ow;                                  \
                        for (int64_t x = 0; x < g->ow; x++)                            \
                            s += dy[x] * row[x * g->stride[1]];                        \
                    }                                                                  \
                }                                                                      \
                gw[ki * g->kw + kj] += s;                                              \
            }                                                                          \
    }

DEFINE_DEPTHWISE(float, f32)
DEFINE_DEPTHWISE(double, f64)

#define DW_PARALLEL \
    "omp parallel reduction(||: failed) if (g->n * g->cin * g->oh * g->ow * g->kh * g->kw > 65536)"

/* Per-thread scratch: a padded plane, then a wide one. */
static void *dw_scratch(const dw_dims *d, size_t es)
{
    return malloc((size_t)(d->padded + d->wide) * es);
}

static kd_status depthwise_forward(const kd_conv2d_geom *g, kd_tensor *x, kd_tensor *w,
                                   kd_tensor *b, kd_tensor *y)
{
    dw_dims d = dw_dims_of(g);
    bool f32 = x->dtype == KD_F32, failed = false;
    size_t es = kd_dtype_size(x->dtype);
    const char *xd = kd_tensor_data(x), *wd = kd_tensor_data(w);
    const char *bd = b ? kd_tensor_data(b) : NULL;
    char *yd = kd_tensor_data(y);
    int64_t planes = g->n * g->cin, in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    int64_t taps = g->kh * g->kw;
    _Pragma(DW_PARALLEL)
    {
        char *scratch = dw_scratch(&d, es);
        if (!scratch)
            failed = true;
        _Pragma("omp for schedule(static)")
        for (int64_t pl = 0; pl < planes; pl++) {
            if (!scratch)
                continue;
            int64_t c = pl % g->cin;
            char *pad = scratch, *wide = scratch + d.padded * (int64_t)es;
            const char *src = xd + pl * in_plane * (int64_t)es, *wc = wd + c * taps * (int64_t)es;
            char *out = yd + pl * out_plane * (int64_t)es;
            if (f32) {
                dw_pad_f32(g, &d, (const float *)src, (float *)pad);
                dw_forward_plane_f32(g, &d, (const float *)pad, (const float *)wc,
                                     bd ? ((const float *)bd)[c] : 0, (float *)wide, (float *)out);
            } else {
                dw_pad_f64(g, &d, (const double *)src, (double *)pad);
                dw_forward_plane_f64(g, &d, (const double *)pad, (const double *)wc,
                                     bd ? ((const double *)bd)[c] : 0, (double *)wide,
                                     (double *)out);
            }
        }
        free(scratch);
    }
    return failed ? kd_error(KD_ERR_NOMEM, "conv2d: out of memory for depthwise scratch")
                  : KD_OK;
}

static kd_status depthwise_backward_data(const kd_conv2d_geom *g, kd_tensor *gy,
                                         kd_tensor *w, kd_tensor *gx)
{
    dw_dims d = dw_dims_of(g);
    bool f32 = gy->dtype == KD_F32, failed = false;
    size_t es = kd_dtype_size(gy->dtype);
    const char *gyd = kd_tensor_data(gy), *wd = kd_tensor_data(w);
    char *gxd = kd_tensor_data(gx);
    int64_t planes = g->n * g->cin, in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    int64_t taps = g->kh * g->kw;
    _Pragma(DW_PARALLEL)
    {
        char *scratch = dw_scratch(&d, es);
        if (!scratch)
            failed = true;
        _Pragma("omp for schedule(static)")
        for (int64_t pl = 0; pl < planes; pl++) {
            if (!scratch)
                continue;
            int64_t c = pl % g->cin;
            char *gpad = scratch, *wide = scratch + d.padded * (int64_t)es;
            const char *dy = gyd + pl * out_plane * (int64_t)es, *wc = wd + c * taps * (int64_t)es;
            char *dst = gxd + pl * in_plane * (int64_t)es;
            if (f32)
                dw_backward_data_plane_f32(g, &d, (const float *)dy, (const float *)wc,
                                           (float *)wide, (float *)gpad, (float *)dst);
            else
                dw_backward_data_plane_f64(g, &d, (const double *)dy, (const double *)wc,
                                           (double *)wide, (double *)gpad, (double *)dst);
        }
        free(scratch);
    }
    return failed ? kd_error(KD_ERR_NOMEM, "conv2d: out of memory for depthwise scratch")
                  : KD_OK;
}

/* Channels run in parallel; each sums its planes over the batch, so no two
 * threads write the same weight. */
static kd_status depthwise_backward_weights(const kd_conv2d_geom *g, kd_tensor *x,
                                            kd_tensor *gy, kd_tensor *gw, kd_tensor *gb)
{
    dw_dims d = dw_dims_of(g);
    bool f32 = x->dtype == KD_F32, failed = false;
    size_t es = kd_dtype_size(x->dtype);
    const char *xd = kd_tensor_data(x), *gyd = kd_tensor_data(gy);
    char *gwd = kd_tensor_data(gw);
    memset(gwd, 0, (size_t)kd_tensor_numel(gw) * es);
    int64_t in_plane = g->h * g->w, out_plane = g->oh * g->ow, taps = g->kh * g->kw;
    _Pragma(DW_PARALLEL)
    {
        char *scratch = dw_scratch(&d, es);
        if (!scratch)
            failed = true;
        _Pragma("omp for schedule(static)")
        for (int64_t c = 0; c < g->cin; c++) {
            if (!scratch)
                continue;
            char *pad = scratch, *wide = scratch + d.padded * (int64_t)es;
            char *gwc = gwd + c * taps * (int64_t)es;
            double sum_f64 = 0;
            float sum_f32 = 0;
            for (int64_t i = 0; i < g->n; i++) {
                int64_t pl = i * g->cin + c;
                const char *src = xd + pl * in_plane * (int64_t)es;
                const char *dy = gyd + pl * out_plane * (int64_t)es;
                if (f32) {
                    dw_pad_f32(g, &d, (const float *)src, (float *)pad);
                    dw_backward_weights_plane_f32(g, &d, (const float *)pad, (const float *)dy,
                                                  (float *)wide, (float *)gwc, &sum_f32);
                } else {
                    dw_pad_f64(g, &d, (const double *)src, (double *)pad);
                    dw_backward_weights_plane_f64(g, &d, (const double *)pad,
                                                  (const double *)dy, (double *)wide,
                                                  (double *)gwc, &sum_f64);
                }
            }
            if (gb && f32)
                ((float *)kd_tensor_data(gb))[c] = sum_f32;
            else if (gb)
                ((double *)kd_tensor_data(gb))[c] = sum_f64;
        }
        free(scratch);
    }
    return failed ? kd_error(KD_ERR_NOMEM, "conv2d: out of memory for depthwise scratch")
                  : KD_OK;
}

/* ------------------------------------------------------------ dispatch */

static kd_status forward(const kd_conv2d_geom *g, kd_tensor *x, kd_tensor *w, kd_tensor *b,
                         kd_tensor *y, bool training)
{
    if (depthwise_applies(g))
        return depthwise_forward(g, x, w, b, y);
#ifdef KD_HAVE_DNNL
    if (x->dtype == KD_F32) {
        kd_status st = kd_conv2d_dnnl_forward(g, x, w, b, y, training);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#else
    (void)training;
#endif
    return kd_conv2d_im2col_forward(g, x, w, b, y);
}

static kd_status backward_data(const kd_conv2d_geom *g, kd_tensor *gy, kd_tensor *w,
                               kd_tensor *gx)
{
    if (depthwise_applies(g))
        return depthwise_backward_data(g, gy, w, gx);
#ifdef KD_HAVE_DNNL
    if (gy->dtype == KD_F32) {
        kd_status st = kd_conv2d_dnnl_backward_data(g, gy, w, gx);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    return kd_conv2d_im2col_backward_data(g, gy, w, gx);
}

static kd_status backward_weights(const kd_conv2d_geom *g, kd_tensor *x, kd_tensor *gy,
                                  kd_tensor *gw, kd_tensor *gb)
{
    if (depthwise_applies(g))
        return depthwise_backward_weights(g, x, gy, gw, gb);
#ifdef KD_HAVE_DNNL
    if (x->dtype == KD_F32) {
        kd_status st = kd_conv2d_dnnl_backward_weights(g, x, gy, gw, gb);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    return kd_conv2d_im2col_backward_weights(g, x, gy, gw, gb);
}

/* The geometry of x and w under the node's attributes. */
static kd_conv2d_geom geom_of(const kd_tensor *x, const kd_tensor *w, const int64_t *attr)
{
    kd_conv2d_geom g = {
        .n = x->shape[0], .cin = x->shape[1], .h = x->shape[2], .w = x->shape[3],
        .cout = w->shape[0], .kh = w->shape[2], .kw = w->shape[3],
        .stride = {attr[0], attr[1]}, .pad = {attr[2], attr[3]},
        .dil = {attr[4], attr[5]}, .groups = attr[6]};
    g.oh = (g.h + 2 * g.pad[0] - g.dil[0] * (g.kh - 1) - 1) / g.stride[0] + 1;
    g.ow = (g.w + 2 * g.pad[1] - g.dil[1] * (g.kw - 1) - 1) / g.stride[1] + 1;
    return g;
}

static kd_status conv2d_backward(kd_node *node, kd_tensor *gy)
{
    kd_tensor *x = node->saved[0], *w = node->saved[1];
    kd_tensor *tx = node->inputs[0], *tw = node->inputs[1];
    kd_tensor *tb = node->n_inputs > 2 ? node->inputs[2] : NULL;
    kd_conv2d_geom g = geom_of(x, w, node->iarg);
    kd_status st;
    if (tx->requires_grad) {
        kd_tensor *gx = kd_tensor_empty_like(x);
        if (!gx)
            return KD_ERR_NOMEM;
        st = backward_data(&g, gy, w, gx);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tx, gx);
        if (st != KD_OK)
            return st;
    }
    bool want_b = tb && tb->requires_grad;
    if (tw->requires_grad || want_b) {
        kd_tensor *gw = kd_tensor_empty_like(w);
        kd_tensor *gb = want_b ? kd_tensor_empty_like(tb) : NULL;
        if (!gw || (want_b && !gb))
            return KD_ERR_NOMEM;
        st = backward_weights(&g, x, gy, gw, gb);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tw, gw);
        if (st == KD_OK && want_b)
            st = kd_grad_accumulate_take(tb, gb);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

/* Checks the operands and parameters; fills attr (stride, padding,
 * dilation, groups) and the geometry. */
static kd_status check(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                       const kd_conv2d_params *p, int64_t *attr, kd_conv2d_geom *g)
{
    const char *op = "conv2d";
    kd_status st = kd_check_float(op, x);
    if (st == KD_OK)
        st = kd_check_float(op, w);
    if (st == KD_OK)
        st = kd_check_same(op, x, w);
    if (st == KD_OK && b) {
        st = kd_check_float(op, b);
        if (st == KD_OK)
            st = kd_check_same(op, x, b);
    }
    if (st != KD_OK)
        return st;
    if (!p)
        return kd_error(KD_ERR_INVALID, "conv2d: NULL params");
    if (x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "conv2d: CUDA tensors are not supported yet");
    char sx[96], sw[96], sb[96];
    kd_shape_str(x, sx, sizeof sx);
    kd_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4 || w->ndim != 4)
        return kd_error(KD_ERR_INVALID,
                        "conv2d: input %s and weight %s must be 4-D (NCHW and OIHW)", sx, sw);
    for (int i = 0; i < 2; i++)
        if (p->stride[i] < 1 || p->dilation[i] < 1 || p->padding[i] < 0)
            return kd_error(KD_ERR_INVALID,
                            "conv2d: stride (%d, %d), padding (%d, %d), dilation (%d, %d): "
                            "strides and dilations must be >= 1, padding >= 0",
                            p->stride[0], p->stride[1], p->padding[0], p->padding[1],
                            p->dilation[0], p->dilation[1]);
    int64_t groups = p->groups;
    if (groups < 1 || x->shape[1] % groups != 0 || w->shape[0] % groups != 0)
        return kd_error(KD_ERR_INVALID,
                        "conv2d: groups %d must divide the input channels of %s and the "
                        "output channels of weight %s", p->groups, sx, sw);
    if (w->shape[1] * groups != x->shape[1])
        return kd_error(KD_ERR_INVALID,
                        "conv2d: weight %s needs %lld input channels per group; input %s "
                        "has %lld channels in %lld groups",
                        sw, (long long)w->shape[1], sx, (long long)x->shape[1],
                        (long long)groups);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return kd_error(KD_ERR_INVALID, "conv2d: bias %s for weight %s ([%lld] expected)",
                        kd_shape_str(b, sb, sizeof sb), sw, (long long)w->shape[0]);
    int64_t a[7] = {p->stride[0], p->stride[1], p->padding[0], p->padding[1],
                    p->dilation[0], p->dilation[1], groups};
    memcpy(attr, a, sizeof a);
    *g = geom_of(x, w, attr);
    if (w->shape[2] < 1 || w->shape[3] < 1 ||
        g->h + 2 * g->pad[0] < g->dil[0] * (g->kh - 1) + 1 ||
        g->w + 2 * g->pad[1] < g->dil[1] * (g->kw - 1) + 1)
        return kd_error(KD_ERR_INVALID,
                        "conv2d: the %lldx%lld kernel (dilation %lld, %lld) of weight %s is "
                        "larger than input %s padded by (%lld, %lld)",
                        (long long)g->kh, (long long)g->kw, (long long)g->dil[0],
                        (long long)g->dil[1], sw, sx, (long long)g->pad[0],
                        (long long)g->pad[1]);
    return KD_OK;
}

kd_tensor *kd_conv2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                     const kd_conv2d_params *p)
{
    if (!x || !weight)
        return NULL;
    int64_t attr[7];
    kd_conv2d_geom g;
    if (check(x, weight, bias, p, attr, &g) != KD_OK)
        return NULL;
    kd_tensor *xc = kd_contiguous_raw(x), *wc = kd_contiguous_raw(weight);
    kd_tensor *bc = bias ? kd_contiguous_raw(bias) : NULL;
    int64_t shape[4] = {g.n, g.cout, g.oh, g.ow};
    kd_tensor *y = xc && wc && (bc || !bias) ? kd_tensor_empty(x->dtype, KD_CPU, 4, shape)
                                             : NULL;
    kd_tensor *inputs[3] = {x, weight, bias};
    int n_inputs = bias ? 3 : 2;
    if (!y || forward(&g, xc, wc, bc, y, kd_needs_grad(n_inputs, inputs)) != KD_OK)
        return NULL;
    kd_macs_add(kd_tensor_numel(y) * (g.cin / g.groups) * g.kh * g.kw);
    kd_node *node;
    if (kd_record("conv2d", conv2d_backward, y, n_inputs, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = wc;
        memcpy(node->iarg, attr, sizeof attr);
    }
    return y;
}
