/* The define-by-run tape: recording ops and running backward. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#ifdef KD_HAVE_CUDA
#include "backend/cuda/cuda.h"
#endif

static _Thread_local bool grad_disabled;

bool kd_set_grad_enabled(bool enabled)
{
    bool previous = !grad_disabled;
    grad_disabled = !enabled;
    return previous;
}

bool kd_grad_enabled(void) { return !grad_disabled; }

bool kd_needs_grad(int n, kd_tensor *const *inputs)
{
    if (grad_disabled)
        return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad)
            return true;
    return false;
}

kd_status kd_record(const char *op, kd_backward_fn backward, kd_tensor *output,
                    int n_inputs, kd_tensor *const *inputs, kd_node **node_out)
{
    *node_out = NULL;
    if (!kd_needs_grad(n_inputs, inputs))
        return KD_OK;
    /* inputs[] past n_inputs read NULL up to KD_NODE_MIN_INPUTS: an op with
     * an optional last input (a bias) tests it without checking n_inputs */
    int slots = n_inputs > KD_NODE_MIN_INPUTS ? n_inputs : KD_NODE_MIN_INPUTS;
    kd_node *node = calloc(1, sizeof *node + (size_t)slots * sizeof node->inputs[0]);
    if (!node)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory recording the op", op);
    node->saved = node->saved_slots;
    node->n_saved = KD_NODE_SAVED;
    node->op = op;
    node->backward = backward;
    node->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++)
        node->inputs[i] = inputs[i];
    node->output = output;
    output->requires_grad = true;
    output->grad_fn = node;
    kd_scope_adopt_node(node);
    *node_out = node;
    return KD_OK;
}

void *kd_node_ctx(kd_node *node, size_t bytes)
{
    if (!node->ctx)
        node->ctx = calloc(1, bytes);
    return node->ctx;
}

kd_status kd_node_save_slots(kd_node *node, int n)
{
    if (n <= node->n_saved)
        return KD_OK;
    kd_tensor **slots = calloc((size_t)n, sizeof *slots);
    if (!slots)
        return kd_error(KD_ERR_NOMEM, "%s: out of host memory for %d saved tensors", node->op, n);
    memcpy(slots, node->saved, (size_t)node->n_saved * sizeof *slots);
    if (node->saved != node->saved_slots)
        free(node->saved);
    node->saved = slots;
    node->n_saved = n;
    return KD_OK;
}

void kd_node_free(kd_node *node)
{
    if (node->saved != node->saved_slots)
        free(node->saved);
    if (node->free_ctx)
        node->free_ctx(node->ctx);
    else
        free(node->ctx);
    free(node);
}

/* dst += src, both contiguous, same shape, dtype and device. */
static kd_status add_into(kd_tensor *dst, const kd_tensor *src)
{
    int64_t n = kd_tensor_numel(dst);
    if (dst->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        return kd_cuda_binary(KD_BIN_ADD, dst, dst, src);
#else
        return kd_error(KD_ERR_UNSUPPORTED, "backward: this build has no CUDA");
#endif
    }
    if (dst->dtype == KD_F32) {
        float *d = kd_tensor_data(dst);
        const float *s = kd_tensor_data(src);
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
    } else if (dst->dtype == KD_F64) {
        double *d = kd_tensor_data(dst);
        const double *s = kd_tensor_data(src);
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
    } else {
        return kd_error(KD_ERR_UNSUPPORTED, "backward: gradient of dtype %s",
                        kd_dtype_name(dst->dtype));
    }
    return KD_OK;
}

/* How a gradient reaches t->grad when t has none yet. */
typedef enum grad_handoff {
    HANDOFF_COPY,  /* the caller's tensor: copy it */
    HANDOFF_SHARE, /* a backward's read-only gradient: share its storage */
    HANDOFF_TAKE   /* a tensor the backward just made for t alone: take it */
} grad_handoff;

/* Leaves whose .grad shares storage with another gradient, recorded while a
 * backward runs so it can give each its own copy before returning. */
