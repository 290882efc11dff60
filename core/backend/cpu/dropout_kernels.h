/* The typed dropout kernels, included by dropout.c once per dtype with T
 * (float or double) and FN(name) (name_f32 or name_f64) defined. */

static void FN(dropout)(const T *x, T *y, uint8_t *mask, int64_t n, const kd_rng *rng, float p,
                        T scale)
{
    int64_t chunks = (n + MASK_CHUNK - 1) / MASK_CHUNK;
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        int64_t first = k * MASK_CHUNK;
        int64_t len = n - first < MASK_CHUNK ? n - first : MASK_CHUNK;
        float u[MASK_CHUNK];
        kd_rng_fill_uniformf(rng, (uint64_t)first, u, len);
        const T *xk = x + first;
        T *yk = y + first;
        for (int64_t i = 0; i < len; i++)
            yk[i] = u[i] >= p ? xk[i] * scale : 0;
        if (mask)
            for (int64_t i = 0; i < len; i++)
                mask[first + i] = u[i] >= p;
    }
}

static void FN(dropout_grad)(const T *g, T *gx, const uint8_t *mask, int64_t n, T scale)
{
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++)
        gx[i] = mask[i] ? g[i] * scale : 0;
}

/* y[s, :] = x[s, :] * factor[s] */
static void FN(scale_samples)(const T *x, T *y, const T *factor, int64_t samples, int64_t per)
{
#pragma omp parallel for if (samples * per > 65536) schedule(static)
    for (int64_t s = 0; s < samples; s++) {
        const T *xs = x + s * per;
        T *ys = y + s * per, f = factor[s];
        for (int64_t i = 0; i < per; i++)
            ys[i] = xs[i] * f;
    }
}
