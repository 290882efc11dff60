/* 2-D convolution as im2col + GEMM (col2im for the input gradient), for f32
 * and f64. Images are processed in chunks: a chunk's columns are one matrix
 * [Cin/groups * kH * kW, chunk * oH * oW], so each GEMM is large, while the
 * column buffer stays under COL_BUDGET elements. A 1x1 stride-1 unpadded
 * convolution on large planes reads x in place as its columns. */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "conv2d.h"

#define COL_BUDGET ((int64_t)1 << 21)
#define POINTWISE_MIN_PLANE 128

/* The typed loops (conv2d_im2col_kernels.h) behind one table. */
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

#define T float
#define FN(name) name##_f32
#define GEMM cblas_sgemm
#include "conv2d_im2col_kernels.h"
#undef T
#undef FN
#undef GEMM
#define T double
#define FN(name) name##_f64
#define GEMM cblas_dgemm
#include "conv2d_im2col_kernels.h"
#undef T
#undef FN
#undef GEMM

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

kd_status kd_conv2d_im2col_forward(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                   const void *w, const void *bias, void *y)
{
    conv_plan p;
    kd_status st = plan_begin("conv2d", g, dt, &p);
    if (st != KD_OK)
        return st;
    const char *xd = x, *wd = w;
    const void *bd = bias;
    char *yd = y;
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

kd_status kd_conv2d_im2col_backward_data(kd_dtype dt, const kd_conv2d_geom *g, const void *gy,
                                         const void *w, void *gx)
{
    conv_plan p;
    kd_status st = plan_begin("conv2d backward", g, dt, &p);
    if (st != KD_OK)
        return st;
    const char *gyd = gy, *wd = w;
    char *gxd = gx;
    size_t es = p.k->size;
    if (!p.pointwise)
        memset(gxd, 0, (size_t)(g->n * g->cin * g->h * g->w) * es);
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

kd_status kd_conv2d_im2col_backward_weights(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                            const void *gy, void *gw, void *gbias)
{
    conv_plan p;
    kd_status st = plan_begin("conv2d backward", g, dt, &p);
    if (st != KD_OK)
        return st;
    const char *xd = x, *gyd = gy;
    char *gwd = gw;
    size_t es = p.k->size;
    if (g->n == 0)
        memset(gwd, 0, (size_t)(g->cout * (g->cin / g->groups) * g->kh * g->kw) * es);
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
        p.k->bias_grad(g, gyd, gbias);
    plan_end(&p);
    return KD_OK;
}
