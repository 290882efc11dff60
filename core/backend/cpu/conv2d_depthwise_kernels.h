/* The typed depthwise kernels, included by conv2d_depthwise.c once per
 * dtype with T (float or double) and FN(name) (name_f32 or name_f64)
 * defined. */

typedef T FN(vec) __attribute__((vector_size(DW_LANES * sizeof(T))));

/* Rows are short: inline loops beat memcpy/memset calls. */
static inline void FN(dw_copy)(T *dst, const T *src, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        dst[i] = src[i];
}

static inline void FN(dw_zero)(T *dst, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        dst[i] = 0;
}

static void FN(dw_pad)(const kd_conv2d_geom *g, const dw_dims *d, const T *src, T *dst)
{
    int64_t top = g->pad[0] * d->wp + g->pad[1], gap = d->wp - g->w;
    FN(dw_zero)(dst, top);
    for (int64_t y = 0; y < g->h; y++) {
        T *row = dst + top + y * d->wp;
        FN(dw_copy)(row, src + y * g->w, g->w);
        FN(dw_zero)(row + g->w, gap);
    }
    int64_t end = top + g->h * d->wp;
    FN(dw_zero)(dst + end, d->padded - end);
}

/* gy's plane on rows of length wp at offset `at` of a zeroed buffer. */
static void FN(dw_widen)(const kd_conv2d_geom *g, const dw_dims *d, const T *gy, int64_t at, T *dst)
{
    memset(dst, 0, (size_t)d->wide * sizeof(T));
    for (int64_t y = 0; y < g->oh; y++)
        FN(dw_copy)(dst + at + y * d->wp, gy + y * g->ow, g->ow);
}

/* dst[u] = b + sum over taps of w[tap] * src[u + sign * offset(tap)] for
 * u < n, in whole DW_STEPs. */
DW_KERNEL_ATTR static void FN(dw_taps)(const kd_conv2d_geom *g, const dw_dims *d, const T *src,
                                       int64_t sign, int64_t n, const T *w, T b, T *dst)
{
    for (int64_t u = 0; u < n; u += DW_STEP) {
        FN(vec) a0 = {0}, a1, a2, a3, v0, v1, v2, v3;
        a0 += b;
        a1 = a2 = a3 = a0;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            for (int64_t kj = 0; kj < g->kw; kj++) {
                const T *p = src + u + sign * (ki * g->dil[0] * d->wp + kj * g->dil[1]);
                T wv = w[ki * g->kw + kj];
                memcpy(&v0, p, sizeof v0);
                memcpy(&v1, p + DW_LANES, sizeof v1);
                memcpy(&v2, p + 2 * DW_LANES, sizeof v2);
                memcpy(&v3, p + 3 * DW_LANES, sizeof v3);
                a0 += wv * v0;
                a1 += wv * v1;
                a2 += wv * v2;
                a3 += wv * v3;
            }
        }
        memcpy(dst + u, &a0, sizeof a0);
        memcpy(dst + u + DW_LANES, &a1, sizeof a1);
        memcpy(dst + u + 2 * DW_LANES, &a2, sizeof a2);
        memcpy(dst + u + 3 * DW_LANES, &a3, sizeof a3);
    }
}

/* sum over u < n of a[u] * b[u], in whole DW_STEPs. */
DW_KERNEL_ATTR static T FN(dw_dot)(const T *a, const T *b, int64_t n)
{
    FN(vec) s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, x0, x1, x2, x3, y0, y1, y2, y3;
    for (int64_t u = 0; u < n; u += DW_STEP) {
        memcpy(&x0, a + u, sizeof x0);
        memcpy(&x1, a + u + DW_LANES, sizeof x1);
        memcpy(&x2, a + u + 2 * DW_LANES, sizeof x2);
        memcpy(&x3, a + u + 3 * DW_LANES, sizeof x3);
        memcpy(&y0, b + u, sizeof y0);
        memcpy(&y1, b + u + DW_LANES, sizeof y1);
        memcpy(&y2, b + u + 2 * DW_LANES, sizeof y2);
        memcpy(&y3, b + u + 3 * DW_LANES, sizeof y3);
        s0 += x0 * y0;
        s1 += x1 * y1;
        s2 += x2 * y2;
        s3 += x3 * y3;
    }
    s0 += s1 + s2 + s3;
    T s = 0;
    for (int l = 0; l < DW_LANES; l++)
        s += s0[l];
    return s;
}

