/* Indexing kernels (cpu.h): index_select, gather, their scatter-adds, and
 * masked_fill's select. */
#include <string.h>

#include "cpu.h"

#define T float
#define FN(name) name##_f32
#include "index_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "index_kernels.h"
#undef T
#undef FN

void kd_cpu_select_rows(void *out, const void *x, const int64_t *idx, int64_t outer,
                        int64_t size, int64_t k, int64_t inner, size_t elem_size)
{
    size_t row_bytes = (size_t)inner * elem_size;
    const char *src = x;
    char *dst = out;
    int64_t rows = outer * k;
#pragma omp parallel for if (rows * inner > 65536) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / k, i = r % k; /* per row, not per element */
        memcpy(dst + r * (int64_t)row_bytes, src + (o * size + idx[i]) * (int64_t)row_bytes,
               row_bytes);
    }
}

void kd_cpu_scatter_rows(kd_dtype dt, void *gx, const void *g, const int64_t *idx, int64_t outer,
                         int64_t size, int64_t k, int64_t inner)
{
    if (dt == KD_F32)
        scatter_rows_f32(gx, g, idx, outer, size, k, inner);
    else
        scatter_rows_f64(gx, g, idx, outer, size, k, inner);
}

void kd_cpu_gather(kd_dtype dt, void *out, const void *x, const int64_t *off, int64_t n)
{
    if (dt == KD_F32)
        gather_f32(out, x, off, n);
    else
        gather_f64(out, x, off, n);
}

void kd_cpu_scatter_add(kd_dtype dt, void *gx, const void *g, const int64_t *off, int64_t n)
{
    if (dt == KD_F32)
        scatter_add_f32(gx, g, off, n);
    else
        scatter_add_f64(gx, g, off, n);
}

void kd_cpu_select(kd_dtype dt, void *out, const void *a, const uint8_t *mask, const int64_t *ms,
                   int ndim, const int64_t *shape, double value)
{
    if (dt == KD_F32)
        select_f32(out, a, mask, ms, ndim, shape, (float)value);
    else
        select_f64(out, a, mask, ms, ndim, shape, value);
}
