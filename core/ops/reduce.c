/* Reductions: sum, mean, var over sets of dims; max, min, argmax over one.
 *
 * Every kernel sees its input as a contiguous [outer, reduce, inner] block.
 * A dim set is planned into groups of adjacent dims (size-1 dims dropped);
 * sum and mean reduce one group at a time from the last, var gathers the
 * reduced dims last with one copy. The kernels are in
 * core/backend/cpu/reduce.c and core/backend/cuda/cuda_reduce.cu. */
#include <math.h>
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"
#ifdef KD_HAVE_CUDA
#include "../backend/cuda/cuda.h"
#endif

typedef struct reduce_plan {
    unsigned mask;  /* bit d set: dim d is reduced */
    int64_t count;  /* input elements per output element */
    int64_t keep_shape[KD_MAX_DIMS]; /* x's shape, reduced dims set to 1 */
    int out_ndim;
    int64_t out_shape[KD_MAX_DIMS];
    int ngroups; /* adjacent dims of one kind merged, size-1 dims dropped */
    int64_t gsize[KD_MAX_DIMS];
    bool greduced[KD_MAX_DIMS];
} reduce_plan;

/* ndims == 0 reduces every dim, as torch does for an empty dim list. */
static kd_status plan_reduce(const char *op, const kd_tensor *x, int ndims,
                             const int *dims, bool keepdim, reduce_plan *p)
{
    memset(p, 0, sizeof *p);
    if (ndims < 0 || ndims > KD_MAX_DIMS || (ndims > 0 && !dims))
        return kd_error(KD_ERR_INVALID, "%s: %d dims given", op, ndims);
    if (ndims == 0)
        p->mask = (1u << x->ndim) - 1;
    for (int i = 0; i < ndims; i++) {
        int d;
        if (kd_norm_dim(op, x->ndim, dims[i], &d) != KD_OK)
            return KD_ERR_INVALID;
        if (x->ndim == 0)
            continue;
        if (p->mask & (1u << d))
            return kd_error(KD_ERR_INVALID, "%s: dim %d appears twice in the dim list",
                            op, d);
        p->mask |= 1u << d;
    }
    p->count = 1;
    for (int d = 0; d < x->ndim; d++) {
        bool red = p->mask & (1u << d);
        int64_t n = x->shape[d];
        p->keep_shape[d] = red ? 1 : n;
        if (red)
            p->count *= n;
        if (!red || keepdim)
            p->out_shape[p->out_ndim++] = red ? 1 : n;
        if (n == 1)
            continue;
        if (p->ngroups > 0 && p->greduced[p->ngroups - 1] == red) {
            p->gsize[p->ngroups - 1] *= n;
        } else {
            p->gsize[p->ngroups] = n;
            p->greduced[p->ngroups++] = red;
        }
    }
    return KD_OK;
}

/* The number of outputs: the product of the kept dims. */
static int64_t plan_kept_numel(const reduce_plan *p)
{
    int64_t n = 1;
    for (int g = 0; g < p->ngroups; g++)
        if (!p->greduced[g])
            n *= p->gsize[g];
    return n;
}

/* One [outer, reduce, inner] sum on x's device; out and x contiguous. */
static kd_status sum_step(const char *op, kd_tensor *out, kd_tensor *x,
                          int64_t outer, int64_t reduce, int64_t inner, double scale)
{
    if (x->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        (void)op;
        return kd_cuda_reduce_sum(out, x, outer, reduce, inner, scale);
#else
        return kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", op);
#endif
    }
    kd_cpu_reduce_sum(x->dtype, kd_tensor_data(x), kd_tensor_data(out), outer, reduce, inner,
                      scale);
    return KD_OK;
}

/* g (any shape with the output's numel) read as x's shape, broadcast over the
 * reduced dims, copied out contiguous on g's device. */
