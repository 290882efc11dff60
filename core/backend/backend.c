/* Which ops each device has (backend.h). */
#include <string.h>

#include "backend.h"

/* The ops whose fronts call the CUDA backend for every kernel they run,
 * forward and backward (in a build without CUDA those calls fail with
 * KD_ERR_UNSUPPORTED, and there are no CUDA tensors to run them on). */
static const char *const cuda_ops[] = {
    "add", "sub", "mul", "div",
    "neg", "exp", "log", "sqrt", "abs", "tanh", "relu", "relu6", "gelu", "gelu_tanh", "silu",
    "sigmoid", "hardsigmoid", "hardswish", "clamp", "pow_scalar", "add_scalar", "mul_scalar",
    "sum", "mean", "sum_all", "mean_all", "max", "min", "argmax",
    "matmul", "linear",
};

bool kd_backend_has_op(kd_device device, const char *op)
{
    if (kd_device_kind(device) == KD_CPU)
        return true;
    if (kd_device_kind(device) != KD_CUDA)
        return false;
    for (size_t i = 0; i < sizeof cuda_ops / sizeof *cuda_ops; i++)
        if (strcmp(cuda_ops[i], op) == 0)
            return true;
    return false;
}

kd_status kd_backend_check(const char *op, const kd_tensor *x)
{
    if (kd_backend_has_op(x->device, op))
        return KD_OK;
    return kd_error(KD_ERR_UNSUPPORTED, "%s: no CUDA kernel; only CPU tensors are supported", op);
}
