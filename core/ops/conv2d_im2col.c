/* 2-D convolution as im2col + GEMM (col2im for the input gradient), for f32
 * and f64. Images are processed in chunks: a chunk's columns are one matrix
 * [Cin/groups * kH * kW, chunk * oH * oW], so each GEMM is large, while the
 * column buffer stays under COL_BUDGET elements. A 1x1 stride-1 unpadded
 * convolution on large planes reads x in place as its columns. */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "conv2d_internal.h"

#define COL_BUDGET ((int64_t)1 << 21)
#define POINTWISE_MIN_PLANE 128

/* Typed loops behind one dispatch table. Index ranges of valid input
 * columns are worked out once per kernel column, so the inner loops have no
 * bounds tests. */
typedef struct conv_kernels {
    size_t size;
    void (*im2col)(const kd_conv2d_geom *g, const void *x, int64_t n0, int64_t nb,
                   int64_t group, void *col);
    void (*col2im)(const kd_conv2d_geom *g, const void *col, int64_t n0, int64_t nb,
                   int64_t group, void *gx);
    void (*scatter)(const kd_conv2d_geom *g, const void *tmp, const void *bias, int64_t n0,
                    int64_t nb, int64_t group, void *y);
    void (*gather)(const kd_conv2d_geom *g, const void *gy, int64_t n0, int64_t nb,
                   int64_t group, void *tmp);
    void (*bias_grad)(const kd_conv2d_geom *g, const void *gy, void *gb);
    void (*gemm)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                 int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc);
} conv_kernels;

/* Output columns [*lo, *hi) whose input column ox*stride - pad + off lies in
 * [0, size). */
static void valid_range(int64_t out, int64_t size, int64_t stride, int64_t pad, int64_t off,
                        int64_t *lo, int64_t *hi)
{
    int64_t first = pad - off; /* smallest ox*stride allowed */
    int64_t a = first <= 0 ? 0 : (first + stride - 1) / stride;
    int64_t limit = size + pad - off; /* ox*stride < limit */
    int64_t b = limit <= 0 ? 0 : (limit + stride - 1) / stride;
    *lo = a < out ? a : out;
    *hi = b < out ? b : out;
    if (*hi < *lo)
        *hi = *lo;
}

