/* kdengine: differentiable ops defined outside the core.
 *
 * A plugin whose op the SDK lacks computes the forward itself (any kernel:
 * a loop over kd_tensor_data, a BLAS call, SDK ops with grad mode off) and
 * hands the result to kd_custom_apply with a backward. The call records one
 * node on the autograd tape; kd_backward then calls op->backward with the
 * output's gradient and adds the gradients it returns into the inputs.
 *
 *   static kd_status softplus_backward(void *ctx, const kd_tensor *grad_output,
 *                                      int n_inputs, kd_tensor *const *inputs,
 *                                      const kd_tensor *output,
 *                                      kd_tensor **grad_inputs)
 *   {
 *       grad_inputs[0] = kd_mul((kd_tensor *)grad_output, kd_sigmoid(inputs[0]));
 *       return grad_inputs[0] ? KD_OK : kd_last_status();
 *   }
 *   static const kd_custom_op softplus_op = {sizeof softplus_op, "softplus",
 *                                            softplus_backward, NULL};
 *   ...
 *   kd_tensor *y = kd_tensor_empty(x->dtype, x->device, x->ndim, x->shape);
 *   ... fill y ...
 *   y = kd_custom_apply(&softplus_op, 1, &x, y, NULL);
 *
 * OWNERSHIP (stated once):
 *  - op: read during the call (its fields are copied, the struct may be on
 *    the stack); op->name must be a string that outlives the step (a
 *    literal).
 *  - output: a tensor the caller just made for this call, not one of the
 *    inputs and not the result of a recorded op. kd_custom_apply returns it
 *    (the same pointer) and does not change who owns it: in a step scope,
 *    the scope.
 *  - ctx: handed over, on success or failure (unless op is NULL or smaller
 *    than the first kd_custom_op, when no free_ctx can be read). It is freed with
 *    op->free_ctx (when not NULL) once the tape node is freed (at the end
 *    of the scope it was recorded in), or before kd_custom_apply returns
 *    when nothing was recorded (grad mode off, no input requires grad) or
 *    the call failed. Tensors kept in ctx must live as long as the node:
 *    scope-owned tensors of the same step do.
 *  - grad_inputs: an array of n_inputs NULLs. backward sets entry i to the
 *    gradient of inputs[i] (same shape, dtype and device), or leaves it
 *    NULL for an input it does not differentiate (check
 *    inputs[i]->requires_grad to skip work). Gradients are new tensors of
 *    the current scope (what SDK ops make while backward runs) or any
 *    tensor backward may read (grad_output itself, for the identity): the
 *    core only reads them. backward runs with grad mode off and must not
 *    write into grad_output, the inputs or the output.
 *
 * Errors name the op: a bad argument to kd_custom_apply, and a backward
 * that fails or returns a gradient of the wrong shape ("backward of
 * softplus: gradient of input 0 is [2, 3] f64, the input [3, 2] f64"). */
#ifndef KDENGINE_CUSTOM_OP_H
#define KDENGINE_CUSTOM_OP_H

#include <stdint.h>

#include <kdengine/api.h>
#include <kdengine/status.h>
#include <kdengine/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_custom_op {
    uint32_t size;    /* sizeof(kd_custom_op) of the caller: fields added
                         later read as NULL for an older caller */
    const char *name; /* in messages and the tape ("backward of NAME") */
    /* required: the gradients of the inputs from the output's gradient */
    kd_status (*backward)(void *ctx, const kd_tensor *grad_output, int n_inputs,
                          kd_tensor *const *inputs, const kd_tensor *output,
                          kd_tensor **grad_inputs);
    /* optional: frees ctx */
    void (*free_ctx)(void *ctx);
} kd_custom_op;

/* Records `output` as op(inputs) and returns it, requiring grad when an
 * input does; NULL with kd_last_error() set on failure. A NULL input or
 * output (a failed op before it) returns NULL and keeps the first message,
 * like any op. */
KD_API kd_tensor *kd_custom_apply(const kd_custom_op *op, int n_inputs,
                                  kd_tensor *const *inputs, kd_tensor *output, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
