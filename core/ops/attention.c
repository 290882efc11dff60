/* Fused scaled dot-product attention: softmax(q k^T * scale + bias) v.
 *
 * Products go to OpenBLAS one batch entry at a time (it threads each
 * product); the softmax rows of all entries run in one parallel loop. Only
 * the probabilities P are kept for backward:
 *   dV = P^T g,  dP = g v^T,  dS = P (dP - rowsum(dP P)),
 *   dQ = scale dS k,  dK = scale dS^T q,  dbias = dS summed to bias's shape. */
#include <cblas.h>
#include <string.h>

#include "../internal.h"
#include "../backend/cpu/softmax_rows.h"

#define PAR_MIN 16384 /* elements below which a loop stays on one thread */

typedef struct attn_dims {
    int nbatch;                  /* batch dims before [L, D] */
    int64_t batch[KD_MAX_DIMS];  /* their sizes */
    int64_t b, l, s, d, dv;      /* b = product of batch sizes */
} attn_dims;

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
static int64_t bias_row_offset(const attn_dims *ad, const int64_t *st, int64_t bi, int64_t li)
{
    int64_t off = li * st[ad->nbatch];
    for (int k = ad->nbatch - 1; k >= 0; k--) {
        off += (bi % ad->batch[k]) * st[k];
        bi /= ad->batch[k];
    }
    return off;
}

#define DEFINE_ATTENTION_KERNELS(T, S)                                           \
    /* p holds scores for all rows; adds bias, then softmax per row. */        \
    static void attn_softmax_##S(T *p, const T *bias, const int64_t *bst,       \
                                 const attn_dims *ad)                           \
    {                                                                           \
        int64_t rows = ad->b * ad->l, s = ad->s;                                \
        _Pragma("omp parallel for if (rows * s > PAR_MIN) schedule(static)")    \
        for (int64_t row = 0; row < rows; row++) {                              \
            T *pr = p + row * s;                                                \
            if (bias) {                                                         \
                const T *br = bias + bias_row_offset(ad, bst, row / ad->l,      \
                                                     row % ad->l);              \
                int64_t cs = bst[ad->nbatch + 1];                               \
                for (int64_t j = 0; j < s; j++)                                 \
                    pr[j] += br[j * cs];                                        \
            }                                                                   \
            kd_row_softmax_##S(pr, pr, s);                                      \
        }                                                                       \
    }                                                                           \
    /* dp (holding dP) becomes dS = P (dP - rowsum(dP P)). */                  \
    static void attn_softmax_backward_##S(T *dp, const T *p, int64_t rows,      \
                                          int64_t s)                            \
    {                                                                           \
        _Pragma("omp parallel for if (rows * s > PAR_MIN) schedule(static)")    \
        for (int64_t row = 0; row < rows; row++) {                              \
            T *dr = dp + row * s;                                               \
            const T *pr = p + row * s;                                          \
            double dot = 0;                                                     \
            _Pragma("omp simd reduction(+ : dot)")                              \
            for (int64_t j = 0; j < s; j++)                                     \
                dot += dr[j] * pr[j];                                           \
            T dt = (T)dot;                                                      \
            _Pragma("omp simd")                                                 \
            for (int64_t j = 0; j < s; j++)                                     \
                dr[j] = pr[j] * (dr[j] - dt);                                   \
        }                                                                       \
    }

DEFINE_ATTENTION_KERNELS(float, f32)
DEFINE_ATTENTION_KERNELS(double, f64)

static void *at(const kd_tensor *t, int64_t elements)
{
    return (char *)kd_tensor_data(t) + elements * (int64_t)kd_dtype_size(t->dtype);
}

static attn_dims dims_of(const kd_tensor *q, const kd_tensor *k, const kd_tensor *v)
{
    attn_dims ad = {0};
    ad.nbatch = q->ndim - 2;
    memcpy(ad.batch, q->shape, (size_t)ad.nbatch * sizeof *ad.batch);
    ad.b = kd_shape_numel(ad.nbatch, q->shape);
    ad.l = q->shape[q->ndim - 2];
    ad.d = q->shape[q->ndim - 1];
    ad.s = k->shape[k->ndim - 2];
    ad.dv = v->shape[v->ndim - 1];
    return ad;
}

