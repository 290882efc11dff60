/* Resizing kernels (cpu.h).
 *
 * Every mode is separable: output column ox is a weighted sum of a few
 * input columns (its taps), and output row oy of a few input rows. The
 * taps of each axis are worked out once per call, the way torch 1.13
 * computes them (UpSample.h, UpSampleKernel.cpp), then the forward runs
 * the columns and the rows one after the other through a [planes, h, ow]
 * buffer, and the backward runs the transposed sums in reverse. A tap
 * past a border (bicubic) is the border element, as torch replicates it;
 * an axis pads short windows with weight 0. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

/* The taps of one axis: output i reads input index[i * taps + k] with
 * weight[i * taps + k]. */
typedef struct interp_axis {
    int64_t taps;
    int64_t *index;
    double *weight;
} interp_axis;

/* torch's cubic convolution kernel with parameter a, at distance x. */
static double cubic_filter(double x, double a)
{
    x = fabs(x);
    if (x < 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

static double linear_filter(double x)
{
    x = fabs(x);
    return x < 1 ? 1 - x : 0;
}

/* torch's "nearest": the scale and the product in float, as its kernel
 * computes them, since a tie in floor() decides the index. */
static void nearest_taps(int64_t in, int64_t out, interp_axis *ax)
{
    float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        int64_t i = (int64_t)floorf((float)o * scale);
        ax->index[o] = i < in - 1 ? i : in - 1;
        ax->weight[o] = 1;
    }
}

/* Plain bilinear and bicubic: the source coordinate (o + 0.5) * scale -
 * 0.5 (clamped at 0 for bilinear), its floor clamped to the last index,
 * and the fraction t in [0, 1]. */
static void plain_taps(bool cubic, int64_t in, int64_t out, interp_axis *ax)
{
    double scale = (double)in / (double)out;
    for (int64_t o = 0; o < out; o++) {
        double src = scale * ((double)o + 0.5) - 0.5;
        if (!cubic && src < 0)
            src = 0;
        int64_t i0 = (int64_t)floor(src);
        i0 = i0 < in - 1 ? i0 : in - 1;
        double t = fmin(fmax(src - (double)i0, 0.0), 1.0);
        int64_t *idx = ax->index + o * ax->taps;
        double *w = ax->weight + o * ax->taps;
        if (!cubic) {
            idx[0] = i0;
            idx[1] = i0 < in - 1 ? i0 + 1 : i0;
            w[0] = 1 - t;
            w[1] = t;
            continue;
        }
        for (int k = 0; k < 4; k++) {
            int64_t j = i0 - 1 + k;
            idx[k] = j < 0 ? 0 : (j > in - 1 ? in - 1 : j);
            w[k] = cubic_filter(t + 1 - k, -0.75);
        }
    }
}

/* torch's antialiased modes: a filter of support 1 (bilinear) or 2
 * (bicubic, a = -0.5) times the scale when shrinking, centred on
 * (o + 0.5) * scale, cut at the borders and renormalised to sum 1. */
static void antialias_taps(bool cubic, int64_t in, int64_t out, interp_axis *ax)
{
    double scale = (double)in / (double)out;
    double support = (cubic ? 2.0 : 1.0) * (scale >= 1 ? scale : 1.0);
    double invscale = scale >= 1 ? 1 / scale : 1.0;
    for (int64_t o = 0; o < out; o++) {
        double center = scale * ((double)o + 0.5);
        int64_t lo = (int64_t)(center - support + 0.5);
        lo = lo > 0 ? lo : 0;
        int64_t hi = (int64_t)(center + support + 0.5);
        hi = hi < in ? hi : in;
        int64_t *idx = ax->index + o * ax->taps;
        double *w = ax->weight + o * ax->taps, total = 0;
        for (int64_t k = 0; k < ax->taps; k++) {
            double d = ((double)(lo + k) - center + 0.5) * invscale;
            idx[k] = lo;
            w[k] = 0;
            if (lo + k < hi) {
                idx[k] = lo + k;
                w[k] = cubic ? cubic_filter(d, -0.5) : linear_filter(d);
                total += w[k];
            }
        }
        for (int64_t k = 0; total != 0 && k < ax->taps; k++)
            w[k] /= total;
    }
}

static int64_t axis_taps(const kd_interp_params *p, int64_t in, int64_t out)
{
    bool cubic = p->mode == KD_INTERP_BICUBIC;
    if (p->mode == KD_INTERP_NEAREST)
        return 1;
    if (!p->antialias)
        return cubic ? 4 : 2;
    double scale = (double)in / (double)out;
    double support = (cubic ? 2.0 : 1.0) * (scale >= 1 ? scale : 1.0);
    return (int64_t)ceil(support) * 2 + 1;
}

static void axis_fill(const kd_interp_params *p, int64_t in, int64_t out, interp_axis *ax)
{
    bool cubic = p->mode == KD_INTERP_BICUBIC;
    if (p->mode == KD_INTERP_NEAREST)
        nearest_taps(in, out, ax);
    else if (p->antialias)
        antialias_taps(cubic, in, out, ax);
    else
        plain_taps(cubic, in, out, ax);
}

typedef struct interp_geom {
    int64_t planes, h, w, oh, ow;
    interp_axis rows, cols;
    void *mem;
} interp_geom;

static kd_status geom_init(const kd_interp_params *p, interp_geom *g)
{
    *g = (interp_geom){p->planes, p->h, p->w, p->oh, p->ow, {0}, {0}, NULL};
    g->rows.taps = axis_taps(p, p->h, p->oh);
    g->cols.taps = axis_taps(p, p->w, p->ow);
    int64_t nr = g->rows.taps * p->oh, nc = g->cols.taps * p->ow;
    g->mem = malloc((size_t)(nr + nc) * (sizeof(int64_t) + sizeof(double)));
    if (!g->mem)
        return kd_error(KD_ERR_NOMEM, "interpolate: out of host memory");
    double *w = g->mem;
    int64_t *idx = (int64_t *)(w + nr + nc);
    g->rows.weight = w;
    g->cols.weight = w + nr;
    g->rows.index = idx;
    g->cols.index = idx + nr;
    axis_fill(p, p->h, p->oh, &g->rows);
    axis_fill(p, p->w, p->ow, &g->cols);
    return KD_OK;
}

#define T float
#define FN(name) name##_f32
#include "interpolate_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "interpolate_kernels.h"
#undef T
#undef FN

/* The [planes, h, ow] buffer between the two passes. */
static void *buffer(kd_dtype dt, const interp_geom *g, size_t *capacity)
{
    return kd_host_alloc((size_t)(g->planes * g->h * g->ow) * kd_dtype_size(dt), capacity);
}

kd_status kd_cpu_interpolate_forward(kd_dtype dt, const kd_interp_params *p, const void *x,
                                     void *y)
{
    interp_geom g;
    kd_status st = geom_init(p, &g);
    if (st != KD_OK)
        return st;
    size_t capacity;
    void *mid = buffer(dt, &g, &capacity);
    if (!mid) {
        free(g.mem);
        return kd_error(KD_ERR_NOMEM, "interpolate: out of host memory");
    }
    if (dt == KD_F32)
        interp_forward_f32(&g, x, mid, y);
    else
        interp_forward_f64(&g, x, mid, y);
    kd_host_free(mid, capacity);
    free(g.mem);
    return KD_OK;
}

kd_status kd_cpu_interpolate_backward(kd_dtype dt, const kd_interp_params *p, const void *gy,
                                      void *gx)
{
    interp_geom g;
    kd_status st = geom_init(p, &g);
    if (st != KD_OK)
        return st;
    size_t capacity;
    void *mid = buffer(dt, &g, &capacity);
    if (!mid) {
        free(g.mem);
        return kd_error(KD_ERR_NOMEM, "interpolate backward: out of host memory");
    }
    if (dt == KD_F32)
        interp_backward_f32(&g, gy, mid, gx);
    else
        interp_backward_f64(&g, gy, mid, gx);
    kd_host_free(mid, capacity);
    free(g.mem);
    return KD_OK;
}