static kd_tensor *expand_reduced(kd_tensor *g, const kd_tensor *x, unsigned mask)
{
    kd_tensor *gc = kd_contiguous_raw(g);
    kd_tensor *view = gc ? kd_tensor_alias(gc) : NULL;
    kd_tensor *out = view ? kd_tensor_empty_like(x) : NULL;
    if (!out)
        return NULL;
    int64_t keep[KD_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        keep[d] = (mask & (1u << d)) ? 1 : x->shape[d];
    view->ndim = x->ndim;
    memcpy(view->shape, x->shape, sizeof view->shape);
    kd_contiguous_strides(x->ndim, keep, view->stride);
    for (int d = 0; d < x->ndim; d++)
        if (mask & (1u << d))
            view->stride[d] = 0;
    return kd_tensor_copy_(out, view) == KD_OK ? out : NULL;
}

/* A contiguous tensor's data seen under another shape of the same numel. */
static kd_tensor *view_as_shape(kd_tensor *t, int ndim, const int64_t *shape)
{
    kd_tensor *c = kd_contiguous_raw(t);
    kd_tensor *v = c ? kd_tensor_alias(c) : NULL;
    if (!v)
        return NULL;
    v->ndim = ndim;
    memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
    kd_contiguous_strides(ndim, shape, v->stride);
    return v;
}

/* ------------------------------------------------------------ sum, mean */

static kd_status sum_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    double scale = node->farg[0];
    kd_tensor *gs = scale != 1.0 ? kd_mul_scalar(g, scale) : g;
    kd_tensor *gx = gs ? expand_reduced(gs, x, (unsigned)node->iarg[0]) : NULL;
    return gx ? kd_grad_accumulate_take(x, gx) : KD_ERR_NOMEM;
}

static kd_tensor *sum_impl(const char *op, kd_tensor *x, int ndims, const int *dims,
                           bool keepdim, bool mean)
{
    if (!x || kd_check_float(op, x) != KD_OK)
        return NULL;
    reduce_plan p;
    if (plan_reduce(op, x, ndims, dims, keepdim, &p) != KD_OK)
        return NULL;
    kd_tensor *out = kd_tensor_empty(x->dtype, x->device, p.out_ndim, p.out_shape);
    kd_tensor *cur = out ? kd_contiguous_raw(x) : NULL;
    if (!cur)
        return NULL;
    if (kd_tensor_numel(out) > 0 && (p.count == 0 || p.count == 1)) {
        /* Nothing to add up: an empty sum, or a copy. */
        kd_tensor *src = p.count ? view_as_shape(cur, out->ndim, out->shape) : NULL;
        kd_status st = p.count == 0 ? kd_tensor_fill_(out, mean ? NAN : 0.0)
                                    : src ? kd_tensor_copy_(out, src) : KD_ERR_NOMEM;
        if (st != KD_OK)
            return NULL;
    } else if (kd_tensor_numel(out) > 0) {
        int ng = p.ngroups;
        int64_t gsize[KD_MAX_DIMS];
        bool gred[KD_MAX_DIMS];
        memcpy(gsize, p.gsize, sizeof gsize);
        memcpy(gred, p.greduced, sizeof gred);
        for (;;) {
            int j = ng - 1;
            while (!gred[j])
                j--;
            int64_t outer = kd_shape_numel(j, gsize);
            int64_t inner = kd_shape_numel(ng - j - 1, gsize + j + 1);
            int64_t reduce = gsize[j];
            bool last = true;
            for (int k = 0; k < j; k++)
                last = last && !gred[k];
            int64_t n = outer * inner;
            kd_tensor *next = last ? out : kd_tensor_empty(x->dtype, x->device, 1, &n);
            if (!next || sum_step(op, next, cur, outer, reduce, inner,
                                  mean ? 1.0 / (double)reduce : 1.0) != KD_OK)
                return NULL;
            cur = next;
            if (last)
                break;
            /* Drop group j; its kept neighbours become one group. */
            if (j + 1 < ng) {
                gsize[j - 1] *= gsize[j + 1];
                for (int k = j; k + 2 < ng; k++) {
                    gsize[k] = gsize[k + 2];
                    gred[k] = gred[k + 2];
                }
                ng -= 2;
            } else {
                ng -= 1;
            }
        }
    }
    kd_node *node;
    if (kd_record(op, sum_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->iarg[0] = p.mask;
        node->farg[0] = mean ? 1.0 / (double)p.count : 1.0;
    }
    return out;
}

kd_tensor *kd_sum(kd_tensor *x, int ndims, const int *dims, bool keepdim)
{
    return sum_impl("sum", x, ndims, dims, keepdim, false);
}

kd_tensor *kd_mean(kd_tensor *x, int ndims, const int *dims, bool keepdim)
{
    return sum_impl("mean", x, ndims, dims, keepdim, true);
}

kd_tensor *kd_sum_all(kd_tensor *x) { return sum_impl("sum_all", x, 0, NULL, false, false); }

kd_tensor *kd_mean_all(kd_tensor *x) { return sum_impl("mean_all", x, 0, NULL, false, true); }

/* ------------------------------------------------------------ var */

static kd_status var_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *mean = node->saved[0];
    /* d var / dx = 2 (x - mean) / (count - correction) */
    kd_tensor *gk = view_as_shape(g, mean->ndim, mean->shape);
    kd_tensor *gx = kd_mul(kd_sub(x, mean), kd_mul_scalar(gk, 2.0 / node->farg[0]));
    return gx ? kd_grad_accumulate_take(x, gx) : KD_ERR_NOMEM;
}

