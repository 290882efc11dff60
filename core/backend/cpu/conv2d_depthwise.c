/* The direct depthwise convolution (conv2d.h), in every dtype: it beats
 * oneDNN 2.6, whose depthwise weight gradient is several times slower.
 *
 * groups == Cin == Cout: one small filter per channel, where GEMM-based
 * kernels have nothing to multiply. Each plane is first copied into a
 * zero-padded buffer with row length wp, so no inner loop tests bounds.
 * With stride 1 the output is computed on rows of length wp as well: every
 * filter tap is then a fixed offset into the flat padded plane, so a run of
 * outputs is one multiply-add per tap over contiguous memory; the extra
 * wp - ow columns are dropped (or are zero in a gradient). Strided
 * convolutions take plain row loops. */
#include <stdlib.h>
#include <string.h>

#include "conv2d.h"


bool kd_conv2d_depthwise_applies(const kd_conv2d_geom *g)
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

#define T float
#define FN(name) name##_f32
#include "conv2d_depthwise_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "conv2d_depthwise_kernels.h"
#undef T
#undef FN

/* Whether a depthwise pass is worth a team of threads. */
static bool dw_parallel(const kd_conv2d_geom *g)
{
    return g->n * g->cin * g->oh * g->ow * g->kh * g->kw > 65536;
}

/* Per-thread scratch: a padded plane, then a wide one. */
static void *dw_scratch(const dw_dims *d, size_t es)
{
    return malloc((size_t)(d->padded + d->wide) * es);
}

kd_status kd_conv2d_depthwise_forward(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                      const void *w, const void *bias, void *y)
{
    dw_dims d = dw_dims_of(g);
    bool f32 = dt == KD_F32, failed = false;
    size_t es = kd_dtype_size(dt);
    const char *xd = x, *wd = w, *bd = bias;
    char *yd = y;
    int64_t planes = g->n * g->cin, in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    int64_t taps = g->kh * g->kw;
    bool parallel = dw_parallel(g);
#pragma omp parallel reduction(||: failed) if (parallel)
    {
        char *scratch = dw_scratch(&d, es);
        if (!scratch)
            failed = true;
#pragma omp for schedule(static)
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

kd_status kd_conv2d_depthwise_backward_data(kd_dtype dt, const kd_conv2d_geom *g,
                                            const void *gy, const void *w, void *gx)
{
    dw_dims d = dw_dims_of(g);
    bool f32 = dt == KD_F32, failed = false;
    size_t es = kd_dtype_size(dt);
    const char *gyd = gy, *wd = w;
    char *gxd = gx;
    int64_t planes = g->n * g->cin, in_plane = g->h * g->w, out_plane = g->oh * g->ow;
    int64_t taps = g->kh * g->kw;
    bool parallel = dw_parallel(g);
#pragma omp parallel reduction(||: failed) if (parallel)
    {
        char *scratch = dw_scratch(&d, es);
        if (!scratch)
            failed = true;
#pragma omp for schedule(static)
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
kd_status kd_conv2d_depthwise_backward_weights(kd_dtype dt, const kd_conv2d_geom *g,
                                               const void *x, const void *gy, void *gw,
                                               void *gbias)
{
    dw_dims d = dw_dims_of(g);
    bool f32 = dt == KD_F32, failed = false;
    size_t es = kd_dtype_size(dt);
    const char *xd = x, *gyd = gy;
    char *gwd = gw;
    memset(gwd, 0, (size_t)(g->cin * g->kh * g->kw) * es);
    int64_t in_plane = g->h * g->w, out_plane = g->oh * g->ow, taps = g->kh * g->kw;
    bool parallel = dw_parallel(g);
#pragma omp parallel reduction(||: failed) if (parallel)
    {
        char *scratch = dw_scratch(&d, es);
        if (!scratch)
            failed = true;
#pragma omp for schedule(static)
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
            if (gbias && f32)
                ((float *)gbias)[c] = sum_f32;
            else if (gbias)
                ((double *)gbias)[c] = sum_f64;
        }
        free(scratch);
    }
    return failed ? kd_error(KD_ERR_NOMEM, "conv2d: out of memory for depthwise scratch")
                  : KD_OK;
}
