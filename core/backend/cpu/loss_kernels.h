/* The typed loss kernels, included by loss.c once per dtype with T (float
 * or double), FN(name) (name_f32 or name_f64) and SIMD_EXP (the pragma that
 * vectorises a loop over kd_exp_shifted, or nothing) defined. Rows are
 * [n, c] contiguous; stats hold per row the maximum m and log sum exp(x - m). */

/* With lse = log sum exp of the row, -log p_j = lse - x_j, so
 * (1-eps) nll + eps mean_j(-log p_j) = lse - (1-eps) x_y - eps mean_j x_j. */
static double FN(ce_forward)(const T *x, const int64_t *labels, double *stats, int64_t n, int64_t c,
                             double eps)
{
    double total = 0;
#pragma omp parallel for reduction(+ : total) if (n * c > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const T *row = x + i * c;
        T m = FN(kd_row_max)(row, c);
        double s = FN(kd_row_sum_exp)(row, NULL, c, m);
        double sx = 0;
#pragma omp simd reduction(+ : sx)
        for (int64_t j = 0; j < c; j++)
            sx += row[j];
        stats[2 * i] = m;
        stats[2 * i + 1] = log(s);
        total += m + log(s) - (1 - eps) * row[labels[i]] - eps * sx / (double)c;
    }
    return total;
}

/* gx = (softmax - smoothed one-hot) * scale */
static void FN(ce_backward)(const T *x, const int64_t *labels, const double *stats, T *gx,
                            int64_t n, int64_t c, double eps, double scale)
{
    T off = (T)(eps / (double)c * scale);
#pragma omp parallel for if (n * c > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const T *row = x + i * c;
        T *g = gx + i * c;
        T m = (T)stats[2 * i], ls = (T)stats[2 * i + 1], sc = (T)scale;
        SIMD_EXP
        for (int64_t j = 0; j < c; j++)
            g[j] = FN(kd_exp_shifted)(row[j] - m, ls) * sc - off;
        g[labels[i]] -= (T)((1 - eps) * scale);
    }
}

/* loss_i = sum_j t_ij (lse_i - x_ij); d/dx = p sum_j t - t; d/dt = lse - x,
 * with lse - x taken as log sum - (x - m). */
static double FN(soft_ce_forward)(const T *x, const T *t, double *stats, int64_t n, int64_t c)
{
    double total = 0;
#pragma omp parallel for reduction(+ : total) if (n * c > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const T *row = x + i * c, *tr = t + i * c;
        T m = FN(kd_row_max)(row, c);
        double s = FN(kd_row_sum_exp)(row, NULL, c, m);
        double st = 0, stx = 0;
#pragma omp simd reduction(+ : st, stx)
        for (int64_t j = 0; j < c; j++) {
            st += tr[j];
            stx += tr[j] * row[j];
        }
        stats[2 * i] = m;
        stats[2 * i + 1] = log(s);
        total += (m + log(s)) * st - stx;
    }
    return total;
}

static void FN(soft_ce_backward)(const T *x, const T *t, const double *stats, T *gx, T *gt,
                                 int64_t n, int64_t c, double scale)
{
#pragma omp parallel for if (n * c > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const T *row = x + i * c, *tr = t + i * c;
        T m = (T)stats[2 * i], ls = (T)stats[2 * i + 1], sc = (T)scale;
        if (gx) {
            double st = 0;
#pragma omp simd reduction(+ : st)
            for (int64_t j = 0; j < c; j++)
                st += tr[j];
            T k = (T)(st * scale);
            SIMD_EXP
            for (int64_t j = 0; j < c; j++)
                gx[i * c + j] = FN(kd_exp_shifted)(row[j] - m, ls) * k - tr[j] * sc;
        }
        if (gt)
#pragma omp simd
            for (int64_t j = 0; j < c; j++)
                gt[i * c + j] = (ls - (row[j] - m)) * sc;
    }
}

/* Pointwise t (log t - x), with 0 log 0 = 0; or exp(t) (t - x) for log
 * targets. Returns the sum; writes the pointwise values when out != NULL. */
static double FN(kl_forward)(const T *x, const T *t, T *out, int64_t n, bool log_target)
{
    double total = 0;
#pragma omp parallel for reduction(+ : total) if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        T v = log_target ? exp(t[i]) * (t[i] - x[i])
                         : (t[i] == 0 ? 0 : t[i] * log(t[i])) - t[i] * x[i];
        if (out)
            out[i] = v;
        total += v;
    }
    return total;
}

/* g is one value (gs, times scale) or pointwise (gp). */
static void FN(kl_backward)(const T *x, const T *t, const T *gp, double gs, T *gx, T *gt, int64_t n,
                            bool log_target)
{
    if (!log_target && !gp && !gt) { /* distillation: only the input learns */
        T g = (T)-gs;
#pragma omp parallel for simd if (n > PAR_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            gx[i] = g * t[i];
        return;
    }
#pragma omp parallel for if (n > PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        T g = gp ? gp[i] : (T)gs;
        T w = log_target ? exp(t[i]) : t[i];
        if (gx)
            gx[i] = -g * w;
        if (gt)
            gt[i] = log_target ? g * w * (t[i] - x[i] + 1) : g * (log(t[i]) + 1 - x[i]);
    }
}