static kd_status attention_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *qin = node->inputs[0], *kin = node->inputs[1], *vin = node->inputs[2];
    kd_tensor *bin = node->inputs[3];
    kd_tensor *q = node->saved[0], *k = node->saved[1], *v = node->saved[2];
    kd_tensor *p = node->saved[3];
    double scale = node->farg[0];
    attn_dims ad = dims_of(q, k, v);
    kd_dtype dt = q->dtype;
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *ds = gc ? kd_tensor_empty_like(p) : NULL;
    kd_tensor *gq = ds ? kd_tensor_empty_like(q) : NULL;
    kd_tensor *gk = gq ? kd_tensor_empty_like(k) : NULL;
    kd_tensor *gv = gk ? kd_tensor_empty_like(v) : NULL;
    if (!gv)
        return KD_ERR_NOMEM;
    int64_t ls = ad.l * ad.s, ld = ad.l * ad.d, sd = ad.s * ad.d;
    int64_t ldv = ad.l * ad.dv, sdv = ad.s * ad.dv;
    for (int64_t b = 0; b < ad.b; b++) {
        gemm(dt, false, true, ad.l, ad.s, ad.dv, 1.0, at(gc, b * ldv), ad.dv, at(v, b * sdv),
             ad.dv, 0.0, at(ds, b * ls), ad.s);
        if (vin->requires_grad)
            gemm(dt, true, false, ad.s, ad.dv, ad.l, 1.0, at(p, b * ls), ad.s,
                 at(gc, b * ldv), ad.dv, 0.0, at(gv, b * sdv), ad.dv);
    }
    if (dt == KD_F32)
        attn_softmax_backward_f32(kd_tensor_data(ds), kd_tensor_data(p), ad.b * ad.l, ad.s);
    else
        attn_softmax_backward_f64(kd_tensor_data(ds), kd_tensor_data(p), ad.b * ad.l, ad.s);
    for (int64_t b = 0; b < ad.b; b++) {
        if (qin->requires_grad)
            gemm(dt, false, false, ad.l, ad.d, ad.s, scale, at(ds, b * ls), ad.s,
                 at(k, b * sd), ad.d, 0.0, at(gq, b * ld), ad.d);
        if (kin->requires_grad)
            gemm(dt, true, false, ad.s, ad.d, ad.l, scale, at(ds, b * ls), ad.s,
                 at(q, b * ld), ad.d, 0.0, at(gk, b * sd), ad.d);
    }
    kd_status st = KD_OK;
    if (qin->requires_grad)
        st = kd_grad_accumulate_take(qin, gq);
    if (st == KD_OK && kin->requires_grad)
        st = kd_grad_accumulate_take(kin, gk);
    if (st == KD_OK && vin->requires_grad)
        st = kd_grad_accumulate_take(vin, gv);
    if (st == KD_OK && bin && bin->requires_grad) {
        kd_tensor *r = kd_sum_to_shape(ds, bin->ndim, bin->shape);
        st = r ? kd_grad_accumulate_take(bin, r) : KD_ERR_NOMEM;
    }
    return st;
}

