/* Matrix product kernels (cpu.h) on OpenBLAS. */
#include <stdbool.h>
#include <string.h>

#include <cblas.h>

#include "cpu.h"

void kd_cpu_gemm(kd_dtype dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 double alpha, const void *a, int64_t lda, const void *b, int64_t ldb,
                 double beta, void *c, int64_t ldc)
{
    CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    if (dt == KD_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, (float)alpha, a, (int)lda,
                    b, (int)ldb, (float)beta, c, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha, a, (int)lda, b,
                    (int)ldb, beta, c, (int)ldc);
}

void kd_cpu_column_sums(kd_dtype dt, void *out, const void *g, int64_t rows, int64_t cols)
{
    if (dt == KD_F32) {
        float *o = out;
        const float *s = g;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++)
                o[j] += s[r * cols + j];
    } else {
        double *o = out;
        const double *s = g;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++)
                o[j] += s[r * cols + j];
    }
}

void kd_cpu_repeat_row(void *out, const void *row, int64_t rows, size_t row_bytes)
{
    char *dst = out;
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * row_bytes, row, row_bytes);
}
