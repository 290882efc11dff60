/* Step scopes: everything a step allocates, freed together at its end. */
#include <stdlib.h>

#include "internal.h"

struct kd_scope {
    kd_tensor **tensors;
    int64_t n_tensors, cap_tensors;
    kd_node *nodes; /* newest first */
    kd_scope *parent;
};

static _Thread_local kd_scope *current_scope;
static _Thread_local int scope_depth;

kd_status kd_scope_begin(void)
{
    kd_scope *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "scope: out of host memory");
    s->parent = current_scope;
    current_scope = s;
    scope_depth++;
    return KD_OK;
}

int kd_scope_depth(void) { return scope_depth; }

void kd_scope_adopt_tensor(kd_tensor *t)
{
    kd_scope *s = current_scope;
    if (!s)
        return;
    if (s->n_tensors == s->cap_tensors) {
        int64_t cap = s->cap_tensors ? s->cap_tensors * 2 : 256;
        kd_tensor **grown = realloc(s->tensors, (size_t)cap * sizeof *grown);
        if (!grown) {
            /* Cannot track it: hand it to the caller rather than lose it. */
            t->scope = NULL;
            return;
        }
        s->tensors = grown;
        s->cap_tensors = cap;
    }
    s->tensors[s->n_tensors++] = t;
    t->scope = s;
}

void kd_scope_adopt_node(kd_node *node)
{
    kd_scope *s = current_scope;
    node->scope = s;
    if (!s)
        return;
    node->next_in_scope = s->nodes;
    s->nodes = node;
}

kd_tensor *kd_tensor_keep(kd_tensor *t)
{
    if (!t || !t->scope)
        return t;
    kd_scope *s = t->scope;
    for (int64_t i = s->n_tensors - 1; i >= 0; i--) {
        if (s->tensors[i] == t) {
            s->tensors[i] = NULL;
            break;
        }
    }
    t->scope = NULL;
    /* A kept tensor outlives the ops that made it: it becomes a leaf. */
    if (t->grad_fn) {
        t->grad_fn->output = NULL;
        t->grad_fn = NULL;
        t->requires_grad = false;
    }
    return t;
}

kd_status kd_scope_promote(kd_tensor *t)
{
    kd_scope *s = current_scope;
    if (!t)
        return kd_error(KD_ERR_INVALID, "kd_scope_promote: NULL tensor");
    if (!s || t->scope != s)
        return KD_OK; /* it already outlives the innermost scope */
    if (!s->parent)
        return kd_error(KD_ERR_INVALID, "kd_scope_promote: no scope around the innermost one");
    if (t->grad_fn)
        return kd_error(KD_ERR_INVALID, "kd_scope_promote: the tensor has autograd history "
                        "(its ops end with the scope)");
    for (int64_t i = s->n_tensors - 1; i >= 0; i--) {
        if (s->tensors[i] == t) {
            s->tensors[i] = NULL;
            break;
        }
    }
    current_scope = s->parent;
    kd_scope_adopt_tensor(t);
    current_scope = s;
    return t->scope == s->parent ? KD_OK : kd_error(KD_ERR_NOMEM, "kd_scope_promote: out of "
                                                    "host memory");
}

void kd_scope_end(void)
{
    kd_scope *s = current_scope;
    if (!s)
        return;
    for (kd_node *n = s->nodes, *next; n; n = next) {
        next = n->next_in_scope;
        if (n->output && n->output->grad_fn == n)
            n->output->grad_fn = NULL;
        kd_node_free(n);
    }
    for (int64_t i = 0; i < s->n_tensors; i++) {
        kd_tensor *t = s->tensors[i];
        if (!t)
            continue;
        t->scope = NULL;
        kd_tensor_free(t);
    }
    free(s->tensors);
    current_scope = s->parent;
    scope_depth--;
    free(s);
}
