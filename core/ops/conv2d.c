/* kd_conv2d: shape checks and the autograd record. The kernels (direct
 * depthwise, oneDNN, im2col + GEMM) are in core/backend/cpu/conv2d.c. */
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

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
        st = kd_cpu_conv2d_backward_data(x->dtype, &g, kd_tensor_data(gy), kd_tensor_data(w),
                                         kd_tensor_data(gx));
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
        st = kd_cpu_conv2d_backward_weights(x->dtype, &g, kd_tensor_data(x), kd_tensor_data(gy),
                                            kd_tensor_data(gw), gb ? kd_tensor_data(gb) : NULL);
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
    if (kd_backend_check(op, x) != KD_OK)
        return KD_ERR_UNSUPPORTED;
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
    if (!y || kd_cpu_conv2d_forward(x->dtype, &g, kd_tensor_data(xc), kd_tensor_data(wc),
                                    bc ? kd_tensor_data(bc) : NULL, kd_tensor_data(y),
                                    kd_needs_grad(n_inputs, inputs)) != KD_OK)
        return NULL;
    kd_macs_add(kd_tensor_numel(y) * (g.cin / g.groups) * g.kh * g.kw);
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
