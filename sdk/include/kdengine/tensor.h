/* kdengine: tensors, step scopes and gradient mode.
 *
 * OWNERSHIP (the whole rule, stated once):
 *  - A tensor created while a step scope is open belongs to the innermost
 *    open scope and is freed by kd_scope_end(). Ops, plugins and models never
 *    free intermediates: they live until the step ends.
 *  - A tensor created while no scope is open belongs to the caller, who
 *    frees it with kd_tensor_free(). Parameters, buffers and optimizer state
 *    are made this way (or moved out of a scope with kd_tensor_keep()) and
 *    are owned by the module or plugin instance that made them.
 *  - A tensor's .grad belongs to the tensor and is freed with it.
 *  - Views (reshape, slice, permute, detach) share storage with their base;
 *    storage is reference counted, so freeing the base before the view is
 *    safe.
 *
 * Shapes are logical (NCHW for images); strides are in elements and may
 * describe any layout (channels-last included). Ops that need contiguous
 * inputs make them so internally.
 *
 * Ops return a new tensor, or NULL with kd_last_error() set. An op given a
 * NULL input returns NULL and keeps the first message, so a chain like
 * kd_relu(kd_add(a, b)) needs one check at the end. */
#ifndef KDENGINE_TENSOR_H
#define KDENGINE_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/api.h>
#include <kdengine/dtype.h>
#include <kdengine/status.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KD_MAX_DIMS 8

/* Where a tensor lives: the kind in the low byte, the index above it, so
 * "cuda:1" is KD_CUDA_DEVICE(1) and KD_CUDA is cuda:0. A process drives
 * one GPU for now: storage on another index is refused, not misplaced. */
typedef uint32_t kd_device;
#define KD_CPU ((kd_device)0)
#define KD_CUDA ((kd_device)1)
#define KD_CUDA_DEVICE(index) ((kd_device)(1u | (uint32_t)(index) << 8))
static inline uint32_t kd_device_kind(kd_device d) { return d & 0xffu; }
static inline int kd_device_index(kd_device d) { return (int)(d >> 8); }

typedef struct kd_storage kd_storage;
typedef struct kd_node kd_node;
typedef struct kd_scope kd_scope;

typedef struct kd_tensor {
    kd_dtype dtype;
    kd_device device;
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    int64_t stride[KD_MAX_DIMS]; /* in elements */
    int64_t offset;              /* in elements, into storage */
    kd_storage *storage;
    bool requires_grad;
    struct kd_tensor *grad; /* contiguous, same shape; owned by this tensor */
    kd_node *grad_fn;       /* the op that made it; NULL for leaves */
    kd_scope *scope;        /* owner; NULL when the caller owns it */
} kd_tensor;

/* --- creation (owner: see the rule above) --- */
KD_API kd_tensor *kd_tensor_empty(kd_dtype dtype, kd_device device, int ndim,
                                  const int64_t *shape);
KD_API kd_tensor *kd_tensor_zeros(kd_dtype dtype, kd_device device, int ndim,
                                  const int64_t *shape);
KD_API kd_tensor *kd_tensor_full(kd_dtype dtype, kd_device device, int ndim,
                                 const int64_t *shape, double value);
/* Copies numel elements of `dtype` from host memory into a new CPU tensor. */
KD_API kd_tensor *kd_tensor_from_data(kd_dtype dtype, int ndim, const int64_t *shape,
                                      const void *data);
/* A new tensor like t (dtype, device, shape), contiguous, uninitialised. */
KD_API kd_tensor *kd_tensor_empty_like(const kd_tensor *t);
KD_API kd_tensor *kd_tensor_zeros_like(const kd_tensor *t);

/* Frees a caller-owned tensor (and its grad). Freeing a scope-owned tensor
 * is a no-op: its scope frees it. NULL is fine. */
KD_API void kd_tensor_free(kd_tensor *t);

/* Moves t out of its scope: the caller now owns it. Returns t. */
KD_API kd_tensor *kd_tensor_keep(kd_tensor *t);
/* Moves t from the innermost scope to the one around it, so an inner scope
 * can end, freeing everything else it made (a teacher's intermediates),
 * while t lives on; a t that is not in the innermost scope already does
 * and is left alone. t must hold no autograd history (made under
 * no-grad): KD_ERR_INVALID otherwise, or when no scope is around. */
KD_API kd_status kd_scope_promote(kd_tensor *t);

/* --- inspection --- */
KD_API int64_t kd_tensor_numel(const kd_tensor *t);
KD_API bool kd_tensor_is_contiguous(const kd_tensor *t);
KD_API bool kd_tensor_same_shape(const kd_tensor *a, const kd_tensor *b);
/* Address of element 0 (host pointer on CPU, device pointer on CUDA). */
KD_API void *kd_tensor_data(const kd_tensor *t);
/* Writes "[2, 3, 4]" into buf. Returns buf. */
KD_API const char *kd_shape_str(const kd_tensor *t, char *buf, int size);
/* Element at flat row-major logical index i, as double (CPU only). */
KD_API double kd_tensor_get(const kd_tensor *t, int64_t i);

/* --- copies (no autograd) --- */
/* Copies src into dst: same shape; dtype converts, device transfers. */
KD_API kd_status kd_tensor_copy_(kd_tensor *dst, const kd_tensor *src);
/* Fills every element of t with value. */
KD_API kd_status kd_tensor_fill_(kd_tensor *t, double value);
/* A contiguous copy of t on `device` (a copy even when it is the same). */
KD_API kd_tensor *kd_tensor_to_device(kd_tensor *t, kd_device device);

/* --- gradients --- */
KD_API void kd_tensor_set_requires_grad(kd_tensor *t, bool requires_grad);
/* Frees t->grad so the next backward starts from zero. */
KD_API void kd_tensor_zero_grad(kd_tensor *t);

/* --- step scopes --- */
KD_API kd_status kd_scope_begin(void);
/* Frees everything the innermost scope owns: tensors and recorded ops. */
KD_API void kd_scope_end(void);
/* Number of scopes open on this thread. */
KD_API int kd_scope_depth(void);

/* --- gradient mode (per thread) --- */
/* Returns the previous mode. With grad off (the teacher's forward) ops
 * record nothing and keep no activations for backward. */
KD_API bool kd_set_grad_enabled(bool enabled);
KD_API bool kd_grad_enabled(void);

/* Runs backward from a tensor with one element: leaf tensors that require
 * grad get d(loss)/d(leaf) added to their .grad, so calling it on several
 * micro-batches accumulates. */
KD_API kd_status kd_backward(kd_tensor *loss);
/* Same, from any output with an explicit upstream gradient (same shape). */
KD_API kd_status kd_backward_with(kd_tensor *output, kd_tensor *grad_output);

#ifdef __cplusplus
}
#endif
#endif
