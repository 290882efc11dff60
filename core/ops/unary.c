/* Unary elementwise ops: math functions, activations and scalar ops. The
 * kernels are in core/backend/cpu/unary.c and core/backend/cuda/. */
#include "../backend/cpu/cpu.h"
#include "../internal.h"
#ifdef KD_HAVE_CUDA
#include "../backend/cuda/cuda.h"
#endif

static const char *const unary_names[KD_UN_COUNT] = {
    [KD_UN_NEG] = "neg", [KD_UN_EXP] = "exp", [KD_UN_LOG] = "log",
    [KD_UN_SQRT] = "sqrt", [KD_UN_ABS] = "abs", [KD_UN_TANH] = "tanh",
    [KD_UN_RELU] = "relu", [KD_UN_RELU6] = "relu6", [KD_UN_GELU] = "gelu",
    [KD_UN_GELU_TANH] = "gelu_tanh", [KD_UN_SILU] = "silu",
    [KD_UN_SIGMOID] = "sigmoid", [KD_UN_HARDSIGMOID] = "hardsigmoid",
    [KD_UN_HARDSWISH] = "hardswish", [KD_UN_CLAMP] = "clamp",
    [KD_UN_POW] = "pow", [KD_UN_ADD_SCALAR] = "add_scalar",
    [KD_UN_MUL_SCALAR] = "mul_scalar",
};

static kd_status unary_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->saved[0], *y = node->saved[1];
    kd_unary_op op = (kd_unary_op)node->iarg[0];
    double lo = node->farg[0], hi = node->farg[1];
    kd_tensor *gx = kd_tensor_empty_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    int64_t n = kd_tensor_numel(x);
    if (x->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        kd_status st = kd_cuda_unary_backward(op, gx, g, x, y, lo, hi);
        if (st != KD_OK)
            return st;
#else
        return kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA",
                        unary_names[op]);
#endif
    } else {
        kd_cpu_unary_backward(x->dtype, op, kd_tensor_data(gx), kd_tensor_data(g),
                              kd_tensor_data(x), kd_tensor_data(y), n, lo, hi);
    }
    return kd_grad_accumulate_take(node->inputs[0], gx);
}

static kd_tensor *unary(kd_unary_op op, kd_tensor *x, double lo, double hi)
{
    if (!x)
        return NULL;
    const char *name = unary_names[op];
    if (kd_check_float(name, x) != KD_OK)
        return NULL;
    kd_tensor *xc = kd_contiguous_raw(x);
    kd_tensor *out = xc ? kd_tensor_empty_like(x) : NULL;
    if (!out)
        return NULL;
    int64_t n = kd_tensor_numel(x);
    if (x->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        if (kd_cuda_unary(op, out, xc, lo, hi) != KD_OK)
            return NULL;
#else
        kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", name);
        return NULL;
#endif
    } else {
        kd_cpu_unary_forward(x->dtype, op, kd_tensor_data(out), kd_tensor_data(xc), n, lo, hi);
    }
    kd_node *node;
    if (kd_record(name, unary_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = out;
        node->iarg[0] = op;
        node->farg[0] = lo;
        node->farg[1] = hi;
    }
    return out;
}

kd_tensor *kd_neg(kd_tensor *x) { return unary(KD_UN_NEG, x, 0, 0); }
kd_tensor *kd_exp(kd_tensor *x) { return unary(KD_UN_EXP, x, 0, 0); }
kd_tensor *kd_log(kd_tensor *x) { return unary(KD_UN_LOG, x, 0, 0); }
kd_tensor *kd_sqrt(kd_tensor *x) { return unary(KD_UN_SQRT, x, 0, 0); }
kd_tensor *kd_abs(kd_tensor *x) { return unary(KD_UN_ABS, x, 0, 0); }
kd_tensor *kd_tanh(kd_tensor *x) { return unary(KD_UN_TANH, x, 0, 0); }
kd_tensor *kd_relu(kd_tensor *x) { return unary(KD_UN_RELU, x, 0, 0); }
kd_tensor *kd_relu6(kd_tensor *x) { return unary(KD_UN_RELU6, x, 0, 0); }
kd_tensor *kd_gelu(kd_tensor *x) { return unary(KD_UN_GELU, x, 0, 0); }
kd_tensor *kd_gelu_tanh(kd_tensor *x) { return unary(KD_UN_GELU_TANH, x, 0, 0); }
kd_tensor *kd_silu(kd_tensor *x) { return unary(KD_UN_SILU, x, 0, 0); }
kd_tensor *kd_sigmoid(kd_tensor *x) { return unary(KD_UN_SIGMOID, x, 0, 0); }
kd_tensor *kd_hardsigmoid(kd_tensor *x) { return unary(KD_UN_HARDSIGMOID, x, 0, 0); }
kd_tensor *kd_hardswish(kd_tensor *x) { return unary(KD_UN_HARDSWISH, x, 0, 0); }
kd_tensor *kd_clamp(kd_tensor *x, double lo, double hi) { return unary(KD_UN_CLAMP, x, lo, hi); }
kd_tensor *kd_pow_scalar(kd_tensor *x, double e) { return unary(KD_UN_POW, x, e, 0); }
kd_tensor *kd_add_scalar(kd_tensor *x, double s) { return unary(KD_UN_ADD_SCALAR, x, s, 0); }
kd_tensor *kd_mul_scalar(kd_tensor *x, double s) { return unary(KD_UN_MUL_SCALAR, x, s, 0); }