#define DEFINE_CONV_KERNELS(T, SUFFIX, GEMM)                                            \
    static void im2col_##SUFFIX(const kd_conv2d_geom *g, const void *xv, int64_t n0,    \
                                int64_t nb, int64_t group, void *colv)                 \
    {                                                                                  \
        const T *x = xv;                                                               \
        T *col = colv;                                                                 \
        int64_t cg = g->cin / g->groups, plane = g->oh * g->ow, len = nb * plane;      \
        int64_t sh = g->stride[0], sw = g->stride[1];                                  \
        _Pragma("omp parallel for collapse(2) if (nb * cg * plane * g->kh * g->kw > 65536)") \
        for (int64_t i = 0; i < nb; i++) {                                             \
            for (int64_t c = 0; c < cg; c++) {                                         \
                const T *src = x + ((n0 + i) * g->cin + group * cg + c) * g->h * g->w;  \
                for (int64_t ki = 0; ki < g->kh; ki++) {                               \
                    int64_t oy0, oy1;                                                  \
                    valid_range(g->oh, g->h, sh, g->pad[0], ki * g->dil[0], &oy0, &oy1); \
                    for (int64_t kj = 0; kj < g->kw; kj++) {                           \
                        int64_t ox0, ox1;                                              \
                        valid_range(g->ow, g->w, sw, g->pad[1], kj * g->dil[1], &ox0, &ox1); \
                        T *dst = col + ((c * g->kh + ki) * g->kw + kj) * len + i * plane; \
                        int64_t dx = kj * g->dil[1] - g->pad[1];                       \
                        for (int64_t oy = 0; oy < g->oh; oy++) {                       \
                            T *d = dst + oy * g->ow;                                   \
                            if (oy < oy0 || oy >= oy1) {                               \
                                memset(d, 0, (size_t)g->ow * sizeof(T));               \
                                continue;                                              \
                            }                                                          \
                            const T *s = src + (oy * sh - g->pad[0] + ki * g->dil[0]) * g->w + dx; \
                            for (int64_t ox = 0; ox < ox0; ox++)                       \
                                d[ox] = 0;                                             \
                            if (sw == 1)                                               \
                                memcpy(d + ox0, s + ox0, (size_t)(ox1 - ox0) * sizeof(T)); \
                            else                                                       \
                                for (int64_t ox = ox0; ox < ox1; ox++)                 \
                                    d[ox] = s[ox * sw];                                \
                            for (int64_t ox = ox1; ox < g->ow; ox++)                   \
                                d[ox] = 0;                                             \
                        }                                                              \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    /* Adds the columns back into the input planes of gx (which the caller  \
     * zeroed); each (image, channel) plane is one task. */                     \
    static void col2im_##SUFFIX(const kd_conv2d_geom *g, const void *colv, int64_t n0,  \
                                int64_t nb, int64_t group, void *gxv)                  \
    {                                                                                  \
        const T *col = colv;                                                           \
        T *gx = gxv;                                                                   \
        int64_t cg = g->cin / g->groups, plane = g->oh * g->ow, len = nb * plane;      \
        int64_t sh = g->stride[0], sw = g->stride[1];                                  \
        _Pragma("omp parallel for collapse(2) if (nb * cg * plane * g->kh * g->kw > 65536)") \
        for (int64_t i = 0; i < nb; i++) {                                             \
            for (int64_t c = 0; c < cg; c++) {                                         \
                T *dst = gx + ((n0 + i) * g->cin + group * cg + c) * g->h * g->w;       \
                for (int64_t ki = 0; ki < g->kh; ki++) {                               \
                    int64_t oy0, oy1;                                                  \
                    valid_range(g->oh, g->h, sh, g->pad[0], ki * g->dil[0], &oy0, &oy1); \
                    for (int64_t kj = 0; kj < g->kw; kj++) {                           \
                        int64_t ox0, ox1;                                              \
                        valid_range(g->ow, g->w, sw, g->pad[1], kj * g->dil[1], &ox0, &ox1); \
                        const T *src = col + ((c * g->kh + ki) * g->kw + kj) * len + i * plane; \
                        int64_t dx = kj * g->dil[1] - g->pad[1];                       \
                        for (int64_t oy = oy0; oy < oy1; oy++) {                       \
                            const T *s = src + oy * g->ow;                             \
                            T *d = dst + (oy * sh - g->pad[0] + ki * g->dil[0]) * g->w + dx; \
                            if (sw == 1)                                               \
                                for (int64_t ox = ox0; ox < ox1; ox++)                 \
                                    d[ox] += s[ox];                                    \
                            else                                                       \
                                for (int64_t ox = ox0; ox < ox1; ox++)                 \
                                    d[ox * sw] += s[ox];                               \
                        }                                                              \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    /* y[n, group's channels] = tmp [og, nb * plane] + bias; in place when   \
     * tmp is y's own plane (nb == 1). */                                           \
    static void scatter_##SUFFIX(const kd_conv2d_geom *g, const void *tmpv,             \
                                 const void *biasv, int64_t n0, int64_t nb,             \
                                 int64_t group, void *yv)                               \
    {                                                                                  \
        const T *tmp = tmpv, *bias = biasv;                                            \
        T *y = yv;                                                                     \
        int64_t og = g->cout / g->groups, plane = g->oh * g->ow, len = nb * plane;     \
        _Pragma("omp parallel for collapse(2) if (nb * og * plane > 65536)")           \
        for (int64_t i = 0; i < nb; i++) {                                             \
            for (int64_t o = 0; o < og; o++) {                                         \
                const T *s = tmp + o * len + i * plane;                                \
                T *d = y + ((n0 + i) * g->cout + group * og + o) * plane;              \
                T b = bias ? bias[group * og + o] : 0;                                 \
                for (int64_t p = 0; p < plane; p++)                                    \
                    d[p] = s[p] + b;                                                   \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    static void gather_##SUFFIX(const kd_conv2d_geom *g, const void *gyv, int64_t n0,   \
                                int64_t nb, int64_t group, void *tmpv)                 \
    {                                                                                  \
        const T *gy = gyv;                                                             \
        T *tmp = tmpv;                                                                 \
        int64_t og = g->cout / g->groups, plane = g->oh * g->ow, len = nb * plane;     \
        for (int64_t i = 0; i < nb; i++)                                               \
            for (int64_t o = 0; o < og; o++)                                           \
                memcpy(tmp + o * len + i * plane,                                      \
                       gy + ((n0 + i) * g->cout + group * og + o) * plane,             \
                       (size_t)plane * sizeof(T));                                     \
    }                                                                                  \
    static void bias_grad_##SUFFIX(const kd_conv2d_geom *g, const void *gyv, void *gbv) \
    {                                                                                  \
        const T *gy = gyv;                                                             \
        T *gb = gbv;                                                                   \
        int64_t plane = g->oh * g->ow;                                                 \
        _Pragma("omp parallel for if (g->n * g->cout * plane > 65536)")                \
        for (int64_t o = 0; o < g->cout; o++) {                                        \
            T s = 0;                                                                   \
            for (int64_t i = 0; i < g->n; i++) {                                       \
                const T *p = gy + (i * g->cout + o) * plane;                           \
                for (int64_t j = 0; j < plane; j++)                                    \
                    s += p[j];                                                         \
            }                                                                          \
            gb[o] = s;                                                                 \
        }                                                                              \
    }                                                                                  \
    static void gemm_##SUFFIX(bool ta, bool tb, int64_t m, int64_t n, int64_t k,        \
                              const void *a, int64_t lda, const void *b, int64_t ldb,    \
                              double beta, void *c, int64_t ldc)                        \
    {                                                                                  \
        GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,                            \
             tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1, a, (int)lda,   \
             b, (int)ldb, (T)beta, c, (int)ldc);                                       \
    }                                                                                  \
    static const conv_kernels kernels_##SUFFIX = {                                      \
        sizeof(T), im2col_##SUFFIX, col2im_##SUFFIX, scatter_##SUFFIX,                  \
        gather_##SUFFIX, bias_grad_##SUFFIX, gemm_##SUFFIX};

DEFINE_CONV_KERNELS(float, f32, cblas_sgemm)
DEFINE_CONV_KERNELS(double, f64, cblas_dgemm)

/* How the batch is cut: chunk images per GEMM, and whether x serves as its
 * own columns. */
typedef struct conv_plan {
    const conv_kernels *k;
    int64_t cg, og, kdim, plane, chunk;
    bool pointwise;
    void *col, *tmp; /* col: [kdim, chunk * plane]; tmp: [og, chunk * plane] */
} conv_plan;

static kd_status plan_begin(const char *what, const kd_conv2d_geom *g, kd_dtype dtype,
                            conv_plan *p)
{
    memset(p, 0, sizeof *p);
    p->k = dtype == KD_F32 ? &kernels_f32 : &kernels_f64;
    p->cg = g->cin / g->groups;
    p->og = g->cout / g->groups;
    p->kdim = p->cg * g->kh * g->kw;
    p->plane = g->oh * g->ow;
    p->pointwise = g->kh == 1 && g->kw == 1 && g->stride[0] == 1 && g->stride[1] == 1 &&
                   g->pad[0] == 0 && g->pad[1] == 0 && p->plane >= POINTWISE_MIN_PLANE;
    int64_t per_image = p->kdim * p->plane;
    p->chunk = p->pointwise ? 1 : COL_BUDGET / (per_image > 0 ? per_image : 1);
    if (p->chunk < 1)
        p->chunk = 1;
    if (p->chunk > g->n)
        p->chunk = g->n;
    if (p->kdim > INT32_MAX || p->chunk * p->plane > INT32_MAX || p->og > INT32_MAX)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: a %lld x %lld column matrix exceeds BLAS's int sizes",
                        what, (long long)p->kdim, (long long)(p->chunk * p->plane));
    size_t len = (size_t)(p->chunk * p->plane) * p->k->size;
    if (!p->pointwise)
        p->col = malloc((size_t)p->kdim * len + 1);
    if (p->chunk > 1)
        p->tmp = malloc((size_t)p->og * len + 1);
    if ((!p->pointwise && !p->col) || (p->chunk > 1 && !p->tmp)) {
        free(p->col);
        free(p->tmp);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for the column buffers", what);
    }
    return KD_OK;
}

static void plan_end(conv_plan *p)
{
    free(p->col);
    free(p->tmp);
}

/* The columns of images [n0, n0 + nb) for one group, and their row length. */
static const char *columns(const conv_plan *p, const kd_conv2d_geom *g, const char *x,
                           int64_t n0, int64_t nb, int64_t group, int64_t *ld)
{
    *ld = nb * p->plane;
    if (p->pointwise)
        return x + ((n0 * g->cin + group * p->cg) * p->plane) * (int64_t)p->k->size;
    p->k->im2col(g, x, n0, nb, group, p->col);
    return p->col;
}

/* Where a group's output rows [og, nb * plane] live: y itself for one image. */
static char *plane_of(const conv_plan *p, const kd_conv2d_geom *g, char *t, int64_t n0,
                      int64_t nb, int64_t group)
{
    if (nb > 1)
        return p->tmp;
    return t + ((n0 * g->cout + group * p->og) * p->plane) * (int64_t)p->k->size;
}

kd_status kd_conv2d_im2col_forward(const kd_conv2d_geom *g, const kd_tensor *x,
                                   const kd_tensor *w, const kd_tensor *bias, kd_tensor *y)
{
    conv_plan p;
    kd_status st = plan_begin("conv2d", g, x->dtype, &p);
    if (st != KD_OK)
        return st;
    const char *xd = kd_tensor_data(x), *wd = kd_tensor_data(w);
    const void *bd = bias ? kd_tensor_data(bias) : NULL;
    char *yd = kd_tensor_data(y);
    size_t es = p.k->size;
    for (int64_t n0 = 0; n0 < g->n; n0 += p.chunk) {
        int64_t nb = g->n - n0 < p.chunk ? g->n - n0 : p.chunk;
        for (int64_t grp = 0; grp < g->groups; grp++) {
            int64_t ld;
            const char *col = columns(&p, g, xd, n0, nb, grp, &ld);
            char *out = plane_of(&p, g, yd, n0, nb, grp);
            p.k->gemm(false, false, p.og, ld, p.kdim, wd + (size_t)(grp * p.og * p.kdim) * es,
                      p.kdim, col, ld, 0.0, out, ld);
            if (nb > 1 || bd)
                p.k->scatter(g, out, bd, n0, nb, grp, yd);
        }
    }
    plan_end(&p);
    return KD_OK;
}

kd_status kd_conv2d_im2col_backward_data(const kd_conv2d_geom *g, const kd_tensor *gy,
                                         const kd_tensor *w, kd_tensor *gx)
{
    conv_plan p;
    kd_status st = plan_begin("conv2d backward", g, gy->dtype, &p);
    if (st != KD_OK)
        return st;
    const char *gyd = kd_tensor_data(gy), *wd = kd_tensor_data(w);
    char *gxd = kd_tensor_data(gx);
    size_t es = p.k->size;
    if (!p.pointwise)
        memset(gxd, 0, (size_t)kd_tensor_numel(gx) * es);
    for (int64_t n0 = 0; n0 < g->n; n0 += p.chunk) {
        int64_t nb = g->n - n0 < p.chunk ? g->n - n0 : p.chunk;
        for (int64_t grp = 0; grp < g->groups; grp++) {
            int64_t ld = nb * p.plane;
            const char *dy = plane_of(&p, g, (char *)gyd, n0, nb, grp);
            if (nb > 1)
                p.k->gather(g, gyd, n0, nb, grp, p.tmp);
            /* A pointwise convolution's columns are gx's own planes. */
            char *dcol = p.pointwise
                             ? gxd + ((n0 * g->cin + grp * p.cg) * p.plane) * (int64_t)es
                             : p.col;
            p.k->gemm(true, false, p.kdim, ld, p.og, wd + (size_t)(grp * p.og * p.kdim) * es,
                      p.kdim, dy, ld, 0.0, dcol, ld);
            if (!p.pointwise)
                p.k->col2im(g, dcol, n0, nb, grp, gxd);
        }
    }
    plan_end(&p);
    return KD_OK;
}

kd_status kd_conv2d_im2col_backward_weights(const kd_conv2d_geom *g, const kd_tensor *x,
                                            const kd_tensor *gy, kd_tensor *gw,
                                            kd_tensor *gbias)
{
    conv_plan p;
    kd_status st = plan_begin("conv2d backward", g, x->dtype, &p);
    if (st != KD_OK)
        return st;
    const char *xd = kd_tensor_data(x), *gyd = kd_tensor_data(gy);
    char *gwd = kd_tensor_data(gw);
    size_t es = p.k->size;
    if (g->n == 0)
        memset(gwd, 0, (size_t)kd_tensor_numel(gw) * es);
    for (int64_t n0 = 0; n0 < g->n; n0 += p.chunk) {
        int64_t nb = g->n - n0 < p.chunk ? g->n - n0 : p.chunk;
        for (int64_t grp = 0; grp < g->groups; grp++) {
            int64_t ld;
            const char *col = columns(&p, g, xd, n0, nb, grp, &ld);
            const char *dy = plane_of(&p, g, (char *)gyd, n0, nb, grp);
            if (nb > 1)
                p.k->gather(g, gyd, n0, nb, grp, p.tmp);
            p.k->gemm(false, true, p.og, p.kdim, ld, dy, ld, col, ld, n0 > 0 ? 1.0 : 0.0,
                      gwd + (size_t)(grp * p.og * p.kdim) * es, p.kdim);
        }
    }
    if (gbias)
        p.k->bias_grad(g, gyd, kd_tensor_data(gbias));
    plan_end(&p);
    return KD_OK;
}
