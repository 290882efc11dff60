/* The typed pooling kernels, included by pool.c once per dtype with T
 * (float or double) and FN(name) (name_f32 or name_f64) defined. x is
 * [planes, h, w] and y [planes, oh, ow], contiguous. */

/* Window maxima; the first maximum wins a tie and NaN propagates, as
 * in torch. argmax (NULL when no gradient is needed) gets its offset
 * in the plane. A row of outputs is updated together, one window
 * element at a time, in the window's row-major order. */
static void FN(max_forward)(const pool_geom *g, const T *x, T *y, int32_t *argmax)
{
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const T *xp = x + pl * g->h * g->w;
        for (int64_t oy = 0; oy < g->oh; oy++) {
            T *yr = y + (pl * g->oh + oy) * g->ow;
            int32_t *ar = argmax ? argmax + (pl * g->oh + oy) * g->ow : NULL;
            for (int64_t ox = 0; ox < g->ow; ox++)
                yr[ox] = -INFINITY;
            if (ar)
                for (int64_t ox = 0; ox < g->ow; ox++)
                    ar[ox] = (int32_t)(g->rows.lo[oy] * g->w + g->cols.lo[ox]);
            for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++) {
                for (int64_t kx = 0; kx < g->kw; kx++) {
                    int64_t o0 = g->kx_lo[kx], o1 = g->kx_hi[kx], sw = g->sw;
                    int64_t at = iy * g->w + kx - g->pw;
                    const T *xr = xp + at;
                    if (ar) {
#pragma omp simd
                        for (int64_t ox = o0; ox < o1; ox++) {
                            T v = xr[ox * sw];
                            bool take = v > yr[ox] || v != v;
                            yr[ox] = take ? v : yr[ox];
                            ar[ox] = take ? (int32_t)(at + ox * sw) : ar[ox];
                        }
                    } else {
#pragma omp simd
                        for (int64_t ox = o0; ox < o1; ox++) {
                            T v = xr[ox * sw];
                            yr[ox] = (v > yr[ox] || v != v) ? v : yr[ox];
                        }
                    }
                }
            }
        }
    }
}

static void FN(max_backward)(const pool_geom *g, const T *gy, const int32_t *argmax, T *gx)
{
    int64_t out = g->oh * g->ow;
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        T *gp = gx + pl * g->h * g->w;
        memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));
        for (int64_t o = pl * out; o < (pl + 1) * out; o++)
            gp[argmax[o]] += gy[o];
    }
}

/* avg_pool2d's windows, a row of outputs at a time as for the maxima. */
static void FN(window_avg_forward)(const pool_geom *g, const T *x, T *y)
{
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const T *xp = x + pl * g->h * g->w;
        for (int64_t oy = 0; oy < g->oh; oy++) {
            T *yr = y + (pl * g->oh + oy) * g->ow;
            for (int64_t ox = 0; ox < g->ow; ox++)
                yr[ox] = 0;
            for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++) {
                for (int64_t kx = 0; kx < g->kw; kx++) {
                    int64_t o0 = g->kx_lo[kx], o1 = g->kx_hi[kx], sw = g->sw;
                    const T *xr = xp + iy * g->w + kx - g->pw;
#pragma omp simd
                    for (int64_t ox = o0; ox < o1; ox++)
                        yr[ox] += xr[ox * sw];
                }
            }
            T ch = (T)g->rows.count[oy];
            for (int64_t ox = 0; ox < g->ow; ox++)
                yr[ox] /= ch * (T)g->cols.count[ox];
        }
    }
}

/* gs holds gy already divided by each window's count. */
static void FN(window_avg_backward)(const pool_geom *g, const T *gs, T *gx)
{
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        T *gp = gx + pl * g->h * g->w;
        memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));
        for (int64_t oy = 0; oy < g->oh; oy++) {
            const T *gr = gs + (pl * g->oh + oy) * g->ow;
            for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++) {
                for (int64_t kx = 0; kx < g->kw; kx++) {
                    int64_t o0 = g->kx_lo[kx], o1 = g->kx_hi[kx], sw = g->sw;
                    T *dst = gp + iy * g->w + kx - g->pw;
#pragma omp simd
                    for (int64_t ox = o0; ox < o1; ox++)
                        dst[ox * sw] += gr[ox];
                }
            }
        }
    }
}

static void FN(scale_by_counts)(const pool_geom *g, const T *gy, T *gs)
{
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++)
        for (int64_t oy = 0; oy < g->oh; oy++) {
            int64_t o = (pl * g->oh + oy) * g->ow;
            T ch = (T)g->rows.count[oy];
            for (int64_t ox = 0; ox < g->ow; ox++)
                gs[o + ox] = gy[o + ox] / (ch * (T)g->cols.count[ox]);
        }
}

/* Adaptive bins: any window per output. */
static void FN(avg_forward)(const pool_geom *g, const T *x, T *y)
{
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const T *xp = x + pl * g->h * g->w;
        for (int64_t oy = 0; oy < g->oh; oy++) {
            for (int64_t ox = 0; ox < g->ow; ox++) {
                T s = 0;
                for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++)
                    for (int64_t ix = g->cols.lo[ox]; ix < g->cols.hi[ox]; ix++)
                        s += xp[iy * g->w + ix];
                y[(pl * g->oh + oy) * g->ow + ox] = s / (T)(g->rows.count[oy] * g->cols.count[ox]);
            }
        }
    }
}

static void FN(avg_backward)(const pool_geom *g, const T *gy, T *gx)
{
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        T *gp = gx + pl * g->h * g->w;
        memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));
        for (int64_t oy = 0; oy < g->oh; oy++) {
            for (int64_t ox = 0; ox < g->ow; ox++) {
                T v =
                    gy[(pl * g->oh + oy) * g->ow + ox] / (T)(g->rows.count[oy] * g->cols.count[ox]);
                for (int64_t iy = g->rows.lo[oy]; iy < g->rows.hi[oy]; iy++)
                    for (int64_t ix = g->cols.lo[ox]; ix < g->cols.hi[ox]; ix++)
                        gp[iy * g->w + ix] += v;
            }
        }
    }
}

/* Global pooling: one mean per plane, one value spread per plane. */
static void FN(global_forward)(const pool_geom *g, const T *x, T *y)
{
    int64_t n = g->h * g->w;
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const T *xp = x + pl * n;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++)
            s += xp[i];
        y[pl] = s / (T)n;
    }
}

static void FN(global_backward)(const pool_geom *g, const T *gy, T *gx)
{
    int64_t n = g->h * g->w;
#pragma omp parallel for if (g->planes * g->h * g->w > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        T v = gy[pl] / (T)n, *gp = gx + pl * n;
        for (int64_t i = 0; i < n; i++)
            gp[i] = v;
    }
}
