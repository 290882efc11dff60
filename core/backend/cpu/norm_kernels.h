/* The typed norm kernels, included by norm.c once per dtype with T (float
 * or double) and FN(name) (name_f32 or name_f64) defined. x is [N, C, S]
 * contiguous; mean and 1/std are kept per normalised group in f64. */

/* Statistics and affine of each (n, group) block of Cg*S contiguous
 * elements; w and b hold C values. */
static void FN(group_forward)(const T *x, T *y, double *stats, const T *w, const T *b, int64_t N,
                              int64_t G, int64_t Cg, int64_t S, double eps)
{
    int64_t blocks = N * G, M = Cg * S;
#pragma omp parallel for if (blocks * M > 32768 && blocks > 1) schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const T *xb = x + blk * M;
        T *yb = y + blk * M;
        const T *wg = w + (blk % G) * Cg, *bg = b + (blk % G) * Cg;
        double sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < M; i++)
            sum += xb[i];
        double mean = sum / (double)M;
#pragma omp simd reduction(+ : sq)
        for (int64_t i = 0; i < M; i++) {
            double d = xb[i] - mean;
            sq += d * d;
        }
        double rstd = 1.0 / sqrt(sq / (double)M + eps);
        stats[2 * blk] = mean;
        stats[2 * blk + 1] = rstd;
        T m = (T)mean, r = (T)rstd;
        if (S == 1) {
#pragma omp simd
            for (int64_t c = 0; c < Cg; c++)
                yb[c] = (xb[c] - m) * r * wg[c] + bg[c];
        } else {
            for (int64_t c = 0; c < Cg; c++) {
                const T *xc = xb + c * S;
                T *yc = yb + c * S, a = r * wg[c], bc = bg[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++)
                    yc[s] = (xc[s] - m) * a + bc;
            }
        }
    }
}

/* gx (may be NULL) and, into part[thread][2][C] (may be NULL), the sums of
 * g * xhat (weight) and g (bias) per channel. */
static void FN(group_backward)(const T *x, const T *g, const double *stats, const T *w, T *gx,
                               double *part, int64_t N, int64_t G, int64_t Cg, int64_t S)
{
    int64_t blocks = N * G, M = Cg * S, C = G * Cg;
#pragma omp parallel for if (blocks * M > 32768 && blocks > 1) schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const T *xb = x + blk * M, *gb = g + blk * M;
        int64_t c0 = (blk % G) * Cg;
        const T *wg = w + c0;
        double mean = stats[2 * blk], rstd = stats[2 * blk + 1];
        double *pw = part ? part + (int64_t)thread_id() * 2 * C + c0 : NULL;
        double s1 = 0, s2 = 0; /* sums of dxhat and dxhat * xhat */
        if (S == 1) {
#pragma omp simd reduction(+ : s1, s2)
            for (int64_t c = 0; c < Cg; c++) {
                double dxh = (double)gb[c] * wg[c];
                s1 += dxh;
                s2 += dxh * ((xb[c] - mean) * rstd);
            }
            if (pw)
#pragma omp simd
                for (int64_t c = 0; c < Cg; c++) {
                    pw[c] += gb[c] * ((xb[c] - mean) * rstd);
                    pw[C + c] += gb[c];
                }
        } else {
            for (int64_t c = 0; c < Cg; c++) {
                const T *xc = xb + c * S, *gc = gb + c * S;
                double cg = 0, cgx = 0;
#pragma omp simd reduction(+ : cg, cgx)
                for (int64_t s = 0; s < S; s++) {
                    cg += gc[s];
                    cgx += gc[s] * (xc[s] - mean);
                }
                cgx *= rstd;
                s1 += wg[c] * cg;
                s2 += wg[c] * cgx;
                if (pw) {
                    pw[c] += cgx;
                    pw[C + c] += cg;
                }
            }
        }
        if (!gx)
            continue;
        T *gxb = gx + blk * M, m = (T)mean, r = (T)rstd;
        T k1 = (T)(s1 / (double)M), k2 = (T)(s2 / (double)M * rstd);
        if (S == 1) {
#pragma omp simd
            for (int64_t c = 0; c < Cg; c++)
                gxb[c] = r * (gb[c] * wg[c] - k1 - (xb[c] - m) * k2);
        } else {
            for (int64_t c = 0; c < Cg; c++) {
                const T *xc = xb + c * S, *gc = gb + c * S;
                T *gxc = gxb + c * S, wc = wg[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++)
                    gxc[s] = r * (gc[s] * wc - k1 - (xc[s] - m) * k2);
            }
        }
    }
}

/* Channel norm: statistics over C for each (n, s), in tasks of one n and
 * a block of spatial positions, so the inner loops run along s. */