static _Thread_local kd_tensor **shared_leaves;
static _Thread_local int64_t n_shared_leaves, cap_shared_leaves;

static kd_tensor *private_copy(const kd_tensor *g)
{
    kd_tensor *copy = kd_tensor_empty(g->dtype, g->device, g->ndim, g->shape);
    if (!copy)
        return NULL;
    kd_tensor_keep(copy);
    if (kd_tensor_copy_(copy, g) != KD_OK) {
        kd_tensor_free(copy);
        return NULL;
    }
    return copy;
}

static kd_status accumulate(kd_tensor *t, kd_tensor *g, grad_handoff handoff)
{
    if (!t || !t->requires_grad)
        return KD_OK;
    if (!kd_tensor_same_shape(t, g) || g->dtype != t->dtype || g->device != t->device) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID,
                        "backward: gradient %s %s for a tensor %s %s",
                        kd_shape_str(g, a, sizeof a), kd_dtype_name(g->dtype),
                        kd_shape_str(t, b, sizeof b), kd_dtype_name(t->dtype));
    }
    if (t->grad) {
        if (t->grad->storage->refcount > 1) { /* shared: copy before writing */
            kd_tensor *own = private_copy(t->grad);
            if (!own)
                return KD_ERR_NOMEM;
            kd_tensor_free(t->grad);
            t->grad = own;
        }
        kd_tensor *src = kd_contiguous_raw(g);
        return src ? add_into(t->grad, src) : KD_ERR_NOMEM;
    }
    bool contiguous = kd_tensor_is_contiguous(g);
    if (handoff == HANDOFF_TAKE && g->scope && contiguous && !g->grad_fn &&
        g->offset == 0 && g->storage->refcount == 1) {
        t->grad = kd_tensor_keep(g);
        return KD_OK;
    }
    if (handoff != HANDOFF_COPY && contiguous) {
        kd_tensor *alias = kd_tensor_alias(g);
        if (!alias)
            return KD_ERR_NOMEM;
        t->grad = kd_tensor_keep(alias);
        if (t->grad_fn)
            return KD_OK; /* an intermediate's gradient dies with its node */
        if (n_shared_leaves == cap_shared_leaves) {
            int64_t cap = cap_shared_leaves ? 2 * cap_shared_leaves : 64;
            kd_tensor **grown = realloc(shared_leaves, (size_t)cap * sizeof *grown);
            if (!grown)
                return kd_error(KD_ERR_NOMEM, "backward: out of host memory");
            shared_leaves = grown;
            cap_shared_leaves = cap;
        }
        shared_leaves[n_shared_leaves++] = t;
        return KD_OK;
    }
    t->grad = private_copy(g);
    return t->grad ? KD_OK : KD_ERR_NOMEM;
}

/* A leaf's .grad outlives the step and may be changed in place (clipping,
 * the optimizer), so no two leaves may share one; sharing with step-scoped
 * gradients ends with the scope. */
static kd_status unshare_leaf_grads(void)
{
    kd_status st = KD_OK;
    for (int64_t i = 0; i < n_shared_leaves && st == KD_OK; i++) {
        kd_tensor *t = shared_leaves[i];
        for (int64_t j = 0; j < i; j++) {
            kd_tensor *u = shared_leaves[j];
            if (t->grad && u->grad && t->grad->storage == u->grad->storage) {
                kd_tensor *own = private_copy(t->grad);
                if (!own) {
                    st = KD_ERR_NOMEM;
                    break;
                }
                kd_tensor_free(t->grad);
                t->grad = own;
                break;
            }
        }
    }
    n_shared_leaves = 0;
    return st;
}

kd_status kd_grad_accumulate(kd_tensor *t, kd_tensor *g)
{
    return accumulate(t, g, HANDOFF_SHARE);
}

kd_status kd_grad_accumulate_take(kd_tensor *t, kd_tensor *g)
{
    return accumulate(t, g, HANDOFF_TAKE);
}

