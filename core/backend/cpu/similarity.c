/* Cosine similarity and cdist kernels (cpu.h). */
#include <stdbool.h>
#include <cblas.h>
#include <math.h>

#include "cpu.h"

#define PAR_MIN 16384 /* elements below which a kernel stays on one thread */
#define TILE 128      /* inner elements a thread handles at once */

#define T float
#define FN(name) name##_f32
#include "similarity_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "similarity_kernels.h"
#undef T
#undef FN

void kd_cpu_cosine_forward(kd_dtype dt, const void *a, const void *b, void *out, double *inv,
                           int64_t outer, int64_t reduce, int64_t inner, double eps)
{
    if (dt == KD_F32)
        cosine_forward_f32(a, b, out, inv, outer, reduce, inner, eps);
    else
        cosine_forward_f64(a, b, out, inv, outer, reduce, inner, eps);
}

void kd_cpu_cosine_backward(kd_dtype dt, const void *a, const void *b, const void *cos,
                            const double *inv, const void *g, void *ga, void *gb, int64_t outer,
                            int64_t reduce, int64_t inner)
{
    if (dt == KD_F32)
        cosine_backward_f32(a, b, cos, inv, g, ga, gb, outer, reduce, inner);
    else
        cosine_backward_f64(a, b, cos, inv, g, ga, gb, outer, reduce, inner);
}

void kd_cpu_cdist_forward(kd_dtype dt, const void *a, const void *b, void *out, int64_t n,
                          int64_t m, int64_t d)
{
    if (dt == KD_F32)
        cdist_forward_f32(a, b, out, n, m, d);
    else
        cdist_forward_f64(a, b, out, n, m, d);
}

void kd_cpu_cdist_weights(kd_dtype dt, const void *g, const void *dist, void *w, void *rowsum,
                          void *colsum, int64_t n, int64_t m)
{
    if (dt == KD_F32)
        cdist_weights_f32(g, dist, w, rowsum, colsum, n, m);
    else
        cdist_weights_f64(g, dist, w, rowsum, colsum, n, m);
}

/* ga = rowsum a - W b is a GEMM [n, m] x [m, d]; gb = colsum b - W^T a is
 * [m, n] x [n, d] through the transposed W. */
void kd_cpu_cdist_input_grad(kd_dtype dt, bool for_b, const void *w, const void *a,
                             const void *b, const void *sums, void *out, int64_t n, int64_t m,
                             int64_t d)
{
    CBLAS_TRANSPOSE tw = for_b ? CblasTrans : CblasNoTrans;
    int64_t rows = for_b ? m : n, inner = for_b ? n : m;
    const void *other = for_b ? a : b, *x = for_b ? b : a;
    if (dt == KD_F32) {
        cblas_sgemm(CblasRowMajor, tw, CblasNoTrans, (int)rows, (int)d, (int)inner, 1.0f, w,
                    (int)m, other, (int)d, 0.0f, out, (int)d);
        cdist_finish_f32(out, x, sums, rows, d);
    } else {
        cblas_dgemm(CblasRowMajor, tw, CblasNoTrans, (int)rows, (int)d, (int)inner, 1.0, w,
                    (int)m, other, (int)d, 0.0, out, (int)d);
        cdist_finish_f64(out, x, sums, rows, d);
    }
}
