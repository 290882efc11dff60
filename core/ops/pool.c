/* 2-D pooling over NCHW planes: max, average and adaptive average. The
 * fronts check the window parameters and record the op; the kernels are
 * in core/backend/cpu/pool.c. */
#include <string.h>

#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

static const char *const pool_names[] = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"};

/* iarg layout of a recorded pool. */
enum { A_KIND, A_KH, A_KW, A_SH, A_SW, A_PH, A_PW, A_INCLUDE_PAD, A_OH, A_OW };

/* The kernels' parameters from a recorded pool's iarg and its input. */
static kd_pool_params params_of(const kd_tensor *x, const int64_t *a)
{
    return (kd_pool_params){
        .kind = (kd_pool_kind)a[A_KIND], .planes = x->shape[0] * x->shape[1],
        .h = x->shape[2], .w = x->shape[3], .oh = a[A_OH], .ow = a[A_OW],
        .kh = a[A_KH], .kw = a[A_KW], .sh = a[A_SH], .sw = a[A_SW],
        .ph = a[A_PH], .pw = a[A_PW], .include_pad = a[A_INCLUDE_PAD] != 0,
    };
}

static kd_status pool_backward(kd_node *node, kd_tensor *gy)
{
    kd_tensor *x = node->inputs[0];
    kd_pool_params p = params_of(x, node->iarg);
    kd_tensor *gx = kd_tensor_empty(x->dtype, KD_CPU, 4, x->shape);
    if (!gx)
        return KD_ERR_NOMEM;
    kd_status st = kd_cpu_pool_backward(x->dtype, &p, kd_tensor_data(gy), node->ctx,
                                        kd_tensor_data(gx));
    return st == KD_OK ? kd_grad_accumulate_take(x, gx) : st;
}

/* Checks x, makes the output, runs the forward and records it. */
static kd_tensor *pool(kd_tensor *x, int64_t *a)
{
    const char *op = pool_names[a[A_KIND]];
    if (kd_check_float(op, x) != KD_OK)
        return NULL;
    char sx[96];
    if (kd_backend_check(op, x) != KD_OK)
        return NULL;
    if (x->ndim != 4) {
        kd_error(KD_ERR_INVALID, "%s: input %s must be 4-D (NCHW)", op,
                 kd_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    if (x->shape[2] * x->shape[3] > INT32_MAX) {
        kd_error(KD_ERR_UNSUPPORTED, "%s: input %s has planes over 2^31 elements", op,
                 kd_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    kd_tensor *xc = kd_contiguous_raw(x);
    int64_t shape[4] = {x->shape[0], x->shape[1], a[A_OH], a[A_OW]};
    kd_tensor *y = xc ? kd_tensor_empty(x->dtype, KD_CPU, 4, shape) : NULL;
    if (!y)
        return NULL;
    kd_node *node;
    if (kd_record(op, pool_backward, y, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        memcpy(node->iarg, a, (A_OW + 1) * sizeof *a);
    int32_t *argmax = NULL;
    if (node && a[A_KIND] == KD_POOL_MAX) {
        argmax = kd_node_ctx(node, (size_t)kd_tensor_numel(y) * sizeof *argmax + 1);
        if (!argmax) {
            kd_error(KD_ERR_NOMEM, "%s: out of host memory", op);
            return NULL;
        }
    }
    kd_pool_params p = params_of(x, a);
    if (kd_cpu_pool_forward(x->dtype, &p, kd_tensor_data(xc), kd_tensor_data(y), argmax) != KD_OK)
        return NULL;
    return y;
}

/* Checks a windowed pool's parameters and runs it. */
static kd_tensor *windowed(kd_pool_kind kind, kd_tensor *x, const int kernel[2],
                           const int stride[2], const int padding[2], bool include_pad)
{
    if (!x)
        return NULL;
    const char *op = pool_names[kind];
    if (!kernel) {
        kd_error(KD_ERR_INVALID, "%s: NULL kernel size", op);
        return NULL;
    }
    int s[2] = {stride ? stride[0] : kernel[0], stride ? stride[1] : kernel[1]};
    int p[2] = {padding ? padding[0] : 0, padding ? padding[1] : 0};
    for (int i = 0; i < 2; i++) {
        if (kernel[i] < 1 || s[i] < 1 || p[i] < 0 || p[i] > kernel[i] / 2) {
            kd_error(KD_ERR_INVALID,
                     "%s: kernel (%d, %d), stride (%d, %d), padding (%d, %d): kernel and "
                     "stride must be >= 1 and padding at most half the kernel",
                     op, kernel[0], kernel[1], s[0], s[1], p[0], p[1]);
            return NULL;
        }
    }
    if (x->ndim == 4 && (x->shape[2] + 2 * p[0] < kernel[0] ||
                         x->shape[3] + 2 * p[1] < kernel[1])) {
        char sx[96];
        kd_error(KD_ERR_INVALID, "%s: kernel (%d, %d) is larger than input %s padded by (%d, %d)",
                 op, kernel[0], kernel[1], kd_shape_str(x, sx, sizeof sx), p[0], p[1]);
        return NULL;
    }
    int64_t a[A_OW + 1] = {kind, kernel[0], kernel[1], s[0], s[1], p[0], p[1], include_pad};
    if (x->ndim == 4) {
        a[A_OH] = (x->shape[2] + 2 * p[0] - kernel[0]) / s[0] + 1;
        a[A_OW] = (x->shape[3] + 2 * p[1] - kernel[1]) / s[1] + 1;
    }
    return pool(x, a);
}

kd_tensor *kd_max_pool2d(kd_tensor *x, const int kernel[2], const int stride[2],
                         const int padding[2])
{
    return windowed(KD_POOL_MAX, x, kernel, stride, padding, false);
}

kd_tensor *kd_avg_pool2d(kd_tensor *x, const int kernel[2], const int stride[2],
                         const int padding[2], bool count_include_pad)
{
    return windowed(KD_POOL_AVG, x, kernel, stride, padding, count_include_pad);
}

kd_tensor *kd_adaptive_avg_pool2d(kd_tensor *x, int out_h, int out_w)
{
    if (!x)
        return NULL;
    if (out_h < 1 || out_w < 1) {
        kd_error(KD_ERR_INVALID, "adaptive_avg_pool2d: output size (%d, %d) must be >= 1",
                 out_h, out_w);
        return NULL;
    }
    int64_t a[A_OW + 1] = {KD_POOL_ADAPTIVE};
    a[A_OH] = out_h;
    a[A_OW] = out_w;
    return pool(x, a);
}
