/* The typed softmax kernels, included by softmax.c once per dtype with T
 * (float or double), FN(name) (name_f32 or name_f64) and SIMD_EXP (the
 * pragma that vectorises a loop over kd_exp_shifted, or nothing) defined.
 * x is [outer, reduce, inner] contiguous. */

/* inner == 1: each row of `reduce` contiguous elements. */
static void FN(softmax_rows)(const T *x, T *y, int64_t outer, int64_t reduce, bool log_out)
{
#pragma omp parallel for if (outer * reduce > PAR_MIN) schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        const T *xr = x + o * reduce;
        T *yr = y + o * reduce;
        if (!log_out) {
            FN(kd_row_softmax)(xr, yr, reduce);
            continue;
        }
        T m = FN(kd_row_max)(xr, reduce);
        T ls = (T)log(FN(kd_row_sum_exp)(xr, NULL, reduce, m));
#pragma omp simd
        for (int64_t r = 0; r < reduce; r++)
            yr[r] = (xr[r] - m) - ls;
    }
}

/* inner > 1: a tile of inner positions, reduce strided by inner. */
static void FN(softmax_tiles)(const T *x, T *y, int64_t outer, int64_t reduce, int64_t inner,
                              bool log_out)
{
    int64_t tiles = (inner + TILE - 1) / TILE;
#pragma omp parallel for if (outer * reduce * inner > PAR_MIN) schedule(static)
    for (int64_t t = 0; t < outer * tiles; t++) {
        int64_t o = t / tiles, i0 = (t - o * tiles) * TILE;
        int64_t n = inner - i0 < TILE ? inner - i0 : TILE;
        const T *xb = x + o * reduce * inner + i0;
        T *yb = y + o * reduce * inner + i0;
        T m[TILE], s[TILE];
        for (int64_t i = 0; i < n; i++) {
            m[i] = xb[i];
            s[i] = 0;
        }
        for (int64_t r = 1; r < reduce; r++)
            for (int64_t i = 0; i < n; i++)
                m[i] = xb[r * inner + i] > m[i] ? xb[r * inner + i] : m[i];
        for (int64_t r = 0; r < reduce; r++)
            for (int64_t i = 0; i < n; i++) {
                T e = FN(kd_exp_shifted)(xb[r * inner + i], m[i]);
                yb[r * inner + i] = e;
                s[i] += e;
            }
        for (int64_t i = 0; i < n; i++)
            s[i] = log_out ? log(s[i]) : 1 / s[i];
        if (log_out) {
            for (int64_t r = 0; r < reduce; r++)
                for (int64_t i = 0; i < n; i++)
                    yb[r * inner + i] = (xb[r * inner + i] - m[i]) - s[i];
        } else {
            for (int64_t r = 0; r < reduce; r++)
                for (int64_t i = 0; i < n; i++)
                    yb[r * inner + i] *= s[i];
        }
    }
}

/* softmax: gx = y (g - sum g y); log_softmax: gx = g - exp(y) sum g.
 * Rows of `reduce` run at stride `inner`; inner == 1 is the fast case. */
static void FN(softmax_backward)(const T *y, const T *g, T *gx, int64_t outer, int64_t reduce,
                                 int64_t inner, bool log_out)
{
#pragma omp parallel for collapse(2) if (outer * reduce * inner > PAR_MIN) schedule(static)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * reduce * inner + i;
            const T *yr = y + base, *gr = g + base;
            T *xr = gx + base;
            double acc = 0;
            if (inner == 1) {
                if (log_out) {
#pragma omp simd reduction(+ : acc)
                    for (int64_t r = 0; r < reduce; r++)
                        acc += gr[r];
                    /* exp(y) = exp(y - m) exp(m), m = max y: a shift
                     * known only at run time keeps the loop vector */
                    T m = FN(kd_row_max)(yr, reduce);
                    T k = (T)(acc * exp((double)m));
                    SIMD_EXP
                    for (int64_t r = 0; r < reduce; r++)
                        xr[r] = gr[r] - FN(kd_exp_shifted)(yr[r], m) * k;
                } else {
#pragma omp simd reduction(+ : acc)
                    for (int64_t r = 0; r < reduce; r++)
                        acc += gr[r] * yr[r];
                    T a = (T)acc;
#pragma omp simd
                    for (int64_t r = 0; r < reduce; r++)
                        xr[r] = yr[r] * (gr[r] - a);
                }
                continue;
            }
            for (int64_t r = 0; r < reduce; r++)
                acc += log_out ? gr[r * inner] : gr[r * inner] * yr[r * inner];
            T a = (T)acc;
            for (int64_t r = 0; r < reduce; r++) {
                int64_t k = r * inner;
                xr[k] = log_out ? gr[k] - FN(kd_exp_shifted)(yr[k], 0) * a : yr[k] * (gr[k] - a);
            }
        }
}
