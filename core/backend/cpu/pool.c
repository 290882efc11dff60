/* Pooling kernels (cpu.h).
 *
 * Every pool here reads a rectangular window per output, and the windows
 * are separable: output row oy covers input rows [lo[oy], hi[oy]) and
 * output column ox covers columns [lo[ox], hi[ox]), worked out once per
 * call. Averages divide by count_h[oy] * count_w[ox], which covers torch's
 * count_include_pad both ways and the adaptive bins. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

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

static void axis_windows(bool include_pad, int64_t out, int64_t size, int64_t k, int64_t s,
                         int64_t p, pool_axis *ax)
{
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

static kd_status geom_init(const kd_pool_params *p, pool_geom *g)
{
    g->planes = p->planes;
    g->h = p->h;
    g->w = p->w;
    g->oh = p->oh;
    g->ow = p->ow;
    g->kw = p->kw;
    g->sw = p->sw;
    g->pw = p->pw;
    g->mem = malloc((size_t)((g->oh + g->ow) * 3 + 2 * g->kw) * sizeof(int64_t));
    if (!g->mem)
        return kd_error(KD_ERR_NOMEM, "pool: out of host memory");
    int64_t *m = g->mem;
    g->rows = (pool_axis){m, m + g->oh, m + 2 * g->oh};
    m += 3 * g->oh;
    g->cols = (pool_axis){m, m + g->ow, m + 2 * g->ow};
    m += 3 * g->ow;
    g->kx_lo = m;
    g->kx_hi = m + g->kw;
    if (p->kind == KD_POOL_ADAPTIVE) {
        axis_adaptive(g->oh, g->h, &g->rows);
        axis_adaptive(g->ow, g->w, &g->cols);
        return KD_OK;
    }
    axis_windows(p->include_pad, g->oh, g->h, p->kh, p->sh, p->ph, &g->rows);
    axis_windows(p->include_pad, g->ow, g->w, p->kw, p->sw, p->pw, &g->cols);
    for (int64_t kx = 0; kx < g->kw; kx++) {
        int64_t first = g->pw - kx, limit = g->w + g->pw - kx; /* ox * sw in [first, limit) */
        int64_t lo = first <= 0 ? 0 : (first + g->sw - 1) / g->sw;
        int64_t hi = limit <= 0 ? 0 : (limit + g->sw - 1) / g->sw;
        g->kx_lo[kx] = lo < g->ow ? lo : g->ow;
        g->kx_hi[kx] = hi < g->ow ? (hi > g->kx_lo[kx] ? hi : g->kx_lo[kx]) : g->ow;
    }
    return KD_OK;
}

static bool is_global(const pool_geom *g)
{
    return g->oh == 1 && g->ow == 1 && g->rows.lo[0] == 0 && g->rows.hi[0] == g->h &&
           g->cols.lo[0] == 0 && g->cols.hi[0] == g->w &&
           g->rows.count[0] * g->cols.count[0] == g->h * g->w;
}

#define T float
#define FN(name) name##_f32
#include "pool_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "pool_kernels.h"
#undef T
#undef FN

kd_status kd_cpu_pool_forward(kd_dtype dt, const kd_pool_params *p, const void *x, void *y,
                              int32_t *argmax)
{
    pool_geom g;
    kd_status st = geom_init(p, &g);
    if (st != KD_OK)
        return st;
    bool f32 = dt == KD_F32;
    if (p->kind == KD_POOL_MAX) {
        if (f32)
            max_forward_f32(&g, x, y, argmax);
        else
            max_forward_f64(&g, x, y, argmax);
    } else if (is_global(&g)) {
        if (f32)
            global_forward_f32(&g, x, y);
        else
            global_forward_f64(&g, x, y);
    } else if (p->kind == KD_POOL_AVG) {
        if (f32)
            window_avg_forward_f32(&g, x, y);
        else
            window_avg_forward_f64(&g, x, y);
    } else {
        if (f32)
            avg_forward_f32(&g, x, y);
        else
            avg_forward_f64(&g, x, y);
    }
    free(g.mem);
    return KD_OK;
}

kd_status kd_cpu_pool_backward(kd_dtype dt, const kd_pool_params *p, const void *gy,
                               const int32_t *argmax, void *gx)
{
    pool_geom g;
    kd_status st = geom_init(p, &g);
    if (st != KD_OK)
        return st;
    bool f32 = dt == KD_F32;
    if (p->kind == KD_POOL_MAX) {
        if (f32)
            max_backward_f32(&g, gy, argmax, gx);
        else
            max_backward_f64(&g, gy, argmax, gx);
    } else if (is_global(&g)) {
        if (f32)
            global_backward_f32(&g, gy, gx);
        else
            global_backward_f64(&g, gy, gx);
    } else if (p->kind == KD_POOL_AVG) {
        /* gy divided by each window's count first, then spread */
        size_t capacity;
        void *gs = kd_host_alloc((size_t)(g.planes * g.oh * g.ow) * kd_dtype_size(dt), &capacity);
        if (!gs) {
            free(g.mem);
            return kd_error(KD_ERR_NOMEM, "avg_pool2d backward: out of host memory");
        }
        if (f32) {
            scale_by_counts_f32(&g, gy, gs);
            window_avg_backward_f32(&g, gs, gx);
        } else {
            scale_by_counts_f64(&g, gy, gs);
            window_avg_backward_f64(&g, gs, gx);
        }
        kd_host_free(gs, capacity);
    } else {
        if (f32)
            avg_backward_f32(&g, gy, gx);
        else
            avg_backward_f64(&g, gy, gx);
    }
    free(g.mem);
    return KD_OK;
}
