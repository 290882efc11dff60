/* The typed resizing kernels, included by interpolate.c once per dtype
 * with T (float or double) and FN(name) (name_f32 or name_f64) defined.
 * x is [planes, h, w], mid [planes, h, ow] and y [planes, oh, ow], all
 * contiguous. */

/* mid = the columns resized, then y = mid's rows resized. */
static void FN(interp_forward)(const interp_geom *g, const T *x, T *mid, T *y)
{
    const interp_axis *c = &g->cols, *r = &g->rows;
#pragma omp parallel for if (g->planes * g->oh * g->ow > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        const T *xp = x + pl * g->h * g->w;
        T *mp = mid + pl * g->h * g->ow;
        for (int64_t iy = 0; iy < g->h; iy++)
            for (int64_t ox = 0; ox < g->ow; ox++) {
                const int64_t *idx = c->index + ox * c->taps;
                const double *w = c->weight + ox * c->taps;
                T s = 0;
                for (int64_t k = 0; k < c->taps; k++)
                    s += (T)w[k] * xp[iy * g->w + idx[k]];
                mp[iy * g->ow + ox] = s;
            }
        for (int64_t oy = 0; oy < g->oh; oy++) {
            T *yr = y + (pl * g->oh + oy) * g->ow;
            for (int64_t ox = 0; ox < g->ow; ox++)
                yr[ox] = 0;
            for (int64_t k = 0; k < r->taps; k++) {
                T wk = (T)r->weight[oy * r->taps + k];
                const T *mr = mp + r->index[oy * r->taps + k] * g->ow;
#pragma omp simd
                for (int64_t ox = 0; ox < g->ow; ox++)
                    yr[ox] += wk * mr[ox];
            }
        }
    }
}

/* The transposed sums: mid = the rows' gradient spread back over h, then
 * gx = mid's columns spread back over w. */
static void FN(interp_backward)(const interp_geom *g, const T *gy, T *mid, T *gx)
{
    const interp_axis *c = &g->cols, *r = &g->rows;
#pragma omp parallel for if (g->planes * g->oh * g->ow > 32768) schedule(static)
    for (int64_t pl = 0; pl < g->planes; pl++) {
        T *mp = mid + pl * g->h * g->ow;
        T *gp = gx + pl * g->h * g->w;
        memset(mp, 0, (size_t)(g->h * g->ow) * sizeof(T));
        memset(gp, 0, (size_t)(g->h * g->w) * sizeof(T));
        for (int64_t oy = 0; oy < g->oh; oy++) {
            const T *gr = gy + (pl * g->oh + oy) * g->ow;
            for (int64_t k = 0; k < r->taps; k++) {
                T wk = (T)r->weight[oy * r->taps + k];
                T *mr = mp + r->index[oy * r->taps + k] * g->ow;
#pragma omp simd
                for (int64_t ox = 0; ox < g->ow; ox++)
                    mr[ox] += wk * gr[ox];
            }
        }
        for (int64_t iy = 0; iy < g->h; iy++)
            for (int64_t ox = 0; ox < g->ow; ox++) {
                T v = mp[iy * g->ow + ox];
                for (int64_t k = 0; k < c->taps; k++)
                    gp[iy * g->w + c->index[ox * c->taps + k]] +=
                        (T)c->weight[ox * c->taps + k] * v;
            }
    }
}
