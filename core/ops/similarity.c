/* Cosine similarity along a dim (broadcasting) and pairwise Euclidean
 * distances (cdist). The kernels are in core/backend/cpu/similarity.c. */
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

/* ------------------------------------------------------------ cosine */

/* x broadcast to shape[ndim], contiguous (x itself when nothing changes). */
static kd_tensor *broadcast_to(kd_tensor *x, int ndim, const int64_t *shape)
{
    if (x->ndim == ndim && memcmp(x->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return kd_contiguous_raw(x);
    kd_tensor *view = kd_tensor_alias(x);
    kd_tensor *out = view ? kd_tensor_empty(x->dtype, x->device, ndim, shape) : NULL;
    if (!out)
        return NULL;
    kd_broadcast_strides(x, ndim, shape, view->stride);
    view->ndim = ndim;
    memcpy(view->shape, shape, (size_t)ndim * sizeof *shape);
    return kd_tensor_copy_(out, view) == KD_OK ? out : NULL;
}

static kd_status cosine_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *a = node->inputs[0], *b = node->inputs[1];
    kd_tensor *ae = node->saved[0], *be = node->saved[1], *inv = node->saved[2];
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *ga = a->requires_grad ? kd_tensor_empty_like(ae) : NULL;
    kd_tensor *gb = b->requires_grad ? kd_tensor_empty_like(be) : NULL;
    if (!gc || (a->requires_grad && !ga) || (b->requires_grad && !gb))
        return KD_ERR_NOMEM;
    int64_t outer = node->iarg[0], reduce = node->iarg[1], inner = node->iarg[2];
    kd_cpu_cosine_backward(ae->dtype, kd_tensor_data(ae), kd_tensor_data(be),
                           kd_tensor_data(node->saved[3]), kd_tensor_data(inv),
                           kd_tensor_data(gc), ga ? kd_tensor_data(ga) : NULL,
                           gb ? kd_tensor_data(gb) : NULL, outer, reduce, inner);
    if (ga) {
        kd_tensor *r = kd_sum_to_shape(ga, a->ndim, a->shape);
        kd_status st = r ? kd_grad_accumulate_take(a, r) : KD_ERR_NOMEM;
        if (st != KD_OK)
            return st;
    }
    if (gb) {
        kd_tensor *r = kd_sum_to_shape(gb, b->ndim, b->shape);
        return r ? kd_grad_accumulate_take(b, r) : KD_ERR_NOMEM;
    }
    return KD_OK;
}

kd_tensor *kd_cosine_similarity(kd_tensor *a, kd_tensor *b, int dim, double eps)
{
    const char *op = "cosine_similarity";
    int ndim, d;
    int64_t shape[KD_MAX_DIMS];
    if (!a || !b || kd_check_float(op, a) != KD_OK || kd_check_float(op, b) != KD_OK ||
        kd_check_same(op, a, b) != KD_OK ||
        kd_broadcast_shape(op, a, b, &ndim, shape) != KD_OK ||
        kd_norm_dim(op, ndim, dim, &d) != KD_OK)
        return NULL;
    if (kd_backend_check(op, a) != KD_OK)
        return NULL;
    if (ndim == 0) {
        kd_error(KD_ERR_INVALID, "%s: inputs have no dims", op);
        return NULL;
    }
    int64_t outer = kd_shape_numel(d, shape), reduce = shape[d];
    int64_t inner = kd_shape_numel(ndim - d - 1, shape + d + 1);
    int64_t out_shape[KD_MAX_DIMS];
    for (int i = 0, k = 0; i < ndim; i++)
        if (i != d)
            out_shape[k++] = shape[i];
    kd_tensor *ae = broadcast_to(a, ndim, shape), *be = broadcast_to(b, ndim, shape);
    kd_tensor *out = ae && be ? kd_tensor_empty(a->dtype, KD_CPU, ndim - 1, out_shape) : NULL;
    int64_t inv_shape[2] = {2, outer * inner};
    kd_tensor *inv = out ? kd_tensor_empty(KD_F64, KD_CPU, 2, inv_shape) : NULL;
    if (!inv)
        return NULL;
    kd_cpu_cosine_forward(a->dtype, kd_tensor_data(ae), kd_tensor_data(be), kd_tensor_data(out),
                          kd_tensor_data(inv), outer, reduce, inner, eps);
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record(op, cosine_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = ae;
        node->saved[1] = be;
        node->saved[2] = inv;
        node->saved[3] = out;
        node->iarg[0] = outer;
        node->iarg[1] = reduce;
        node->iarg[2] = inner;
    }
    return out;
}

/* ------------------------------------------------------------ cdist */

/* ga_i = sum_j w_ij (a_i - b_j) = rowsum_i a_i - (W b)_i;
 * gb_j = sum_i w_ij (b_j - a_i) = colsum_j b_j - (W^T a)_j. */
static kd_status cdist_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *ain = node->inputs[0], *bin = node->inputs[1];
    kd_tensor *a = node->saved[0], *b = node->saved[1], *dist = node->saved[2];
    int64_t n = a->shape[0], m = b->shape[0], d = a->shape[1];
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *w = gc ? kd_tensor_empty_like(dist) : NULL;
    kd_tensor *rs = w ? kd_tensor_empty(a->dtype, KD_CPU, 1, &n) : NULL;
    kd_tensor *cs = rs ? kd_tensor_empty(a->dtype, KD_CPU, 1, &m) : NULL;
    kd_tensor *ga = cs ? kd_tensor_empty_like(a) : NULL;
    kd_tensor *gb = ga ? kd_tensor_empty_like(b) : NULL;
    if (!gb)
        return KD_ERR_NOMEM;
    kd_cpu_cdist_weights(a->dtype, kd_tensor_data(gc), kd_tensor_data(dist), kd_tensor_data(w),
                         kd_tensor_data(rs), kd_tensor_data(cs), n, m);
    if (ain->requires_grad && n * d > 0) {
        kd_cpu_cdist_input_grad(a->dtype, false, kd_tensor_data(w), kd_tensor_data(a),
                                kd_tensor_data(b), kd_tensor_data(rs), kd_tensor_data(ga), n, m,
                                d);
        kd_status st = kd_grad_accumulate_take(ain, ga);
        if (st != KD_OK)
            return st;
    }
    if (bin->requires_grad && m * d > 0) {
        kd_cpu_cdist_input_grad(a->dtype, true, kd_tensor_data(w), kd_tensor_data(a),
                                kd_tensor_data(b), kd_tensor_data(cs), kd_tensor_data(gb), n, m,
                                d);
        return kd_grad_accumulate_take(bin, gb);
    }
    return KD_OK;
}