/* Reverse topological order of the nodes reachable from root. */
static kd_status collect_nodes(kd_node *root, kd_node ***order, int64_t *count)
{
    static _Thread_local int64_t mark;
    mark++;
    int64_t cap = 256, n = 0, depth = 0, stack_cap = 256;
    kd_node **out = malloc((size_t)cap * sizeof *out);
    struct frame { kd_node *node; int next_input; } *stack =
        malloc((size_t)stack_cap * sizeof *stack);
    if (!out || !stack) {
        free(out);
        free(stack);
        return kd_error(KD_ERR_NOMEM, "backward: out of host memory");
    }
    root->visit_mark = mark;
    stack[depth++] = (struct frame){root, 0};
    while (depth > 0) {
        struct frame *f = &stack[depth - 1];
        if (f->next_input < f->node->n_inputs) {
            kd_tensor *in = f->node->inputs[f->next_input++];
            kd_node *child = in ? in->grad_fn : NULL;
            if (!child || child->visit_mark == mark)
                continue;
            child->visit_mark = mark;
            if (depth == stack_cap) {
                stack_cap *= 2;
                void *grown = realloc(stack, (size_t)stack_cap * sizeof *stack);
                if (!grown)
                    goto nomem;
                stack = grown;
            }
            stack[depth++] = (struct frame){child, 0};
            continue;
        }
        if (n == cap) {
            cap *= 2;
            void *grown = realloc(out, (size_t)cap * sizeof *out);
            if (!grown)
                goto nomem;
            out = grown;
        }
        out[n++] = f->node; /* post-order: every input's producer comes first */
        depth--;
    }
    free(stack);
    *order = out;
    *count = n;
    return KD_OK;
nomem:
    free(out);
    free(stack);
    return kd_error(KD_ERR_NOMEM, "backward: out of host memory");
}

kd_status kd_backward_with(kd_tensor *output, kd_tensor *grad_output)
{
    if (!output || !grad_output)
        return kd_error(KD_ERR_INVALID, "backward: NULL tensor");
    if (!output->requires_grad)
        return kd_error(KD_ERR_INVALID,
                        "backward: the tensor does not require grad (no input "
                        "requires grad, or it was made with grad mode off)");
    if (!output->grad_fn)
        return accumulate(output, grad_output, HANDOFF_COPY);
    kd_node **order = NULL;
    int64_t n = 0;
    kd_status st = collect_nodes(output->grad_fn, &order, &n);
    if (st != KD_OK)
        return st;
    bool was_enabled = kd_set_grad_enabled(false);
    n_shared_leaves = 0;
    /* The caller's gradient may be shared by an op output (its gradient is
     * only read, then dropped); copy-on-write covers any later sum. */
    st = accumulate(output, grad_output, HANDOFF_SHARE);
    for (int64_t i = n - 1; i >= 0 && st == KD_OK; i--) {
        kd_node *node = order[i];
        kd_tensor *out = node->output;
        if (!out || !out->grad)
            continue;
        st = node->backward(node, out->grad);
        if (st != KD_OK) {
            kd_error_wrap(st, "backward of %s", node->op);
            break;
        }
        /* An intermediate's gradient is spent once its op has run. */
        kd_tensor_free(out->grad);
        out->grad = NULL;
    }
    kd_status unshared = unshare_leaf_grads();
    kd_set_grad_enabled(was_enabled);
    free(order);
    return st != KD_OK ? st : unshared;
}

kd_status kd_backward(kd_tensor *loss)
{
    if (!loss)
        return kd_error(KD_ERR_INVALID, "backward: NULL loss");
    if (kd_tensor_numel(loss) != 1) {
        char s[96];
        return kd_error(KD_ERR_INVALID,
                        "backward: the loss must have one element, got shape %s",
                        kd_shape_str(loss, s, sizeof s));
    }
    kd_tensor *one = kd_tensor_full(loss->dtype, loss->device, loss->ndim,
                                    loss->shape, 1.0);
    if (!one)
        return KD_ERR_NOMEM;
    kd_status st = kd_backward_with(loss, one);
    kd_tensor_free(one);
    return st;
}
