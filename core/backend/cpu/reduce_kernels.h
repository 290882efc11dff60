/* The typed reduce kernels, included by reduce.c once per dtype with T
 * (float or double) and FN(name) (name_f32 or name_f64) defined. x is
 * [outer, reduce, inner] contiguous. */

/* Sum of a contiguous run: LANES partial sums in T over blocks of at
 * most BLOCK elements, blocks added up in double. */
static double FN(sum_run)(const T *x, int64_t n)
{
    double total = 0;
    for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {
        int64_t len = n - b0 < BLOCK ? n - b0 : BLOCK;
        int64_t full = len - len % LANES;
        const T *p = x + b0;
        T lane[LANES] = {0};
        for (int64_t j = 0; j < full; j += LANES)
            for (int k = 0; k < LANES; k++)
                lane[k] += p[j + k];
        T s = 0;
        for (int k = 0; k < LANES; k++)
            s += lane[k];
        for (int64_t j = full; j < len; j++)
            s += p[j];
        total += s;
    }
    return total;
}

static void FN(sum)(const T *x, T *out, int64_t outer, int64_t reduce, int64_t inner, double scale)
{
    if (inner == 1 && outer == 1) { /* one long row: split it */
        int64_t blocks = (reduce + BLOCK - 1) / BLOCK;
        double s = 0;
#pragma omp parallel for reduction(+ : s) if (reduce > PAR_MIN) schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            int64_t b0 = b * BLOCK;
            s += FN(sum_run)(x + b0, reduce - b0 < BLOCK ? reduce - b0 : BLOCK);
        }
        out[0] = (T)(s * scale);
        return;
    }
    if (inner == 1) {
#pragma omp parallel for if (outer * reduce > PAR_MIN) schedule(static)
        for (int64_t o = 0; o < outer; o++)
            out[o] = (T)(FN(sum_run)(x + o * reduce, reduce) * scale);
        return;
    }
    /* Tiles of inner: rows added in T in blocks of BLOCK / TILE rows,
     * blocks in double. */
    int64_t tiles = (inner + TILE - 1) / TILE;
    int64_t rows_per_block = BLOCK / TILE;
#pragma omp parallel for if (outer * reduce * inner > PAR_MIN) schedule(static)
    for (int64_t t = 0; t < outer * tiles; t++) {
        int64_t o = t / tiles, i0 = (t - o * tiles) * TILE;
        int64_t n = inner - i0 < TILE ? inner - i0 : TILE;
        double acc[TILE] = {0};
        T part[TILE];
        const T *base = x + o * reduce * inner + i0;
        for (int64_t r0 = 0; r0 < reduce; r0 += rows_per_block) {
            int64_t r1 = reduce - r0 < rows_per_block ? reduce : r0 + rows_per_block;
            for (int64_t i = 0; i < n; i++)
                part[i] = base[r0 * inner + i];
            for (int64_t r = r0 + 1; r < r1; r++) {
                const T *p = base + r * inner;
#pragma omp simd
                for (int64_t i = 0; i < n; i++)
                    part[i] += p[i];
            }
            for (int64_t i = 0; i < n; i++)
                acc[i] += part[i];
        }
        T *dst = out + o * inner + i0;
        for (int64_t i = 0; i < n; i++)
            dst[i] = (T)(acc[i] * scale);
    }
}

/* Two passes (mean, then squared deviations) for accuracy. */
static void FN(var)(const T *x, T *var, T *mean, int64_t outer, int64_t reduce, double divisor)
{
#pragma omp parallel for if (outer * reduce > PAR_MIN) schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        const T *row = x + o * reduce;
        double s = 0, q = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t r = 0; r < reduce; r++)
            s += row[r];
        double m = s / (double)reduce;
#pragma omp simd reduction(+ : q)
        for (int64_t r = 0; r < reduce; r++)
            q += (row[r] - m) * (row[r] - m);
        var[o] = (T)(q / divisor);
        mean[o] = (T)m;
    }
}

/* The first extreme wins; a NaN beats any number, like torch. */
static void FN(extreme)(const T *x, T *out, int64_t *arg, int64_t outer, int64_t reduce,
                        int64_t inner, bool is_min)
{
    T sign = is_min ? -1 : 1;
    int64_t tiles = (inner + TILE - 1) / TILE;
#pragma omp parallel for if (outer * reduce * inner > PAR_MIN) schedule(static)
    for (int64_t t = 0; t < outer * tiles; t++) {
        int64_t o = t / tiles, i0 = (t - o * tiles) * TILE;
        int64_t n = inner - i0 < TILE ? inner - i0 : TILE;
        const T *base = x + o * reduce * inner + i0;
        T best[TILE];
        int64_t at[TILE];
        for (int64_t i = 0; i < n; i++) {
            best[i] = sign * base[i];
            at[i] = 0;
        }
        for (int64_t r = 1; r < reduce; r++) {
            const T *p = base + r * inner;
            for (int64_t i = 0; i < n; i++) {
                T v = sign * p[i];
                bool take = v > best[i] || (v != v && best[i] == best[i]);
                best[i] = take ? v : best[i];
                at[i] = take ? r : at[i];
            }
        }
        T *dst = out ? out + o * inner + i0 : NULL;
        for (int64_t i = 0; i < n; i++) {
            if (dst)
                dst[i] = sign * best[i];
            if (arg)
                arg[o * inner + i0 + i] = at[i];
        }
    }
}

static void FN(extreme_backward)(T *gx, const T *g, const int64_t *arg, int64_t outer,
                                 int64_t reduce, int64_t inner)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            gx[(o * reduce + arg[o * inner + i]) * inner + i] += g[o * inner + i];
}
