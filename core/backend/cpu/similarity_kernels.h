/* The typed similarity kernels, included by similarity.c once per dtype
 * with T (float or double) and FN(name) (name_f32 or name_f64) defined. */

/* As torch 1.13: each norm is clamped to eps on its own,
 * cos = sum(a b) / (max(|a|, eps) max(|b|, eps)). Its gradient treats the
 * clamped norm n as if dn/da = a / n, as torch's does:
 * d cos / da = b / (n_a n_b) - cos a / n_a^2. a and b are [outer, reduce,
 * inner]; inv holds 1/n_a then 1/n_b for each of the outer * inner outputs. */
static void FN(cosine_forward)(const T *a, const T *b, T *out, double *inv, int64_t outer,
                               int64_t reduce, int64_t inner, double eps)
{
    int64_t m = outer * inner;
    int64_t tiles = (inner + TILE - 1) / TILE;
#pragma omp parallel for if (m * reduce > PAR_MIN) schedule(static)
    for (int64_t t = 0; t < outer * tiles; t++) {
        int64_t o = t / tiles, i0 = (t - o * tiles) * TILE;
        int64_t n = inner - i0 < TILE ? inner - i0 : TILE;
        const T *pa = a + o * reduce * inner + i0;
        const T *pb = b + o * reduce * inner + i0;
        double w12[TILE], w1[TILE], w2[TILE];
        if (n == 1) {
            double s12 = 0, s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s12, s1, s2)
            for (int64_t r = 0; r < reduce; r++) {
                double va = pa[r * inner], vb = pb[r * inner];
                s12 += va * vb;
                s1 += va * va;
                s2 += vb * vb;
            }
            w12[0] = s12;
            w1[0] = s1;
            w2[0] = s2;
        } else {
            for (int64_t i = 0; i < n; i++)
                w12[i] = w1[i] = w2[i] = 0;
            for (int64_t r = 0; r < reduce; r++)
                for (int64_t i = 0; i < n; i++) {
                    double va = pa[r * inner + i], vb = pb[r * inner + i];
                    w12[i] += va * vb;
                    w1[i] += va * va;
                    w2[i] += vb * vb;
                }
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t k = o * inner + i0 + i;
            double na = fmax(sqrt(w1[i]), eps), nb = fmax(sqrt(w2[i]), eps);
            inv[k] = 1 / na;
            inv[m + k] = 1 / nb;
            out[k] = (T)(w12[i] / (na * nb));
        }
    }
}

static void FN(cosine_backward)(const T *a, const T *b, const T *cos, const double *inv, const T *g,
                                T *ga, T *gb, int64_t outer, int64_t reduce, int64_t inner)
{
    int64_t m = outer * inner;
#pragma omp parallel for if (m * reduce > PAR_MIN) schedule(static)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t r = 0; r < reduce; r++) {
            int64_t base = (o * reduce + r) * inner;
            const T *pg = g + o * inner, *pc = cos + o * inner;
            const double *ia = inv + o * inner, *ib = inv + m + o * inner;
            for (int64_t i = 0; i < inner; i++) {
                T va = a[base + i], vb = b[base + i];
                T gab = pg[i] * (T)(ia[i] * ib[i]);
                T gc = pg[i] * pc[i];
                if (ga)
                    ga[base + i] = gab * vb - gc * va * (T)(ia[i] * ia[i]);
                if (gb)
                    gb[base + i] = gab * va - gc * vb * (T)(ib[i] * ib[i]);
            }
        }
}

/* cdist: computed directly (not through |a|^2 + |b|^2 - 2 a.b) so small
 * distances keep their precision. */
static void FN(cdist_forward)(const T *a, const T *b, T *out, int64_t n, int64_t m, int64_t d)
{
#pragma omp parallel for if (n * m * d > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            const T *pa = a + i * d, *pb = b + j * d;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t k = 0; k < d; k++)
                s += (pa[k] - pb[k]) * (pa[k] - pb[k]);
            out[i * m + j] = sqrt(s);
        }
}

/* w = g / dist (0 where dist is 0); rowsum[i] = sum_j w, colsum[j] =
 * sum_i w. */
static void FN(cdist_weights)(const T *g, const T *dist, T *w, T *rowsum, T *colsum, int64_t n,
                              int64_t m)
{
    for (int64_t j = 0; j < m; j++)
        colsum[j] = 0;
    for (int64_t i = 0; i < n; i++) {
        T rs = 0;
        for (int64_t j = 0; j < m; j++) {
            T v = dist[i * m + j] == 0 ? 0 : g[i * m + j] / dist[i * m + j];
            w[i * m + j] = v;
            rs += v;
            colsum[j] += v;
        }
        rowsum[i] = rs;
    }
}

/* out[r, :] = scale[r] * x[r, :] - out[r, :] */
static void FN(cdist_finish)(T *out, const T *x, const T *scale, int64_t rows, int64_t d)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < d; k++)
            out[r * d + k] = scale[r] * x[r * d + k] - out[r * d + k];
}
