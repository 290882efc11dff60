/* The typed body of lamb_update.c, included once per type with T, FN(name),
 * FMA and SQRT set. Coefficients are rounded to T once, as timm's Python
 * scalars are; each line follows one of timm's tensor operations. */

double FN(kd_lamb_sum_squares)(int64_t n, const T *restrict x, double *restrict partials)
{
    const int64_t blocks = kd_lamb_blocks(n);
#pragma omp parallel for if (n > LAMB_PARALLEL_MIN) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t end = (b + 1) * LAMB_BLOCK < n ? (b + 1) * LAMB_BLOCK : n;
        double sum = 0;
        for (int64_t i = b * LAMB_BLOCK; i < end; i++)
            sum += (double)x[i] * (double)x[i];
        partials[b] = sum;
    }
    double total = 0;
    for (int64_t b = 0; b < blocks; b++)
        total += partials[b];
    return total;
}

void FN(kd_lamb_moments)(int64_t n, const T *restrict p, const T *restrict g, T *restrict m,
                         T *restrict v, T *restrict u, const kd_lamb_coeffs *c)
{
    const double bias1 = c->bias_correction ? 1.0 - pow(c->beta1, (double)c->step) : 1.0;
    const double bias2 = c->bias_correction ? 1.0 - pow(c->beta2, (double)c->step) : 1.0;
    const T clip = (T)c->clip;
    const T beta1 = (T)c->beta1, beta2 = (T)c->beta2;
    const T beta3 = (T)(c->grad_averaging ? 1.0 - c->beta1 : 1.0), keep2 = (T)(1.0 - c->beta2);
    const T bc1 = (T)bias1, bc2_sqrt = (T)sqrt(bias2), eps = (T)c->eps;
    const T wd = (T)c->weight_decay;
    const bool decay = c->weight_decay != 0;
#pragma omp parallel for simd if (n > LAMB_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        T gi = g[i] / clip;
        T mi = FMA(gi, beta3, m[i] * beta1);
        T vi = FMA(keep2 * gi, gi, v[i] * beta2);
        m[i] = mi;
        v[i] = vi;
        T ui = (mi / bc1) / (SQRT(vi) / bc2_sqrt + eps);
        u[i] = decay ? FMA(p[i], wd, ui) : ui;
    }
}

void FN(kd_lamb_apply)(int64_t n, T *restrict p, const T *restrict u, double ratio, double lr)
{
    const T r = (T)ratio, step = (T)-lr;
#pragma omp parallel for simd if (n > LAMB_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        p[i] = FMA(u[i] * r, step, p[i]);
}
