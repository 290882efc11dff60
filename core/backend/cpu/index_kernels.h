/* The typed indexing kernels, included by index.c once per dtype with T
 * (float or double) and FN(name) (name_f32 or name_f64) defined. */

/* gx[o, idx[i], :] += g[o, i, :]; threads own disjoint o. */
static void FN(scatter_rows)(T *gx, const T *g, const int64_t *idx, int64_t outer, int64_t size,
                             int64_t k, int64_t inner)
{
#pragma omp parallel for if (outer > 1 && outer * k * inner > 32768)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < k; i++) {
            T *dst = gx + (o * size + idx[i]) * inner;
            const T *src = g + (o * k + i) * inner;
            for (int64_t j = 0; j < inner; j++)
                dst[j] += src[j];
        }
    }
}

/* out[i] = x[off[i]], and its gradient gx[off[i]] += g[i] (repeated
 * offsets accumulate, so one thread). */
static void FN(gather)(T *out, const T *x, const int64_t *off, int64_t n)
{
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++)
        out[i] = x[off[i]];
}

static void FN(scatter_add)(T *gx, const T *g, const int64_t *off, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        gx[off[i]] += g[i];
}

/* out = mask ? value : a; a contiguous, mask read through broadcast
 * strides ms (in bytes = elements for U8). */
static void FN(select)(T *out, const T *a, const uint8_t *mask, const int64_t *ms, int nd,
                       const int64_t *shape, T value)
{
    int64_t inner = nd ? shape[nd - 1] : 1, mi = nd ? ms[nd - 1] : 0;
    int64_t rows = kd_shape_numel(nd > 1 ? nd - 1 : 0, shape);
#pragma omp parallel for if (rows * inner > 65536) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t moff = 0, rem = r;
        for (int k = nd - 2; k >= 0; k--) {
            moff += (rem % shape[k]) * ms[k];
            rem /= shape[k];
        }
        const uint8_t *m = mask + moff;
        const T *ar = a + r * inner;
        T *o = out + r * inner;
        if (mi == 0) {
            if (m[0])
                for (int64_t j = 0; j < inner; j++)
                    o[j] = value;
            else
                memcpy(o, ar, (size_t)inner * sizeof(T));
        } else {
            for (int64_t j = 0; j < inner; j++)
                o[j] = m[j * mi] ? value : ar[j];
        }
    }
}
