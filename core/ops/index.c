/* Indexing ops: index_select and gather (backward: scatter-add, repeated
 * indices accumulate) and masked_fill. The typed kernels are in
 * core/backend/cpu/index.c. */
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

/* Checks every index is in [0, size); the error names the op, the index,
 * where it is and the size of the dim it indexes. */
static kd_status check_indices(const char *op, const kd_tensor *index, int dim, int64_t size)
{
    const int64_t *idx = kd_tensor_data(index);
    int64_t n = kd_tensor_numel(index);
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= size)
            return kd_error(KD_ERR_INVALID,
                            "%s: index %lld (element %lld of the index) out of range for "
                            "dim %d of size %lld",
                            op, (long long)idx[i], (long long)i, dim, (long long)size);
    return KD_OK;
}

static kd_status check_index_tensor(const char *op, const kd_tensor *x, const kd_tensor *index)
{
    if (index->dtype != KD_I64)
        return kd_error(KD_ERR_INVALID, "%s: index dtype %s (i64 expected)", op,
                        kd_dtype_name(index->dtype));
    if (kd_backend_check(op, x) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (index->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only CPU tensors are supported", op);
    return KD_OK;
}

/* ------------------------------------------------------------ index_select */


static kd_status index_select_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *index = node->saved[0];
    int d = (int)node->iarg[0];
    int64_t outer = kd_shape_numel(d, x->shape), size = x->shape[d];
    int64_t inner = kd_shape_numel(x->ndim - d - 1, x->shape + d + 1);
    int64_t k = kd_tensor_numel(index);
    kd_tensor *gx = kd_tensor_zeros_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    kd_cpu_scatter_rows(x->dtype, kd_tensor_data(gx), kd_tensor_data(g), kd_tensor_data(index),
                        outer, size, k, inner);
    return kd_grad_accumulate_take(x, gx);
}

kd_tensor *kd_index_select(kd_tensor *x, int dim, kd_tensor *index)
{
    if (!x || !index)
        return NULL;
    int d;
    if (check_index_tensor("index_select", x, index) != KD_OK ||
        kd_norm_dim("index_select", x->ndim, dim, &d) != KD_OK)
        return NULL;
    if (index->ndim != 1 || x->ndim == 0) {
        char a[96], b[96];
        kd_error(KD_ERR_INVALID, "index_select: index %s into %s (a 1-D index into a tensor "
                 "with dims expected)", kd_shape_str(index, a, sizeof a),
                 kd_shape_str(x, b, sizeof b));
        return NULL;
    }
    kd_tensor *ic = kd_contiguous_raw(index);
    kd_tensor *xc = ic ? kd_contiguous_raw(x) : NULL;
    if (!xc || check_indices("index_select", ic, d, x->shape[d]) != KD_OK)
        return NULL;
    int64_t k = index->shape[0], shape[KD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = k;
    kd_tensor *out = kd_tensor_empty(x->dtype, KD_CPU, x->ndim, shape);
    if (!out)
        return NULL;
    int64_t outer = kd_shape_numel(d, x->shape), size = x->shape[d];
    int64_t inner = kd_shape_numel(x->ndim - d - 1, x->shape + d + 1);
    kd_cpu_select_rows(kd_tensor_data(out), kd_tensor_data(xc), kd_tensor_data(ic), outer, size,
                       k, inner, kd_dtype_size(x->dtype));
    kd_node *node;
    if (kd_record("index_select", index_select_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = ic;
        node->iarg[0] = d;
    }
    return out;
}

/* ------------------------------------------------------------ gather */

/* Offsets into a contiguous x (shape xshape) of every element the index
 * (contiguous, shape ishape) picks along dim. */
static void gather_offsets(int nd, const int64_t *xshape, const int64_t *ishape, int dim,
                           const int64_t *idx, int64_t *offsets)
{
    int64_t xs[KD_MAX_DIMS], pos[KD_MAX_DIMS] = {0};
    kd_contiguous_strides(nd, xshape, xs);
    int64_t inner = ishape[nd - 1], rows = kd_shape_numel(nd - 1, ishape);
    int64_t step = dim == nd - 1 ? 0 : xs[nd - 1], base = 0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *ir = idx + r * inner;
        int64_t *orow = offsets + r * inner;
        for (int64_t j = 0; j < inner; j++)
            orow[j] = base + j * step + ir[j] * xs[dim];
        for (int k = nd - 2; k >= 0; k--) {
            int64_t s = k == dim ? 0 : xs[k];
            base += s;
            if (++pos[k] < ishape[k])
                break;
            base -= ishape[k] * s;
            pos[k] = 0;
        }
    }
}


static kd_status gather_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *offsets = node->saved[0];
    kd_tensor *gx = kd_tensor_zeros_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t n = kd_tensor_numel(g);
    kd_cpu_scatter_add(x->dtype, kd_tensor_data(gx), kd_tensor_data(g), kd_tensor_data(offsets),
                       n);
    return kd_grad_accumulate_take(x, gx);
}

kd_tensor *kd_gather(kd_tensor *x, int dim, kd_tensor *index)
{
    if (!x || !index)
        return NULL;
    int d;
    if (kd_check_float("gather", x) != KD_OK ||
        check_index_tensor("gather", x, index) != KD_OK ||
        kd_norm_dim("gather", x->ndim, dim, &d) != KD_OK)
        return NULL;
    bool ok = index->ndim == x->ndim && x->ndim > 0;
    for (int k = 0; ok && k < x->ndim; k++)
        ok = k == d || index->shape[k] <= x->shape[k];
    if (!ok) {
        char a[96], b[96];
        kd_error(KD_ERR_INVALID, "gather: index %s into %s along dim %d (same dims, no larger "
                 "than the input off dim)", kd_shape_str(index, a, sizeof a),
                 kd_shape_str(x, b, sizeof b), dim);
        return NULL;
    }
    kd_tensor *ic = kd_contiguous_raw(index);
    kd_tensor *xc = ic ? kd_contiguous_raw(x) : NULL;
    if (!xc || check_indices("gather", ic, d, x->shape[d]) != KD_OK)
        return NULL;
    kd_tensor *out = kd_tensor_empty(x->dtype, KD_CPU, index->ndim, index->shape);
    kd_tensor *offsets = out ? kd_tensor_empty(KD_I64, KD_CPU, index->ndim, index->shape) : NULL;
    if (!offsets)
        return NULL;
    int64_t n = kd_tensor_numel(out);
    if (n > 0)
        gather_offsets(x->ndim, x->shape, index->shape, d, kd_tensor_data(ic),
                       kd_tensor_data(offsets));
    kd_cpu_gather(x->dtype, kd_tensor_data(out), kd_tensor_data(xc), kd_tensor_data(offsets), n);
    kd_node *node;
    if (kd_record("gather", gather_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        node->saved[0] = offsets;
    return out;
}

/* ------------------------------------------------------------ masked_fill */


/* a with value where mask != 0, not recorded; a float, mask U8
 * broadcastable to a. */
static kd_tensor *select_raw(kd_tensor *a, kd_tensor *mask, double value)
{
    kd_tensor *ac = kd_contiguous_raw(a);
    kd_tensor *out = ac ? kd_tensor_empty_like(a) : NULL;
    if (!out)
        return NULL;
    int64_t ms[KD_MAX_DIMS];
    kd_broadcast_strides(mask, a->ndim, a->shape, ms);
    kd_cpu_select(a->dtype, kd_tensor_data(out), kd_tensor_data(ac), kd_tensor_data(mask), ms,
                  a->ndim, a->shape, value);
    return out;
}

static kd_status masked_fill_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *gx = select_raw(g, node->inputs[1], 0.0);
    return gx ? kd_grad_accumulate_take(node->inputs[0], gx) : KD_ERR_NOMEM;
}

kd_tensor *kd_masked_fill(kd_tensor *x, kd_tensor *mask, double value)
{
    if (!x || !mask)
        return NULL;
    if (kd_check_float("masked_fill", x) != KD_OK)
        return NULL;
    if (mask->dtype != KD_U8) {
        kd_error(KD_ERR_INVALID, "masked_fill: mask dtype %s (u8 expected)",
                 kd_dtype_name(mask->dtype));
        return NULL;
    }
    if (kd_backend_check("masked_fill", x) != KD_OK)
        return NULL;
    if (mask->device != KD_CPU) {
        kd_error(KD_ERR_UNSUPPORTED, "masked_fill: only CPU tensors are supported");
        return NULL;
    }
    int nd;
    int64_t shape[KD_MAX_DIMS];
    if (kd_broadcast_shape("masked_fill", x, mask, &nd, shape) != KD_OK)
        return NULL;
    if (nd != x->ndim || memcmp(shape, x->shape, (size_t)nd * sizeof *shape) != 0) {
        char a[96], b[96];
        kd_error(KD_ERR_INVALID, "masked_fill: mask %s does not broadcast to the input %s",
                 kd_shape_str(mask, a, sizeof a), kd_shape_str(x, b, sizeof b));
        return NULL;
    }
    kd_tensor *out = select_raw(x, mask, value);
    kd_tensor *inputs[2] = {x, mask};
    kd_node *node;
    if (!out || kd_record("masked_fill", masked_fill_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    return out;
}