kd_tensor *kd_var(kd_tensor *x, int ndims, const int *dims, int correction,
                  bool keepdim)
{
    if (!x || kd_check_float("var", x) != KD_OK)
        return NULL;
    if (kd_backend_check("var", x) != KD_OK)
        return NULL;
    reduce_plan p;
    if (plan_reduce("var", x, ndims, dims, keepdim, &p) != KD_OK)
        return NULL;
    kd_tensor *xc = kd_contiguous_raw(x);
    int nred = 0;
    for (int g = 0; g < p.ngroups; g++)
        nred += p.greduced[g];
    if (xc && nred > 0 && (nred > 1 || !p.greduced[p.ngroups - 1])) {
        /* Gather the reduced dims last: a permuted view, copied. */
        kd_tensor *v = kd_tensor_alias(xc);
        if (!v)
            return NULL;
        int k = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int d = 0; d < x->ndim; d++)
                if (((p.mask >> d) & 1u) == (unsigned)pass) {
                    v->shape[k] = xc->shape[d];
                    v->stride[k++] = xc->stride[d];
                }
        xc = kd_contiguous_raw(v);
    }
    int64_t outer = plan_kept_numel(&p);
    kd_tensor *out = xc ? kd_tensor_empty(x->dtype, KD_CPU, p.out_ndim, p.out_shape) : NULL;
    kd_tensor *mean = out ? kd_tensor_empty(x->dtype, KD_CPU, x->ndim, p.keep_shape) : NULL;
    if (!mean)
        return NULL;
    double divisor = (double)p.count - correction;
    divisor = divisor > 0 ? divisor : 0;
    if (kd_tensor_numel(x) == 0) {
        if (kd_tensor_fill_(out, NAN) != KD_OK)
            return NULL;
    } else {
        kd_cpu_var_rows(x->dtype, kd_tensor_data(xc), kd_tensor_data(out), kd_tensor_data(mean),
                        outer, p.count, divisor);
    }
    kd_node *node;
    if (kd_record("var", var_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = mean;
        node->farg[0] = divisor;
    }
    return out;
}

/* ------------------------------------------------------------ max, min, argmax */

static kd_status extreme_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0], *arg = node->saved[0];
    int64_t outer = node->iarg[0], reduce = node->iarg[1], inner = node->iarg[2];
    kd_tensor *gc = kd_contiguous_raw(g);
    if (x->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        kd_tensor *gx = gc ? kd_tensor_empty_like(x) : NULL; /* zero-filled there */
        if (!gx)
            return KD_ERR_NOMEM;
        kd_status st = kd_cuda_extreme_backward(gx, gc, arg, outer, reduce, inner);
        return st != KD_OK ? st : kd_grad_accumulate_take(x, gx);
#else
        return kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", node->op);
#endif
    }
    kd_tensor *gx = gc ? kd_tensor_zeros_like(x) : NULL;
    if (!gx)
        return KD_ERR_NOMEM;
    kd_cpu_extreme_backward(x->dtype, kd_tensor_data(gx), kd_tensor_data(gc), kd_tensor_data(arg),
                            outer, reduce, inner);
    return kd_grad_accumulate_take(x, gx);
}

