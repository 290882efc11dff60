/* Ops defined outside the core (custom_op.h): one tape node whose backward
 * is the caller's. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* What the node keeps: the caller's op (copied, so it may have been on the
 * stack) and its ctx. */
typedef struct custom_node {
    kd_custom_op op;
    void *ctx;
} custom_node;

static void free_custom_node(void *p)
{
    custom_node *c = p;
    if (c->op.free_ctx)
        c->op.free_ctx(c->ctx);
    free(c);
}

static kd_status custom_backward(kd_node *node, kd_tensor *grad_output)
{
    custom_node *c = node->ctx;
    int n = node->n_inputs;
    kd_tensor **grads = calloc((size_t)n, sizeof *grads);
    if (!grads)
        return kd_error(KD_ERR_NOMEM, "out of host memory");
    kd_status st = c->op.backward(c->ctx, grad_output, n, node->inputs, node->output, grads);
    for (int i = 0; i < n && st == KD_OK; i++) {
        kd_tensor *x = node->inputs[i], *g = grads[i];
        if (!g)
            continue;
        if (!kd_tensor_same_shape(g, x) || g->dtype != x->dtype || g->device != x->device) {
            char a[96], b[96];
            st = kd_error(KD_ERR_INVALID, "gradient of input %d is %s %s, the input %s %s", i,
                          kd_shape_str(g, a, sizeof a), kd_dtype_name(g->dtype),
                          kd_shape_str(x, b, sizeof b), kd_dtype_name(x->dtype));
            break;
        }
        st = kd_grad_accumulate(x, g);
    }
    free(grads);
    return st; /* kd_backward puts "backward of NAME" in front */
}

/* The caller's op, zero past what an older caller's struct holds. */
static kd_status read_op(const kd_custom_op *op, kd_custom_op *out)
{
    memset(out, 0, sizeof *out);
    if (!op)
        return kd_error(KD_ERR_INVALID, "custom op: NULL op");
    if (op->size < sizeof *out) /* every field of the first version */
        return kd_error(KD_ERR_INVALID, "custom op '%s': size %u is smaller than kd_custom_op",
                        op->size >= offsetof(kd_custom_op, name) + sizeof op->name && op->name
                            ? op->name
                            : "?",
                        op->size);
    memcpy(out, op, sizeof *out);
    if (!out->name)
        return kd_error(KD_ERR_INVALID, "custom op: no name");
    if (!out->backward)
        return kd_error(KD_ERR_INVALID, "custom op '%s': no backward (required)", out->name);
    return KD_OK;
}

/* Why the call cannot record `output` as op(inputs); KD_OK when it can. */
static kd_status check_call(const kd_custom_op *o, int n_inputs, kd_tensor *const *inputs,
                            const kd_tensor *output)
{
    if (n_inputs < 0 || (n_inputs > 0 && !inputs))
        return kd_error(KD_ERR_INVALID, "custom op '%s': %d inputs in %s", o->name, n_inputs,
                        inputs ? "an array" : "a NULL array");
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i] == output)
            return kd_error(KD_ERR_INVALID,
                            "custom op '%s': the output is input %d; make a new tensor", o->name,
                            i);
    if (output->requires_grad)
        return kd_error(KD_ERR_INVALID,
                        "custom op '%s': the output already requires grad (made by recorded "
                        "ops?); compute it with grad mode off",
                        o->name);
    return KD_OK;
}

kd_tensor *kd_custom_apply(const kd_custom_op *op, int n_inputs, kd_tensor *const *inputs,
                           kd_tensor *output, void *ctx)
{
    kd_custom_op o;
    kd_status st = read_op(op, &o);
    /* A NULL tensor is an earlier op's failure: its message stands. */
    bool null_tensor = !output;
    for (int i = 0; i < n_inputs && inputs && !null_tensor; i++)
        null_tensor = !inputs[i];
    if (st == KD_OK && !null_tensor)
        st = check_call(&o, n_inputs, inputs, output);
    kd_node *node = NULL;
    custom_node *c = NULL;
    if (st == KD_OK && !null_tensor && kd_needs_grad(n_inputs, inputs)) {
        c = malloc(sizeof *c);
        st = c ? kd_record(o.name, custom_backward, output, n_inputs, inputs, &node)
               : kd_error(KD_ERR_NOMEM, "custom op '%s': out of host memory", o.name);
    }
    if (!node) { /* nothing recorded, or a failure: ctx is done with */
        free(c);
        if (o.free_ctx)
            o.free_ctx(ctx);
        return st == KD_OK && !null_tensor ? output : NULL;
    }
    c->op = o;
    c->ctx = ctx;
    node->ctx = c;
    node->free_ctx = free_custom_node;
    return output;
}
