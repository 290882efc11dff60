/* Strided copies on the CPU (cpu.h). */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"

/* The share [lo, hi) of n items for the calling thread. */
static void thread_share(int64_t n, int64_t *lo, int64_t *hi)
{
#ifdef _OPENMP
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int64_t t = 0, nt = 1;
#endif
    *lo = n * t / nt;
    *hi = n * (t + 1) / nt;
}

static void copy_row(char *d, int64_t ds, const char *s, int64_t ss, int64_t n,
                     size_t es)
{
    if (ds == 1 && ss == 1) {
        memcpy(d, s, (size_t)n * es);
    } else if (es == 4) {
        uint32_t *d4 = (uint32_t *)(void *)d;
        const uint32_t *s4 = (const uint32_t *)(const void *)s;
        for (int64_t j = 0; j < n; j++)
            d4[j * ds] = s4[j * ss];
    } else if (es == 8) {
        uint64_t *d8 = (uint64_t *)(void *)d;
        const uint64_t *s8 = (const uint64_t *)(const void *)s;
        for (int64_t j = 0; j < n; j++)
            d8[j * ds] = s8[j * ss];
    } else {
        for (int64_t j = 0; j < n; j++)
            memcpy(d + j * ds * (int64_t)es, s + j * ss * (int64_t)es, es);
    }
}

/* Merges neighbouring dims that are laid out as one in both a and b (same
 * shape), and drops size-1 dims, so copies run along longer rows. */
static void coalesce(kd_tensor *a, kd_tensor *b)
{
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] == 1)
            continue;
        if (nd > 0 && a->stride[nd - 1] == a->stride[d] * a->shape[d] &&
            b->stride[nd - 1] == b->stride[d] * a->shape[d]) {
            a->shape[nd - 1] *= a->shape[d];
            a->stride[nd - 1] = a->stride[d];
            b->stride[nd - 1] = b->stride[d];
        } else {
            a->shape[nd] = a->shape[d];
            a->stride[nd] = a->stride[d];
            b->stride[nd] = b->stride[d];
            nd++;
        }
    }
    a->ndim = b->ndim = nd;
    for (int d = 0; d < nd; d++)
        b->shape[d] = a->shape[d];
}

/* Rows of the last dim are split between threads; offsets advance
 * incrementally. */
void kd_cpu_copy_strided(const kd_tensor *dst_in, const kd_tensor *src_in)
{
    /* coalesce rewrites only shape and strides: plain header copies do */
    kd_tensor dst_h = *dst_in, src_h = *src_in;
    coalesce(&dst_h, &src_h);
    const kd_tensor *dst = &dst_h, *src = &src_h;
    int nd = dst->ndim;
    int64_t n = kd_tensor_numel(dst);
    if (n == 0)
        return;
    size_t es = kd_dtype_size(dst->dtype);
    int64_t inner = nd ? dst->shape[nd - 1] : 1;
    int64_t ds = nd ? dst->stride[nd - 1] : 1, ss = nd ? src->stride[nd - 1] : 1;
    int64_t rows = n / inner;
    char *dbase = (char *)kd_tensor_data(dst);
    const char *sbase = (const char *)kd_tensor_data(src);
#pragma omp parallel if (n > 65536)
    {
        int64_t r0, r1, idx[KD_MAX_DIMS] = {0}, doff = 0, soff = 0;
        thread_share(rows, &r0, &r1);
        int64_t rem = r0;
        for (int d = nd - 2; d >= 0; d--) {
            idx[d] = rem % dst->shape[d];
            rem /= dst->shape[d];
            doff += idx[d] * dst->stride[d];
            soff += idx[d] * src->stride[d];
        }
        for (int64_t r = r0; r < r1; r++) {
            copy_row(dbase + doff * (int64_t)es, ds, sbase + soff * (int64_t)es, ss,
                     inner, es);
            for (int d = nd - 2; d >= 0; d--) {
                doff += dst->stride[d];
                soff += src->stride[d];
                if (++idx[d] < dst->shape[d])
                    break;
                doff -= dst->shape[d] * dst->stride[d];
                soff -= dst->shape[d] * src->stride[d];
                idx[d] = 0;
            }
        }
    }
}