/* Values (out, may be NULL) and indices (arg, may be NULL) of the extreme
 * along one dim; *out_dims receives the [outer, reduce, inner] view. */
static kd_status extreme_run(const char *op, kd_tensor *x, int dim, bool keepdim,
                             bool is_min, bool want_values, bool want_index,
                             kd_tensor **values, kd_tensor **index, int64_t *dims3)
{
    int d;
    if (kd_check_float(op, x) != KD_OK || kd_norm_dim(op, x->ndim, dim, &d) != KD_OK)
        return KD_ERR_INVALID;
    reduce_plan p;
    if (plan_reduce(op, x, 1, &d, keepdim, &p) != KD_OK)
        return KD_ERR_INVALID;
    int64_t reduce = x->ndim ? x->shape[d] : 1;
    if (reduce == 0)
        return kd_error(KD_ERR_INVALID, "%s: dim %d has size 0", op, d);
    int64_t outer = kd_shape_numel(d, x->shape);
    int64_t inner = x->ndim ? kd_shape_numel(x->ndim - d - 1, x->shape + d + 1) : 1;
    kd_tensor *xc = kd_contiguous_raw(x);
    kd_tensor *v = xc && want_values
                       ? kd_tensor_empty(x->dtype, x->device, p.out_ndim, p.out_shape)
                       : NULL;
    kd_tensor *a = xc && want_index
                       ? kd_tensor_empty(KD_I64, x->device, p.out_ndim, p.out_shape)
                       : NULL;
    if (!xc || (want_values && !v) || (want_index && !a))
        return KD_ERR_NOMEM;
    if (x->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        kd_tensor *vals = v;
        if (!vals) /* the backend always writes values */
            vals = kd_tensor_empty(x->dtype, KD_CUDA, p.out_ndim, p.out_shape);
        kd_status st = vals ? kd_cuda_reduce_max(vals, a, xc, outer, reduce, inner, is_min)
                            : KD_ERR_NOMEM;
        if (st != KD_OK)
            return st;
#else
        return kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", op);
#endif
    } else if (outer * inner > 0) {
        kd_cpu_reduce_max(x->dtype, kd_tensor_data(xc), v ? kd_tensor_data(v) : NULL,
                          a ? kd_tensor_data(a) : NULL, outer, reduce, inner, is_min);
    }
    *values = v;
    *index = a;
    dims3[0] = outer;
    dims3[1] = reduce;
    dims3[2] = inner;
    return KD_OK;
}

static kd_tensor *extreme(const char *op, kd_tensor *x, int dim, bool keepdim, bool is_min)
{
    if (!x)
        return NULL;
    bool grad = kd_needs_grad(1, &x);
    kd_tensor *v = NULL, *a = NULL;
    int64_t dims3[3];
    if (extreme_run(op, x, dim, keepdim, is_min, true, grad, &v, &a, dims3) != KD_OK)
        return NULL;
    kd_node *node;
    if (kd_record(op, extreme_backward, v, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = a;
        memcpy(node->iarg, dims3, sizeof dims3);
    }
    return v;
}

kd_tensor *kd_max(kd_tensor *x, int dim, bool keepdim)
{
    return extreme("max", x, dim, keepdim, false);
}

kd_tensor *kd_min(kd_tensor *x, int dim, bool keepdim)
{
    return extreme("min", x, dim, keepdim, true);
}

kd_tensor *kd_argmax(kd_tensor *x, int dim, bool keepdim)
{
    if (!x)
        return NULL;
    kd_tensor *v = NULL, *a = NULL;
    int64_t dims3[3];
    if (extreme_run("argmax", x, dim, keepdim, false, false, true, &v, &a, dims3) != KD_OK)
        return NULL;
    return a;
}
