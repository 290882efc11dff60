/* Scaled dot-product attention kernels (cpu.h). Products go to OpenBLAS
 * one batch entry at a time (it threads each product); the softmax rows of
 * all entries run in one parallel loop. */
#include <stdbool.h>
#include <cblas.h>

#include "cpu.h"
#include "softmax_rows.h"

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

void kd_cpu_attention_forward(kd_dtype dt, const kd_attn_dims *ad, const void *q, const void *k,
                              const void *v, const void *bias, const int64_t *bias_strides,
                              double scale, void *p, void *out)
{
    int64_t ls = ad->l * ad->s, ld = ad->l * ad->d, sd = ad->s * ad->d;
    int64_t ldv = ad->l * ad->dv, sdv = ad->s * ad->dv;
    for (int64_t b = 0; b < ad->b; b++)
        gemm(dt, false, true, ad->l, ad->s, ad->d, scale, entry(dt, q, b, ld), ad->d,
             entry(dt, k, b, sd), ad->d, 0.0, entry(dt, p, b, ls), ad->s);
    if (dt == KD_F32)
        attn_softmax_f32(p, bias, bias_strides, ad);
    else
        attn_softmax_f64(p, bias, bias_strides, ad);
    for (int64_t b = 0; b < ad->b; b++)
        gemm(dt, false, false, ad->l, ad->dv, ad->s, 1.0, entry(dt, p, b, ls), ad->s,
             entry(dt, v, b, sdv), ad->dv, 0.0, entry(dt, out, b, ldv), ad->dv);
}

void kd_cpu_attention_backward(kd_dtype dt, const kd_attn_dims *ad, const void *q,
                               const void *k, const void *v, const void *p, const void *g,
                               double scale, void *ds, void *gq, void *gk, void *gv)
{
    int64_t ls = ad->l * ad->s, ld = ad->l * ad->d, sd = ad->s * ad->d;
    int64_t ldv = ad->l * ad->dv, sdv = ad->s * ad->dv;
    for (int64_t b = 0; b < ad->b; b++) {
        gemm(dt, false, true, ad->l, ad->s, ad->dv, 1.0, entry(dt, g, b, ldv), ad->dv,
             entry(dt, v, b, sdv), ad->dv, 0.0, entry(dt, ds, b, ls), ad->s);
        if (gv)
            gemm(dt, true, false, ad->s, ad->dv, ad->l, 1.0, entry(dt, p, b, ls), ad->s,
                 entry(dt, g, b, ldv), ad->dv, 0.0, entry(dt, gv, b, sdv), ad->dv);
    }
    if (dt == KD_F32)
        attn_softmax_backward_f32(ds, p, ad->b * ad->l, ad->s);
    else
        attn_softmax_backward_f64(ds, p, ad->b * ad->l, ad->s);
    for (int64_t b = 0; b < ad->b; b++) {
        if (gq)
            gemm(dt, false, false, ad->l, ad->d, ad->s, scale, entry(dt, ds, b, ls), ad->s,
                 entry(dt, k, b, sd), ad->d, 0.0, entry(dt, gq, b, ld), ad->d);
        if (gk)
            gemm(dt, true, false, ad->s, ad->d, ad->l, scale, entry(dt, ds, b, ls), ad->s,
                 entry(dt, q, b, ld), ad->d, 0.0, entry(dt, gk, b, sd), ad->d);
    }
}