static void FN(channels_forward)(const T *x, T *y, double *stats, const T *w, const T *b, int64_t N,
                                 int64_t C, int64_t S, double eps)
{
    int64_t nsb = (S + SPATIAL_BLOCK - 1) / SPATIAL_BLOCK, tasks = N * nsb;
#pragma omp parallel for if (N * C * S > 32768) schedule(static)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t n = task / nsb, s0 = (task % nsb) * SPATIAL_BLOCK;
        int64_t len = S - s0 < SPATIAL_BLOCK ? S - s0 : SPATIAL_BLOCK;
        const T *xb = x + n * C * S + s0;
        T *yb = y + n * C * S + s0;
        double acc[SPATIAL_BLOCK] = {0}, mean[SPATIAL_BLOCK];
        T mt[SPATIAL_BLOCK], rt[SPATIAL_BLOCK];
        for (int64_t c = 0; c < C; c++)
#pragma omp simd
            for (int64_t s = 0; s < len; s++)
                acc[s] += xb[c * S + s];
        for (int64_t s = 0; s < len; s++) {
            mean[s] = acc[s] / (double)C;
            acc[s] = 0;
        }
        for (int64_t c = 0; c < C; c++)
#pragma omp simd
            for (int64_t s = 0; s < len; s++) {
                double d = xb[c * S + s] - mean[s];
                acc[s] += d * d;
            }
        double *st = stats + 2 * (n * S + s0);
        for (int64_t s = 0; s < len; s++) {
            double rstd = 1.0 / sqrt(acc[s] / (double)C + eps);
            st[2 * s] = mean[s];
            st[2 * s + 1] = rstd;
            mt[s] = (T)mean[s];
            rt[s] = (T)rstd;
        }
        for (int64_t c = 0; c < C; c++) {
            T wc = w[c], bc = b[c];
#pragma omp simd
            for (int64_t s = 0; s < len; s++)
                yb[c * S + s] = (xb[c * S + s] - mt[s]) * rt[s] * wc + bc;
        }
    }
}

static void FN(channels_backward)(const T *x, const T *g, const double *stats, const T *w, T *gx,
                                  double *part, int64_t N, int64_t C, int64_t S)
{
    int64_t nsb = (S + SPATIAL_BLOCK - 1) / SPATIAL_BLOCK, tasks = N * nsb;
#pragma omp parallel for if (N * C * S > 32768) schedule(static)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t n = task / nsb, s0 = (task % nsb) * SPATIAL_BLOCK;
        int64_t len = S - s0 < SPATIAL_BLOCK ? S - s0 : SPATIAL_BLOCK;
        const T *xb = x + n * C * S + s0, *gb = g + n * C * S + s0;
        const double *st = stats + 2 * (n * S + s0);
        double *pw = part ? part + (int64_t)thread_id() * 2 * C : NULL;
        double s1[SPATIAL_BLOCK] = {0}, s2[SPATIAL_BLOCK] = {0};
        T mt[SPATIAL_BLOCK], rt[SPATIAL_BLOCK];
        for (int64_t s = 0; s < len; s++) {
            mt[s] = (T)st[2 * s];
            rt[s] = (T)st[2 * s + 1];
        }
        for (int64_t c = 0; c < C; c++) {
            const T *xc = xb + c * S, *gc = gb + c * S;
            T wc = w[c];
            double cg = 0, cgx = 0;
#pragma omp simd reduction(+ : cg, cgx)
            for (int64_t s = 0; s < len; s++) {
                T xh = (xc[s] - mt[s]) * rt[s];
                s1[s] += gc[s] * wc;
                s2[s] += gc[s] * wc * xh;
                cg += gc[s];
                cgx += gc[s] * xh;
            }
            if (pw) {
                pw[c] += cgx;
                pw[C + c] += cg;
            }
        }
        if (!gx)
            continue;
        T *gxb = gx + n * C * S + s0, k1[SPATIAL_BLOCK], k2[SPATIAL_BLOCK];
        for (int64_t s = 0; s < len; s++) {
            k1[s] = (T)(s1[s] / (double)C);
            k2[s] = (T)(s2[s] / (double)C);
        }
        for (int64_t c = 0; c < C; c++) {
            const T *xc = xb + c * S, *gc = gb + c * S;
            T *gxc = gxb + c * S, wc = w[c];
#pragma omp simd
            for (int64_t s = 0; s < len; s++)
                gxc[s] = rt[s] * (gc[s] * wc - k1[s] - (xc[s] - mt[s]) * rt[s] * k2[s]);
        }
    }
}

