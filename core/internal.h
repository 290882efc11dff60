/* Internal to libkdcore: storage, recorded ops and the helpers every op
 * file uses. Nothing here is part of the SDK. */
#ifndef KD_CORE_INTERNAL_H
#define KD_CORE_INTERNAL_H

#include "config.h" /* KD_HAVE_CUDA, KD_HAVE_DNNL: every core file sees them */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kdengine/kdengine.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- storage: a refcounted block of bytes on one device --- */
struct kd_storage {
    void *data;
    size_t nbytes;
    size_t capacity; /* bytes actually held (the allocator's size class) */
    kd_device device;
    int refcount;
};
kd_status kd_storage_new(kd_device device, size_t nbytes, kd_storage **out);
void kd_storage_retain(kd_storage *s);
void kd_storage_release(kd_storage *s);

/* Host memory through the caching allocator (host_alloc.c): 64-byte
 * aligned; *capacity receives the size to pass back to kd_host_free. */
void *kd_host_alloc(size_t nbytes, size_t *capacity);
void kd_host_free(void *ptr, size_t capacity);
void kd_host_release_cache(void);
size_t kd_host_cached_bytes(void);

/* A tensor header sharing base's storage (a view), owned by the current
 * scope like any new tensor. The caller sets shape, stride and offset. */
kd_tensor *kd_tensor_alias(const kd_tensor *base);

/* --- scopes --- */
/* Adds t (or node) to the innermost open scope; no-op when none is open. */
void kd_scope_adopt_tensor(kd_tensor *t);
void kd_scope_adopt_node(kd_node *node);

/* --- recorded ops (the tape) ---
 * A node is made by the op that produced `output` and is freed by the
 * scope that was open then. Its backward gets the gradient of the output
 * (contiguous, same shape) and adds input gradients with kd_grad_accumulate.
 * Backward runs with grad mode off; tensors it makes belong to the current
 * scope. */
#define KD_NODE_SAVED 4      /* saved[] slots every node has; kd_node_save_slots for more */
#define KD_NODE_MIN_INPUTS 4 /* inputs[] slots every node has, NULL past n_inputs */
typedef kd_status (*kd_backward_fn)(kd_node *node, kd_tensor *grad_output);

struct kd_node {
    const char *op;
    kd_backward_fn backward;
    kd_tensor *output;
    kd_tensor **saved; /* [n_saved] tensors kept for backward */
    int n_saved;
    int64_t iarg[KD_MAX_DIMS * 2]; /* op attributes */
    double farg[4];
    void *ctx; /* op-owned bytes, freed with the node (kd_node_ctx) */
    void (*free_ctx)(void *ctx); /* frees ctx instead of free() when set */
    kd_scope *scope;
    kd_node *next_in_scope;
    int64_t visit_mark; /* used by kd_backward's traversal */
    kd_tensor *saved_slots[KD_NODE_SAVED];
    int n_inputs;
    kd_tensor *inputs[]; /* [max(n_inputs, KD_NODE_MIN_INPUTS)] */
};

/* True when grad mode is on and any of the inputs requires grad. */
bool kd_needs_grad(int n, kd_tensor *const *inputs);
/* Records the op that made `output` when kd_needs_grad(inputs): sets
 * output->requires_grad and output->grad_fn, and returns the node in
 * *node_out for the op to fill saved/iarg/farg. *node_out is NULL when
 * nothing needed recording. */
kd_status kd_record(const char *op, kd_backward_fn backward, kd_tensor *output,
                    int n_inputs, kd_tensor *const *inputs, kd_node **node_out);
/* Allocates (once) zeroed op-private bytes owned by the node. */
void *kd_node_ctx(kd_node *node, size_t bytes);
/* Gives the node n saved[] slots (it has KD_NODE_SAVED without this). */
kd_status kd_node_save_slots(kd_node *node, int n);
/* Frees a node and what it owns (not the tensors it points to). */
void kd_node_free(kd_node *node);
/* Adds g (same shape as t) into t->grad; ignores t if it needs no grad.
 * g may be shared (a pass-through gradient): t->grad may then share its
 * storage, copied on the first write. A backward never writes into the
 * gradient it is given. */
kd_status kd_grad_accumulate(kd_tensor *t, kd_tensor *g);
/* Same, but g must be a tensor the caller just made in the current scope and
 * shares with nothing: when t has no grad yet, g becomes it (no copy). */
kd_status kd_grad_accumulate_take(kd_tensor *t, kd_tensor *g);

/* --- helpers for op implementations --- */
/* Returns x itself when contiguous, otherwise a contiguous copy in the
 * current scope. Not recorded: an op's gradient is always contiguous. */
kd_tensor *kd_contiguous_raw(kd_tensor *x);
/* Checks x is f32 or f64 on the CPU or CUDA; names the op in the error. */
kd_status kd_check_float(const char *op, const kd_tensor *x);
/* Same dtype and device for both, named in the error. */
kd_status kd_check_same(const char *op, const kd_tensor *a, const kd_tensor *b);
/* Normalises a possibly negative dim; error names the op. */
kd_status kd_norm_dim(const char *op, int ndim, int dim, int *out);
/* Sums g over the dims where `shape` was broadcast, giving a contiguous
 * tensor of that shape. Returns g itself when nothing was broadcast. */
kd_tensor *kd_sum_to_shape(kd_tensor *g, int ndim, const int64_t *shape);
/* Computes the broadcast shape of a and b; error names the op. */
kd_status kd_broadcast_shape(const char *op, const kd_tensor *a,
                             const kd_tensor *b, int *ndim, int64_t *shape);
/* Strides for reading t as if it had `ndim`/`shape` (0 on broadcast dims). */
void kd_broadcast_strides(const kd_tensor *t, int ndim, const int64_t *shape,
                          int64_t *stride);
/* Row-major contiguous strides for a shape. */
void kd_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
int64_t kd_shape_numel(int ndim, const int64_t *shape);

/* Elementwise op codes shared by the CPU kernels and the CUDA backend. */
typedef enum kd_binary_op {
    KD_BIN_ADD,
    KD_BIN_SUB,
    KD_BIN_MUL,
    KD_BIN_DIV
} kd_binary_op;

typedef enum kd_unary_op {
    KD_UN_NEG,
    KD_UN_EXP,
    KD_UN_LOG,
    KD_UN_SQRT,
    KD_UN_ABS,
    KD_UN_TANH,
    KD_UN_RELU,
    KD_UN_RELU6,
    KD_UN_GELU,
    KD_UN_GELU_TANH,
    KD_UN_SILU,
    KD_UN_SIGMOID,
    KD_UN_HARDSIGMOID,
    KD_UN_HARDSWISH,
    KD_UN_CLAMP,      /* p0 = lo, p1 = hi */
    KD_UN_POW,        /* p0 = exponent */
    KD_UN_ADD_SCALAR, /* p0 */
    KD_UN_MUL_SCALAR, /* p0 */
    KD_UN_COUNT
} kd_unary_op;

#ifdef __cplusplus
}
#endif
/* Counts multiply-accumulates of a forward op for kd_macs_take. */
void kd_macs_add(int64_t n);
/* Counts new storage for kd_alloc_bytes_take. */
void kd_alloc_bytes_add(int64_t n);

/* "[d0, d1, ...]" into buf (kd_shape_str, kd_tap_shape_str). */
const char *kd_dims_str(int ndim, const int64_t *shape, char *buf, int size);

#endif
