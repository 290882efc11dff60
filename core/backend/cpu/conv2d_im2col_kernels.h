/* The typed im2col loops, included by conv2d_im2col.c once per dtype with
 * T (float or double), FN(name) (name_f32 or name_f64) and GEMM (cblas_sgemm
 * or cblas_dgemm) defined. Index ranges of valid input columns are worked
 * out once per kernel column, so the inner loops have no bounds tests. */

static void FN(im2col)(const kd_conv2d_geom *g, const void *xv, int64_t n0, int64_t nb,
                       int64_t group, void *colv)
{
    const T *x = xv;
    T *col = colv;
    int64_t cg = g->cin / g->groups, plane = g->oh * g->ow, len = nb * plane;
    int64_t sh = g->stride[0], sw = g->stride[1];
#pragma omp parallel for collapse(2) if (nb * cg * plane * g->kh * g->kw > 65536)
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t c = 0; c < cg; c++) {
            const T *src = x + ((n0 + i) * g->cin + group * cg + c) * g->h * g->w;
            for (int64_t ki = 0; ki < g->kh; ki++) {
                int64_t oy0, oy1;
                valid_range(g->oh, g->h, sh, g->pad[0], ki * g->dil[0], &oy0, &oy1);
                for (int64_t kj = 0; kj < g->kw; kj++) {
                    int64_t ox0, ox1;
                    valid_range(g->ow, g->w, sw, g->pad[1], kj * g->dil[1], &ox0, &ox1);
                    T *dst = col + ((c * g->kh + ki) * g->kw + kj) * len + i * plane;
                    int64_t dx = kj * g->dil[1] - g->pad[1];
                    for (int64_t oy = 0; oy < g->oh; oy++) {
                        T *d = dst + oy * g->ow;
                        if (oy < oy0 || oy >= oy1) {
                            memset(d, 0, (size_t)g->ow * sizeof(T));
                            continue;
                        }
                        const T *s = src + (oy * sh - g->pad[0] + ki * g->dil[0]) * g->w + dx;
                        for (int64_t ox = 0; ox < ox0; ox++)
                            d[ox] = 0;
                        if (sw == 1)
                            memcpy(d + ox0, s + ox0, (size_t)(ox1 - ox0) * sizeof(T));
                        else
                            for (int64_t ox = ox0; ox < ox1; ox++)
                                d[ox] = s[ox * sw];
                        for (int64_t ox = ox1; ox < g->ow; ox++)
                            d[ox] = 0;
                    }
                }
            }
        }
    }
}

/* Adds the columns back into the input planes of gx (which the caller
 * zeroed); each (image, channel) plane is one task. */
static void FN(col2im)(const kd_conv2d_geom *g, const void *colv, int64_t n0, int64_t nb,
                       int64_t group, void *gxv)
{
    const T *col = colv;
    T *gx = gxv;
    int64_t cg = g->cin / g->groups, plane = g->oh * g->ow, len = nb * plane;
    int64_t sh = g->stride[0], sw = g->stride[1];
#pragma omp parallel for collapse(2) if (nb * cg * plane * g->kh * g->kw > 65536)
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t c = 0; c < cg; c++) {
            T *dst = gx + ((n0 + i) * g->cin + group * cg + c) * g->h * g->w;
            for (int64_t ki = 0; ki < g->kh; ki++) {
                int64_t oy0, oy1;
                valid_range(g->oh, g->h, sh, g->pad[0], ki * g->dil[0], &oy0, &oy1);
                for (int64_t kj = 0; kj < g->kw; kj++) {
                    int64_t ox0, ox1;
                    valid_range(g->ow, g->w, sw, g->pad[1], kj * g->dil[1], &ox0, &ox1);
                    const T *src = col + ((c * g->kh + ki) * g->kw + kj) * len + i * plane;
                    int64_t dx = kj * g->dil[1] - g->pad[1];
                    for (int64_t oy = oy0; oy < oy1; oy++) {
                        const T *s = src + oy * g->ow;
                        T *d = dst + (oy * sh - g->pad[0] + ki * g->dil[0]) * g->w + dx;
                        if (sw == 1)
                            for (int64_t ox = ox0; ox < ox1; ox++)
                                d[ox] += s[ox];
                        else
                            for (int64_t ox = ox0; ox < ox1; ox++)
                                d[ox * sw] += s[ox];
                    }
                }
            }
        }
    }
}

/* y[n, group's channels] = tmp [og, nb * plane] + bias; in place when
 * tmp is y's own plane (nb == 1). */
static void FN(scatter)(const kd_conv2d_geom *g, const void *tmpv, const void *biasv, int64_t n0,
                        int64_t nb, int64_t group, void *yv)
{
    const T *tmp = tmpv, *bias = biasv;
    T *y = yv;
    int64_t og = g->cout / g->groups, plane = g->oh * g->ow, len = nb * plane;
#pragma omp parallel for collapse(2) if (nb * og * plane > 65536)
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t o = 0; o < og; o++) {
            const T *s = tmp + o * len + i * plane;
            T *d = y + ((n0 + i) * g->cout + group * og + o) * plane;
            T b = bias ? bias[group * og + o] : 0;
            for (int64_t p = 0; p < plane; p++)
                d[p] = s[p] + b;
        }
    }
}

static void FN(gather)(const kd_conv2d_geom *g, const void *gyv, int64_t n0, int64_t nb,
                       int64_t group, void *tmpv)
{
    const T *gy = gyv;
    T *tmp = tmpv;
    int64_t og = g->cout / g->groups, plane = g->oh * g->ow, len = nb * plane;
    for (int64_t i = 0; i < nb; i++)
        for (int64_t o = 0; o < og; o++)
            memcpy(tmp + o * len + i * plane, gy + ((n0 + i) * g->cout + group * og + o) * plane,
                   (size_t)plane * sizeof(T));
}

static void FN(bias_grad)(const kd_conv2d_geom *g, const void *gyv, void *gbv)
{
    const T *gy = gyv;
    T *gb = gbv;
    int64_t plane = g->oh * g->ow;
#pragma omp parallel for if (g->n * g->cout * plane > 65536)
    for (int64_t o = 0; o < g->cout; o++) {
        T s = 0;
        for (int64_t i = 0; i < g->n; i++) {
            const T *p = gy + (i * g->cout + o) * plane;
            for (int64_t j = 0; j < plane; j++)
                s += p[j];
        }
        gb[o] = s;
    }
}

static void FN(gemm)(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                     const void *b, int64_t ldb, double beta, void *c, int64_t ldc)
{
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m,
         (int)n, (int)k, 1, a, (int)lda, b, (int)ldb, (T)beta, c, (int)ldc);
}

static const conv_kernels FN(kernels) = {
    sizeof(T), FN(im2col), FN(col2im), FN(scatter), FN(gather), FN(bias_grad), FN(gemm),
};