/* Batch norm: mean and biased variance of each channel over N and S. */
static void FN(batch_stats)(const T *x, double *mean, double *var, int64_t N, int64_t C, int64_t S)
{
    double count = (double)(N * S);
    if (S == 1) { /* [N, C]: walk rows, a block of channels per task */
        int64_t blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for if (N * C > 32768) schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t c0 = blk * CHANNEL_BLOCK;
            int64_t len = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;
            double sum[CHANNEL_BLOCK] = {0}, sq[CHANNEL_BLOCK] = {0};
            for (int64_t n = 0; n < N; n++) {
                const T *row = x + n * C + c0;
#pragma omp simd
                for (int64_t c = 0; c < len; c++)
                    sum[c] += row[c];
            }
            for (int64_t c = 0; c < len; c++)
                mean[c0 + c] = sum[c] / count;
            for (int64_t n = 0; n < N; n++) {
                const T *row = x + n * C + c0;
                const double *m = mean + c0;
#pragma omp simd
                for (int64_t c = 0; c < len; c++) {
                    double d = row[c] - m[c];
                    sq[c] += d * d;
                }
            }
            for (int64_t c = 0; c < len; c++)
                var[c0 + c] = sq[c] / count;
        }
        return;
    }
#pragma omp parallel for if (N * C * S > 32768) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < N; n++) {
            const T *p = x + (n * C + c) * S;
#pragma omp simd reduction(+ : sum)
            for (int64_t s = 0; s < S; s++)
                sum += p[s];
        }
        double m = sum / count;
        for (int64_t n = 0; n < N; n++) {
            const T *p = x + (n * C + c) * S;
#pragma omp simd reduction(+ : sq)
            for (int64_t s = 0; s < S; s++) {
                double d = p[s] - m;
                sq += d * d;
            }
        }
        mean[c] = m;
        var[c] = sq / count;
    }
}

/* y = (x - shift[c]) * scale[c] + bias[c]; also the shape of the batch
 * norm input gradient, (g - k1[c] - (x - shift[c]) * k2[c]) * scale[c]. */
static void FN(batch_apply)(const T *x, const T *g, T *y, const T *shift, const T *scale,
                            const T *bias, const T *k1, const T *k2, int64_t N, int64_t C,
                            int64_t S)
{
    if (S == 1) {
#pragma omp parallel for if (N * C > 32768) schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const T *xr = x + n * C;
            T *yr = y + n * C;
            if (g) {
                const T *gr = g + n * C;
#pragma omp simd
                for (int64_t c = 0; c < C; c++)
                    yr[c] = (gr[c] - k1[c] - (xr[c] - shift[c]) * k2[c]) * scale[c];
            } else {
#pragma omp simd
                for (int64_t c = 0; c < C; c++)
                    yr[c] = (xr[c] - shift[c]) * scale[c] + bias[c];
            }
        }
        return;
    }
#pragma omp parallel for collapse(2) if (N * C * S > 32768) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        for (int64_t c = 0; c < C; c++) {
            const T *xc = x + (n * C + c) * S;
            T *yc = y + (n * C + c) * S, m = shift[c], a = scale[c];
            if (g) {
                const T *gc = g + (n * C + c) * S;
                T q1 = k1[c], q2 = k2[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++)
                    yc[s] = (gc[s] - q1 - (xc[s] - m) * q2) * a;
            } else {
                T bc = bias[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++)
                    yc[s] = (xc[s] - m) * a + bc;
            }
        }
    }
}

/* Per channel: sum of g (bias grad) and of g * xhat (weight grad). */
static void FN(batch_grad_sums)(const T *x, const T *g, const double *mean, const double *rstd,
                                double *gsum, double *gxhat_sum, int64_t N, int64_t C, int64_t S)
{
    if (S == 1) {
        int64_t blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for if (N * C > 32768) schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t c0 = blk * CHANNEL_BLOCK;
            int64_t len = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;
            double cg[CHANNEL_BLOCK] = {0}, cgx[CHANNEL_BLOCK] = {0};
            const double *m = mean + c0;
            for (int64_t n = 0; n < N; n++) {
                const T *xr = x + n * C + c0, *gr = g + n * C + c0;
#pragma omp simd
                for (int64_t c = 0; c < len; c++) {
                    cg[c] += gr[c];
                    cgx[c] += gr[c] * (xr[c] - m[c]);
                }
            }
            for (int64_t c = 0; c < len; c++) {
                gsum[c0 + c] = cg[c];
                gxhat_sum[c0 + c] = cgx[c] * rstd[c0 + c];
            }
        }
        return;
    }
#pragma omp parallel for if (N * C * S > 32768) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double cg = 0, cgx = 0, m = mean[c];
        for (int64_t n = 0; n < N; n++) {
            const T *xc = x + (n * C + c) * S, *gc = g + (n * C + c) * S;
#pragma omp simd reduction(+ : cg, cgx)
            for (int64_t s = 0; s < S; s++) {
                cg += gc[s];
                cgx += gc[s] * (xc[s] - m);
            }
        }
        gsum[c] = cg;
        gxhat_sum[c] = cgx * rstd[c];
    }
}
