/* kd_conv2d: shape checks, the choice of kernel, and the backward pass.
 * f32 runs on oneDNN when the build has it; f64 (the gradient check) and
 * builds without oneDNN run im2col + GEMM (conv2d_im2col.c). */
#include <string.h>

#include "conv2d_internal.h"

static kd_status forward(const kd_conv2d_geom *g, kd_tensor *x, kd_tensor *w, kd_tensor *b,
                         kd_tensor *y, bool training)
{
#ifdef KD_HAVE_DNNL
    if (x->dtype == KD_F32) {
        kd_status st = kd_conv2d_dnnl_forward(g, x, w, b, y, training);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#else
    (void)training;
#endif
    return kd_conv2d_im2col_forward(g, x, w, b, y);
}

static kd_status backward_data(const kd_conv2d_geom *g, kd_tensor *gy, kd_tensor *w,
                               kd_tensor *gx)
{
#ifdef KD_HAVE_DNNL
    if (gy->dtype == KD_F32) {
        kd_status st = kd_conv2d_dnnl_backward_data(g, gy, w, gx);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    return kd_conv2d_im2col_backward_data(g, gy, w, gx);
}

static kd_status backward_weights(const kd_conv2d_geom *g, kd_tensor *x, kd_tensor *gy,
                                  kd_tensor *gw, kd_tensor *gb)
{
#ifdef KD_HAVE_DNNL
    if (x->dtype == KD_F32) {
        kd_status st = kd_conv2d_dnnl_backward_weights(g, x, gy, gw, gb);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    return kd_conv2d_im2col_backward_weights(g, x, gy, gw, gb);
}

/* The geometry of x and w under the node's attributes. */
static kd_conv2d_geom geom_of(const kd_tensor *x, const kd_tensor *w, const int64_t *attr)
{
    kd_conv2d_geom g = {
        .n = x->shape[0], .cin = x->shape[1], .h = x->shape[2], .w = x->shape[3],
        .cout = w->shape[0], .kh = w->shape[2], .kw = w->shape[3],
        .stride = {attr[0], attr[1]}, .pad = {attr[2], attr[3]},
        .dil = {attr[4], attr[5]}, .groups = attr[6]};
    g.oh = (g.h + 2 * g.pad[0] - g.dil[0] * (g.kh - 1) - 1) / g.stride[0] + 1;
    g.ow = (g.w + 2 * g.pad[1] - g.dil[1] * (g.kw - 1) - 1) / g.stride[1] + 1;
    return g;
}

static kd_status conv2d_backward(kd_node *node, kd_tensor *gy)
{
    kd_tensor *x = node->saved[0], *w = node->saved[1];
    kd_tensor *tx = node->inputs[0], *tw = node->inputs[1];
    kd_tensor *tb = node->n_inputs > 2 ? node->inputs[2] : NULL;
    kd_conv2d_geom g = geom_of(x, w, node->iarg);
    kd_status st;
    if (tx->requires_grad) {
        kd_tensor *gx = kd_tensor_empty_like(x);
        if (!gx)
            return KD_ERR_NOMEM;
        st = backward_data(&g, gy, w, gx);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tx, gx);
        if (st != KD_OK)
            return st;
    }
    bool want_b = tb && tb->requires_grad;
    if (tw->requires_grad || want_b) {
        kd_tensor *gw = kd_tensor_empty_like(w);
        kd_tensor *gb = want_b ? kd_tensor_empty_like(tb) : NULL;
        if (!gw || (want_b && !gb))
            return KD_ERR_NOMEM;
        st = backward_weights(&g, x, gy, gw, gb);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tw, gw);
        if (st == KD_OK && want_b)
            st = kd_grad_accumulate_take(tb, gb);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

/* Checks the operands and parameters; fills attr (stride, padding,
 * dilation, groups) and the geometry. */
static kd_status check(const kd_tensor *x, const kd_tensor *w, const kd_tensor *b,
                       const kd_conv2d_params *p, int64_t *attr, kd_conv2d_geom *g)
{
    const char *op = "conv2d";
    kd_status st = kd_check_float(op, x);
    if (st == KD_OK)
        st = kd_check_float(op, w);
    if (st == KD_OK)
        st = kd_check_same(op, x, w);
    if (st == KD_OK && b) {
        st = kd_check_float(op, b);
        if (st == KD_OK)
            st = kd_check_same(op, x, b);
    }
    if (st != KD_OK)
        return st;
    if (!p)
        return kd_error(KD_ERR_INVALID, "conv2d: NULL params");
    if (x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "conv2d: CUDA tensors are not supported yet");
    char sx[96], sw[96], sb[96];
    kd_shape_str(x, sx, sizeof sx);
    kd_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4 || w->ndim != 4)
        return kd_error(KD_ERR_INVALID,
                        "conv2d: input %s and weight %s must be 4-D (NCHW and OIHW)", sx, sw);
    for (int i = 0; i < 2; i++)
        if (p->stride[i] < 1 || p->dilation[i] < 1 || p->padding[i] < 0)
            return kd_error(KD_ERR_INVALID,
                            "conv2d: stride (%d, %d), padding (%d, %d), dilation (%d, %d): "
                            "strides and dilations must be >= 1, padding >= 0",
                            p->stride[0], p->stride[1], p->padding[0], p->padding[1],
                            p->dilation[0], p->dilation[1]);
    int64_t groups = p->groups;
    if (groups < 1 || x->shape[1] % groups != 0 || w->shape[0] % groups != 0)
        return kd_error(KD_ERR_INVALID,
                        "conv2d: groups %d must divide the input channels of %s and the "
                        "output channels of weight %s", p->groups, sx, sw);
    if (w->shape[1] * groups != x->shape[1])
        return kd_error(KD_ERR_INVALID,
                        "conv2d: weight %s needs %lld input channels per group; input %s "
                        "has %lld channels in %lld groups",
                        sw, (long long)w->shape[1], sx, (long long)x->shape[1],
                        (long long)groups);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return kd_error(KD_ERR_INVALID, "conv2d: bias %s for weight %s ([%lld] expected)",
                        kd_shape_str(b, sb, sizeof sb), sw, (long long)w->shape[0]);
    int64_t a[7] = {p->stride[0], p->stride[1], p->padding[0], p->padding[1],
                    p->dilation[0], p->dilation[1], groups};
    memcpy(attr, a, sizeof a);
    *g = geom_of(x, w, attr);
    if (w->shape[2] < 1 || w->shape[3] < 1 ||
        g->h + 2 * g->pad[0] < g->dil[0] * (g->kh - 1) + 1 ||
        g->w + 2 * g->pad[1] < g->dil[1] * (g->kw - 1) + 1)
        return kd_error(KD_ERR_INVALID,
                        "conv2d: the %lldx%lld kernel (dilation %lld, %lld) of weight %s is "
                        "larger than input %s padded by (%lld, %lld)",
                        (long long)g->kh, (long long)g->kw, (long long)g->dil[0],
                        (long long)g->dil[1], sw, sx, (long long)g->pad[0],
                        (long long)g->pad[1]);
    return KD_OK;
}

kd_tensor *kd_conv2d(kd_tensor *x, kd_tensor *weight, kd_tensor *bias,
                     const kd_conv2d_params *p)
{
    if (!x || !weight)
        return NULL;
    int64_t attr[7];
    kd_conv2d_geom g;
    if (check(x, weight, bias, p, attr, &g) != KD_OK)
        return NULL;
    kd_tensor *xc = kd_contiguous_raw(x), *wc = kd_contiguous_raw(weight);
    kd_tensor *bc = bias ? kd_contiguous_raw(bias) : NULL;
    int64_t shape[4] = {g.n, g.cout, g.oh, g.ow};
    kd_tensor *y = xc && wc && (bc || !bias) ? kd_tensor_empty(x->dtype, KD_CPU, 4, shape)
                                             : NULL;
    kd_tensor *inputs[3] = {x, weight, bias};
    int n_inputs = bias ? 3 : 2;
    if (!y || forward(&g, xc, wc, bc, y, kd_needs_grad(n_inputs, inputs)) != KD_OK)
        return NULL;
    kd_node *node;
    if (kd_record("conv2d", conv2d_backward, y, n_inputs, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = wc;
        memcpy(node->iarg, attr, sizeof attr);
    }
    return y;
}
