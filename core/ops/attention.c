/* Fused scaled dot-product attention: softmax(q k^T * scale + bias) v.
 *
 * Only the probabilities P are kept for backward:
 *   dV = P^T g,  dP = g v^T,  dS = P (dP - rowsum(dP P)),
 *   dQ = scale dS k,  dK = scale dS^T q,  dbias = dS summed to bias's shape.
 * The kernels are in core/backend/cpu/attention.c. */
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

static kd_attn_dims dims_of(const kd_tensor *q, const kd_tensor *k, const kd_tensor *v)
{
    kd_attn_dims ad = {0};
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
    kd_attn_dims ad = dims_of(q, k, v);
    kd_dtype dt = q->dtype;
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *ds = gc ? kd_tensor_empty_like(p) : NULL;
    kd_tensor *gq = ds ? kd_tensor_empty_like(q) : NULL;
    kd_tensor *gk = gq ? kd_tensor_empty_like(k) : NULL;
    kd_tensor *gv = gk ? kd_tensor_empty_like(v) : NULL;
    if (!gv)
        return KD_ERR_NOMEM;
    kd_status st = kd_cpu_attention_backward(
        dt, &ad, kd_tensor_data(q), kd_tensor_data(k), kd_tensor_data(v), kd_tensor_data(p),
        kd_tensor_data(gc), scale, kd_tensor_data(ds),
        qin->requires_grad ? kd_tensor_data(gq) : NULL,
        kin->requires_grad ? kd_tensor_data(gk) : NULL,
        vin->requires_grad ? kd_tensor_data(gv) : NULL);
    if (st == KD_OK && qin->requires_grad)
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
    if (kd_backend_check(op, q) != KD_OK)
        return KD_ERR_UNSUPPORTED;
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
    kd_attn_dims ad = dims_of(q, k, v);
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
    if (kd_cpu_attention_forward(dt, &ad, kd_tensor_data(qc), kd_tensor_data(kc),
                                 kd_tensor_data(vc), bc ? kd_tensor_data(bc) : NULL, bst, scale,
                                 kd_tensor_data(p), kd_tensor_data(out)) != KD_OK)
        return NULL;
    kd_macs_add(ad.b * ad.l * ad.s * (ad.d + ad.dv));
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
