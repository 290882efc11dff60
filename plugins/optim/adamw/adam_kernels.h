/* The typed body of adam_update.c, included once per type with T (float
 * or double), FN(name) and FMA set. torch's vectorised kernels compute
 * x.add(y, alpha=a) and addcmul/addcdiv's x + a * y * z with fused
 * multiply-adds; the same order is kept here. */

void FN(kd_adam_update)(int64_t n, T *restrict p, const T *restrict g, T *restrict m,
                        T *restrict v, T *restrict vmax, const kd_adam_coeffs *c)
{
    const double bias1 = 1.0 - pow(c->beta1, (double)c->step);
    const double bias2 = 1.0 - pow(c->beta2, (double)c->step);
    const T shrink = (T)(1.0 - c->lr * c->weight_decay);
    const T wd = (T)c->weight_decay;
    const T beta1 = (T)c->beta1, beta2 = (T)c->beta2;
    const T keep1 = (T)(1.0 - c->beta1), keep2 = (T)(1.0 - c->beta2);
    const T bias2_sqrt = (T)sqrt(bias2), eps = (T)c->eps;
    const T step = (T)(-(c->lr / bias1));
    const bool decoupled = c->decoupled, l2 = !c->decoupled && c->weight_decay != 0;
    const bool amsgrad = c->amsgrad;
#pragma omp parallel for simd if (n > ADAM_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        T pi = decoupled ? p[i] * shrink : p[i];
        T gi = l2 ? FMA(pi, wd, g[i]) : g[i];
        T mi = FMA(gi, keep1, m[i] * beta1);
        T vi = FMA(keep2 * gi, gi, v[i] * beta2);
        m[i] = mi;
        v[i] = vi;
        T second = vi;
        if (amsgrad) {
            second = vmax[i] > vi ? vmax[i] : vi;
            vmax[i] = second;
        }
        T denom = SQRT(second) / bias2_sqrt + eps;
        p[i] = FMA(step, mi / denom, pi);
    }
}