kd_tensor *kd_cdist(kd_tensor *a, kd_tensor *b)
{
    const char *op = "cdist";
    if (!a || !b || kd_check_float(op, a) != KD_OK || kd_check_float(op, b) != KD_OK ||
        kd_check_same(op, a, b) != KD_OK)
        return NULL;
    if (kd_backend_check(op, a) != KD_OK)
        return NULL;
    if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[1]) {
        char x[96], y[96];
        kd_error(KD_ERR_INVALID, "%s: a %s and b %s (expected [N, D] and [M, D])", op,
                 kd_shape_str(a, x, sizeof x), kd_shape_str(b, y, sizeof y));
        return NULL;
    }
    int64_t n = a->shape[0], m = b->shape[0], d = a->shape[1];
    kd_tensor *ac = kd_contiguous_raw(a), *bc = kd_contiguous_raw(b);
    int64_t shape[2] = {n, m};
    kd_tensor *out = ac && bc ? kd_tensor_empty(a->dtype, KD_CPU, 2, shape) : NULL;
    if (!out)
        return NULL;
    kd_cpu_cdist_forward(a->dtype, kd_tensor_data(ac), kd_tensor_data(bc), kd_tensor_data(out), n,
                         m, d);
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record(op, cdist_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = ac;
        node->saved[1] = bc;
        node->saved[2] = out;
    }
    return out;
}
