/* Binary elementwise ops with NumPy broadcasting: add, sub, mul, div. The
 * kernels are in core/backend/cpu/elementwise.c and core/backend/cuda/. */
#include "../backend/cpu/cpu.h"
#include "../internal.h"
#ifdef KD_HAVE_CUDA
#include "../backend/cuda/cuda.h"
#endif

static const char *const binary_names[] = {"add", "sub", "mul", "div"};

/* out = a op b without recording; a and b same dtype and device. */
static kd_tensor *binary_raw(kd_binary_op op, kd_tensor *a, kd_tensor *b)
{
    const char *name = binary_names[op];
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    if (kd_check_float(name, a) != KD_OK || kd_check_float(name, b) != KD_OK ||
        kd_check_same(name, a, b) != KD_OK ||
        kd_broadcast_shape(name, a, b, &ndim, shape) != KD_OK)
        return NULL;
    kd_tensor *ac = kd_contiguous_raw(a), *bc = kd_contiguous_raw(b);
    kd_tensor *out = ac && bc ? kd_tensor_empty(a->dtype, a->device, ndim, shape) : NULL;
    if (!out)
        return NULL;
    if (a->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        return kd_cuda_binary(op, out, ac, bc) == KD_OK ? out : NULL;
#else
        kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", name);
        return NULL;
#endif
    }
    if (kd_tensor_same_shape(ac, bc)) {
        kd_cpu_binary_same(a->dtype, op, kd_tensor_data(out), kd_tensor_data(ac),
                           kd_tensor_data(bc), kd_tensor_numel(out));
        return out;
    }
    int64_t sa[KD_MAX_DIMS], sb[KD_MAX_DIMS];
    kd_broadcast_strides(ac, ndim, shape, sa);
    kd_broadcast_strides(bc, ndim, shape, sb);
    kd_cpu_binary_bcast(a->dtype, op, kd_tensor_data(out), kd_tensor_data(ac), sa,
                        kd_tensor_data(bc), sb, ndim, shape);
    return out;
}

/* Backward passes are written with the forward ops: grad mode is off while
 * they run, so nothing is recorded. */
static kd_status binary_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *a = node->inputs[0], *b = node->inputs[1];
    kd_binary_op op = (kd_binary_op)node->iarg[0];
    kd_tensor *ga = NULL, *gb = NULL;
    switch (op) {
    case KD_BIN_ADD:
        ga = g;
        gb = g;
        break;
    case KD_BIN_SUB:
        ga = g;
        gb = b->requires_grad ? kd_neg(g) : NULL;
        break;
    case KD_BIN_MUL:
        ga = a->requires_grad ? binary_raw(KD_BIN_MUL, g, b) : NULL;
        gb = b->requires_grad ? binary_raw(KD_BIN_MUL, g, a) : NULL;
        break;
    case KD_BIN_DIV:
        ga = binary_raw(KD_BIN_DIV, g, b); /* g / b, also used for gb */
        if (b->requires_grad) /* -g a / b^2 = -(g / b) * (a / b) */
            gb = kd_neg(binary_raw(KD_BIN_MUL, ga, binary_raw(KD_BIN_DIV, a, b)));
        break;
    }
    if (a->requires_grad) {
        kd_tensor *r = kd_sum_to_shape(ga, a->ndim, a->shape);
        kd_status st = r ? kd_grad_accumulate(a, r) : KD_ERR_NOMEM;
        if (st != KD_OK)
            return st;
    }
    if (b->requires_grad) {
        kd_tensor *r = kd_sum_to_shape(gb, b->ndim, b->shape);
        return r ? kd_grad_accumulate(b, r) : KD_ERR_NOMEM;
    }
    return KD_OK;
}

static kd_tensor *binary(kd_binary_op op, kd_tensor *a, kd_tensor *b)
{
    if (!a || !b)
        return NULL;
    kd_tensor *out = binary_raw(op, a, b);
    if (!out)
        return NULL;
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record(binary_names[op], binary_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node)
        node->iarg[0] = op;
    return out;
}

kd_tensor *kd_add(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_ADD, a, b); }
kd_tensor *kd_sub(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_SUB, a, b); }
kd_tensor *kd_mul(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_MUL, a, b); }
kd_tensor *kd_div(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_DIV, a, b); }
