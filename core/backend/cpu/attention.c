/* Scaled dot-product attention kernels (cpu.h). In f32 each product runs
 * over all batch entries in one oneDNN call (many small matrices: windows
 * x heads); f64, or a build without oneDNN, calls BLAS once per entry. The
 * softmax rows of all entries run in one parallel loop. */
#include <stdbool.h>
#include <cblas.h>

#include "cpu.h"
#include "softmax_rows.h"
#ifdef KD_HAVE_DNNL
#include "matmul_dnnl.h"
#endif

#define PAR_MIN 16384 /* elements below which a loop stays on one thread */

/* Row-major C = alpha op(A) op(B) + beta C; ld* are row lengths. */
static void gemm(kd_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                 double alpha, const void *a, int64_t lda, const void *b, int64_t ldb,
                 double beta, void *c, int64_t ldc)
{
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
    if (dt == KD_F32)
        cblas_sgemm(CblasRowMajor, opa, opb, (int)m, (int)n, (int)k, (float)alpha, a,
                    (int)lda, b, (int)ldb, (float)beta, c, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, opa, opb, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                    b, (int)ldb, beta, c, (int)ldc);
}

/* Offset of row (batch entry bi, query li) of a tensor read through
 * broadcast strides st (batch dims, then L). */
static int64_t bias_row_offset(const kd_attn_dims *ad, const int64_t *st, int64_t bi, int64_t li)
{
    int64_t off = li * st[ad->nbatch];
    for (int k = ad->nbatch - 1; k >= 0; k--) {
        off += (bi % ad->batch[k]) * st[k];
        bi /= ad->batch[k];
    }
    return off;
}

/* Batch entry b of a buffer of dtype dt with `elements` per entry. */
static void *entry(kd_dtype dt, const void *base, int64_t b, int64_t elements)
{
    return (char *)base + b * elements * (int64_t)kd_dtype_size(dt);
}

/* c_i = alpha op(a_i) op(b_i) for the `batch` contiguous entries of a, b
 * and c (op(a) [m, k], op(b) [k, n], c [m, n]). */
static kd_status gemm_batched(kd_dtype dt, bool ta, bool tb, int64_t batch, int64_t m,
                              int64_t n, int64_t k, double alpha, const void *a, const void *b,
                              void *c)
{
#ifdef KD_HAVE_DNNL
    if (dt == KD_F32) {
        kd_status st = kd_dnnl_batched_gemm(ta, tb, batch, m, n, k, alpha, a, b, c);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    for (int64_t i = 0; i < batch; i++)
        gemm(dt, ta, tb, m, n, k, alpha, entry(dt, a, i, m * k), ta ? m : k,
             entry(dt, b, i, k * n), tb ? k : n, 0.0, entry(dt, c, i, m * n), n);
    return KD_OK;
}

#define T float
#define FN(name) name##_f32
#include "attention_kernels.h"
#undef T
#undef FN
#define T double
#define FN(name) name##_f64
#include "attention_kernels.h"
#undef T
#undef FN

kd_status kd_cpu_attention_forward(kd_dtype dt, const kd_attn_dims *ad, const void *q,
                                   const void *k, const void *v, const void *bias,
                                   const int64_t *bias_strides, double scale, void *p, void *out)
{
    kd_status st = gemm_batched(dt, false, true, ad->b, ad->l, ad->s, ad->d, scale, q, k, p);
    if (st != KD_OK)
        return st;
    if (dt == KD_F32)
        attn_softmax_f32(p, bias, bias_strides, ad);
    else
        attn_softmax_f64(p, bias, bias_strides, ad);
    return gemm_batched(dt, false, false, ad->b, ad->l, ad->dv, ad->s, 1.0, p, v, out);
}

kd_status kd_cpu_attention_backward(kd_dtype dt, const kd_attn_dims *ad, const void *q,
                                    const void *k, const void *v, const void *p, const void *g,
                                    double scale, void *ds, void *gq, void *gk, void *gv)
{
    kd_status st = gemm_batched(dt, false, true, ad->b, ad->l, ad->s, ad->dv, 1.0, g, v, ds);
    if (st == KD_OK && gv)
        st = gemm_batched(dt, true, false, ad->b, ad->s, ad->dv, ad->l, 1.0, p, g, gv);
    if (st != KD_OK)
        return st;
    if (dt == KD_F32)
        attn_softmax_backward_f32(ds, p, ad->b * ad->l, ad->s);
    else
        attn_softmax_backward_f64(ds, p, ad->b * ad->l, ad->s);
    if (gq)
        st = gemm_batched(dt, false, false, ad->b, ad->l, ad->d, ad->s, scale, ds, k, gq);
    if (st == KD_OK && gk)
        st = gemm_batched(dt, true, false, ad->b, ad->s, ad->d, ad->l, scale, ds, q, gk);
    return st;
}
