/* softmax and log_softmax over any dim, on the [outer, reduce, inner] view;
 * the kernels are in core/backend/cpu/softmax.c. Backward uses only the
 * saved output. */
#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

static kd_status softmax_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *y = node->saved[0];
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *gx = gc ? kd_tensor_empty_like(y) : NULL;
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t outer = node->iarg[0], reduce = node->iarg[1], inner = node->iarg[2];
    bool log_out = node->iarg[3];
    kd_cpu_softmax_backward(y->dtype, kd_tensor_data(y), kd_tensor_data(gc), kd_tensor_data(gx),
                            outer, reduce, inner, log_out);
    return kd_grad_accumulate_take(node->inputs[0], gx);
}

static kd_tensor *softmax_impl(const char *op, kd_tensor *x, int dim, bool log_out)
{
    int d;
    if (!x || kd_check_float(op, x) != KD_OK || kd_norm_dim(op, x->ndim, dim, &d) != KD_OK)
        return NULL;
    if (kd_backend_check(op, x) != KD_OK)
        return NULL;
    int64_t outer = kd_shape_numel(d, x->shape);
    int64_t reduce = x->ndim ? x->shape[d] : 1;
    int64_t inner = x->ndim ? kd_shape_numel(x->ndim - d - 1, x->shape + d + 1) : 1;
    kd_tensor *xc = kd_contiguous_raw(x);
    kd_tensor *y = xc ? kd_tensor_empty_like(x) : NULL;
    if (!y)
        return NULL;
    if (kd_tensor_numel(x) > 0)
        kd_cpu_softmax_forward(x->dtype, kd_tensor_data(xc), kd_tensor_data(y), outer, reduce,
                               inner, log_out);
    kd_node *node;
    if (kd_record(op, softmax_backward, y, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = y;
        node->iarg[0] = outer;
        node->iarg[1] = reduce;
        node->iarg[2] = inner;
        node->iarg[3] = log_out;
    }
    return y;
}

kd_tensor *kd_softmax(kd_tensor *x, int dim) { return softmax_impl("softmax", x, dim, false); }

kd_tensor *kd_log_softmax(kd_tensor *x, int dim)
{
    return softmax_impl("log_softmax", x, dim, true);
}
