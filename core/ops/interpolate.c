/* Resizing NCHW planes (kd_interpolate): nearest, bilinear and bicubic,
 * plain or antialiased, as torch's F.interpolate with align_corners
 * false. The front checks and records; the kernels are in
 * core/backend/cpu/interpolate.c. */
#include "../backend/backend.h"
#include "../backend/cpu/cpu.h"
#include "../internal.h"

static const char *const mode_names[] = {"nearest", "bilinear", "bicubic"};

/* iarg layout of a recorded resize. */
enum { A_MODE, A_ANTIALIAS, A_OH, A_OW };

static kd_interp_params params_of(const kd_tensor *x, const int64_t *a)
{
    return (kd_interp_params){(kd_interp_mode)a[A_MODE], a[A_ANTIALIAS] != 0,
                              x->shape[0] * x->shape[1], x->shape[2], x->shape[3],
                              a[A_OH], a[A_OW]};
}

static kd_status interpolate_backward(kd_node *node, kd_tensor *gy)
{
    kd_tensor *x = node->inputs[0];
    kd_interp_params p = params_of(x, node->iarg);
    kd_tensor *gx = kd_tensor_empty(x->dtype, KD_CPU, 4, x->shape);
    if (!gx)
        return KD_ERR_NOMEM;
    kd_status st = kd_cpu_interpolate_backward(x->dtype, &p, kd_tensor_data(gy),
                                               kd_tensor_data(gx));
    return st == KD_OK ? kd_grad_accumulate_take(x, gx) : st;
}

kd_tensor *kd_interpolate(kd_tensor *x, int out_h, int out_w, kd_interp_mode mode,
                          bool antialias)
{
    if (!x)
        return NULL;
    if (kd_check_float("interpolate", x) != KD_OK || kd_backend_check("interpolate", x) != KD_OK)
        return NULL;
    if ((int)mode < 0 || (int)mode > KD_INTERP_BICUBIC) {
        kd_error(KD_ERR_INVALID, "interpolate: unknown mode %d", (int)mode);
        return NULL;
    }
    if (antialias && mode == KD_INTERP_NEAREST) {
        kd_error(KD_ERR_INVALID, "interpolate: antialias applies to bilinear and bicubic, "
                 "not nearest");
        return NULL;
    }
    char sx[96];
    if (x->ndim != 4 || x->shape[2] < 1 || x->shape[3] < 1) {
        kd_error(KD_ERR_INVALID, "interpolate: input %s must be 4-D (NCHW) with H, W >= 1",
                 kd_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    if (out_h < 1 || out_w < 1) {
        kd_error(KD_ERR_INVALID, "interpolate: output size (%d, %d) must be >= 1", out_h, out_w);
        return NULL;
    }
    kd_tensor *xc = kd_contiguous_raw(x);
    int64_t shape[4] = {x->shape[0], x->shape[1], out_h, out_w};
    kd_tensor *y = xc ? kd_tensor_empty(x->dtype, KD_CPU, 4, shape) : NULL;
    if (!y)
        return NULL;
    int64_t a[A_OW + 1] = {mode, antialias, out_h, out_w};
    kd_interp_params p = params_of(x, a);
    kd_status st = kd_cpu_interpolate_forward(x->dtype, &p, kd_tensor_data(xc), kd_tensor_data(y));
    if (st != KD_OK) {
        kd_error_wrap(st, "interpolate (%s)", mode_names[mode]);
        return NULL;
    }
    kd_node *node;
    if (kd_record("interpolate", interpolate_backward, y, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        for (int i = 0; i <= A_OW; i++)
            node->iarg[i] = a[i];
    return y;
}