static kd_status check_inputs(const char *op, kd_tensor *q, kd_tensor *k, kd_tensor *v,
                              kd_tensor *bias)
{
    kd_tensor *all[4] = {q, k, v, bias};
    for (int i = 0; i < 4; i++) {
        if (!all[i])
            continue;
        if (kd_check_float(op, all[i]) != KD_OK || kd_check_same(op, q, all[i]) != KD_OK)
            return KD_ERR_INVALID;
    }
    if (q->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: cuda tensors are not supported", op);
    char a[96], b[96], c[96];
    bool ok = q->ndim >= 2 && k->ndim == q->ndim && v->ndim == q->ndim &&
              q->shape[q->ndim - 1] == k->shape[k->ndim - 1] &&
              k->shape[k->ndim - 2] == v->shape[v->ndim - 2] &&
              kd_tensor_numel(q) > 0 && kd_tensor_numel(k) > 0 && kd_tensor_numel(v) > 0;
    for (int i = 0; ok && i < q->ndim - 2; i++)
        ok = q->shape[i] == k->shape[i] && q->shape[i] == v->shape[i];
    if (!ok)
        return kd_error(KD_ERR_INVALID,
                        "%s: q %s, k %s, v %s (expected [..., L, D], [..., S, D], "
                        "[..., S, Dv] with equal batch dims, none empty)",
                        op, kd_shape_str(q, a, sizeof a), kd_shape_str(k, b, sizeof b),
                        kd_shape_str(v, c, sizeof c));
    if (bias) {
        bool fits = bias->ndim <= q->ndim;
        for (int i = 0; fits && i < bias->ndim; i++) {
            int j = q->ndim - bias->ndim + i;
            int64_t want = j == q->ndim - 1 ? k->shape[k->ndim - 2] : q->shape[j];
            fits = bias->shape[i] == 1 || bias->shape[i] == want;
        }
        if (!fits)
            return kd_error(KD_ERR_INVALID,
                            "%s: bias %s does not broadcast to the scores of q %s and k %s",
                            op, kd_shape_str(bias, a, sizeof a), kd_shape_str(q, b, sizeof b),
                            kd_shape_str(k, c, sizeof c));
    }
    return KD_OK;
}

kd_tensor *kd_scaled_dot_product_attention(kd_tensor *q, kd_tensor *k, kd_tensor *v,
                                           kd_tensor *bias, double scale)
{
    const char *op = "scaled_dot_product_attention";
    if (!q || !k || !v || check_inputs(op, q, k, v, bias) != KD_OK)
        return NULL;
    attn_dims ad = dims_of(q, k, v);
    kd_dtype dt = q->dtype;
    kd_tensor *qc = kd_contiguous_raw(q), *kc = kd_contiguous_raw(k);
    kd_tensor *vc = kd_contiguous_raw(v), *bc = bias ? kd_contiguous_raw(bias) : NULL;
    if (!qc || !kc || !vc || (bias && !bc))
        return NULL;
    int64_t score_shape[KD_MAX_DIMS], out_shape[KD_MAX_DIMS];
    memcpy(score_shape, q->shape, sizeof score_shape);
    memcpy(out_shape, q->shape, sizeof out_shape);
    score_shape[q->ndim - 1] = ad.s;
    out_shape[q->ndim - 1] = ad.dv;
    kd_tensor *p = kd_tensor_empty(dt, KD_CPU, q->ndim, score_shape);
    kd_tensor *out = p ? kd_tensor_empty(dt, KD_CPU, q->ndim, out_shape) : NULL;
    if (!out)
        return NULL;
    int64_t bst[KD_MAX_DIMS];
    if (bc)
        kd_broadcast_strides(bc, q->ndim, score_shape, bst);
    int64_t ls = ad.l * ad.s, ld = ad.l * ad.d, sd = ad.s * ad.d;
    int64_t ldv = ad.l * ad.dv, sdv = ad.s * ad.dv;
    for (int64_t b = 0; b < ad.b; b++)
        gemm(dt, false, true, ad.l, ad.s, ad.d, scale, at(qc, b * ld), ad.d, at(kc, b * sd),
             ad.d, 0.0, at(p, b * ls), ad.s);
    if (dt == KD_F32)
        attn_softmax_f32(kd_tensor_data(p), bc ? kd_tensor_data(bc) : NULL, bst, &ad);
    else
        attn_softmax_f64(kd_tensor_data(p), bc ? kd_tensor_data(bc) : NULL, bst, &ad);
    for (int64_t b = 0; b < ad.b; b++)
        gemm(dt, false, false, ad.l, ad.dv, ad.s, 1.0, at(p, b * ls), ad.s, at(vc, b * sdv),
             ad.dv, 0.0, at(out, b * ldv), ad.dv);
    kd_tensor *inputs[4] = {q, k, v, bias};
    kd_node *node;
    if (kd_record(op, attention_backward, out, bias ? 4 : 3, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = qc;
        node->saved[1] = kc;
        node->saved[2] = vc;
        node->saved[3] = p;
        node->farg[0] = scale;
    }
    return out;
}