/* One output plane from its padded input plane. */
DW_KERNEL_ATTR static void FN(dw_forward_plane)(const kd_conv2d_geom *g, const dw_dims *d,
                                                const T *pad, const T *w, T b, T *wide, T *out)
{
    if (dw_flat(g)) {
        FN(dw_taps)(g, d, pad, 1, d->flat, w, b, wide);
        for (int64_t y = 0; y < g->oh; y++)
            FN(dw_copy)(out + y * g->ow, wide + y * d->wp, g->ow);
        return;
    }
    int64_t sw = g->stride[1];
    for (int64_t i = 0; i < g->oh * g->ow; i++)
        out[i] = b;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            T wv = w[ki * g->kw + kj];
            for (int64_t y = 0; y < g->oh; y++) {
                const T *src = pad + (y * g->stride[0] + ki * g->dil[0]) * d->wp + kj * g->dil[1];
                T *dst = out + y * g->ow;
                for (int64_t x = 0; x < g->ow; x++)
                    dst[x] += wv * src[x * sw];
            }
        }
}

/* One input-gradient plane gx from gy; gpad is scratch of the padded
 * plane's size. With stride 1 each padded input position gathers the
 * gy values that its taps reached, read from gy on padded rows with
 * `reach` zeros in front. */
DW_KERNEL_ATTR static void FN(dw_backward_data_plane)(const kd_conv2d_geom *g, const dw_dims *d,
                                                      const T *gy, const T *w, T *wide, T *gpad,
                                                      T *gx)
{
    int64_t first_row = g->pad[0];
    if (dw_flat(g)) {
        FN(dw_widen)(g, d, gy, d->reach, wide);
        FN(dw_taps)(g, d, wide + d->reach + g->pad[0] * d->wp, -1, g->h * d->wp, w, 0, gpad);
        first_row = 0;
    } else {
        int64_t sw = g->stride[1];
        memset(gpad, 0, (size_t)d->padded * sizeof(T));
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                T wv = w[ki * g->kw + kj];
                for (int64_t y = 0; y < g->oh; y++) {
                    T *dst = gpad + (y * g->stride[0] + ki * g->dil[0]) * d->wp + kj * g->dil[1];
                    const T *src = gy + y * g->ow;
                    for (int64_t x = 0; x < g->ow; x++)
                        dst[x * sw] += wv * src[x];
                }
            }
    }
    for (int64_t r = 0; r < g->h; r++)
        FN(dw_copy)(gx + r * g->w, gpad + (r + first_row) * d->wp + g->pad[1], g->w);
}

/* Adds one plane's products into gw (kh x kw) and *gb. */
DW_KERNEL_ATTR static void FN(dw_backward_weights_plane)(const kd_conv2d_geom *g, const dw_dims *d,
                                                         const T *pad, const T *gy, T *wide, T *gw,
                                                         T *gb)
{
    T sb = 0;
    for (int64_t i = 0; i < g->oh * g->ow; i++)
        sb += gy[i];
    *gb += sb;
    bool flat = dw_flat(g);
    if (flat)
        FN(dw_widen)(g, d, gy, 0, wide);
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            const T *src = pad + ki * g->dil[0] * d->wp + kj * g->dil[1];
            T s = 0;
            if (flat) {
                s = FN(dw_dot)(wide, src, d->flat);
            } else {
                for (int64_t y = 0; y < g->oh; y++) {
                    const T *row = src + y * g->stride[0] * d->wp;
                    const T *dy = gy + y * g->ow;
                    for (int64_t x = 0; x < g->ow; x++)
                        s += dy[x] * row[x * g->stride[1]];
                }
            }
            gw[ki * g->kw + kj] += s;
        }
}
