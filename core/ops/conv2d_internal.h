/* The 2-D convolution's kernels as conv2d.c sees them: im2col + GEMM for
 * any float dtype, and oneDNN for f32 when the build has it. Tensors are
 * contiguous CPU tensors of one dtype: x [N, Cin, H, W], weight
 * [Cout, Cin/groups, kH, kW], y [N, Cout, oH, oW]. */
#ifndef KD_CONV2D_INTERNAL_H
#define KD_CONV2D_INTERNAL_H

#include "../internal.h"

/* Every size of one convolution problem. All fields are int64 so the
 * struct has no padding and compares with memcmp. */
typedef struct kd_conv2d_geom {
    int64_t n, cin, h, w;
    int64_t cout, kh, kw;
    int64_t oh, ow;
    int64_t stride[2], pad[2], dil[2];
    int64_t groups;
} kd_conv2d_geom;

/* y = conv(x, w) + bias (bias NULL: none). */
kd_status kd_conv2d_im2col_forward(const kd_conv2d_geom *g, const kd_tensor *x,
                                   const kd_tensor *w, const kd_tensor *bias, kd_tensor *y);
/* gx = the gradient of the input, overwritten. */
kd_status kd_conv2d_im2col_backward_data(const kd_conv2d_geom *g, const kd_tensor *gy,
                                         const kd_tensor *w, kd_tensor *gx);
/* gw (and gbias unless NULL) = the gradients of weight and bias, overwritten. */
kd_status kd_conv2d_im2col_backward_weights(const kd_conv2d_geom *g, const kd_tensor *x,
                                            const kd_tensor *gy, kd_tensor *gw,
                                            kd_tensor *gbias);

#ifdef KD_HAVE_DNNL
/* The same three on oneDNN, f32 only. They return KD_ERR_UNSUPPORTED when
 * oneDNN has no implementation for the problem, so the caller can fall back
 * to im2col. `training` picks forward_training over forward_inference. */
kd_status kd_conv2d_dnnl_forward(const kd_conv2d_geom *g, const kd_tensor *x,
                                 const kd_tensor *w, const kd_tensor *bias, kd_tensor *y,
                                 bool training);
kd_status kd_conv2d_dnnl_backward_data(const kd_conv2d_geom *g, const kd_tensor *gy,
                                       const kd_tensor *w, kd_tensor *gx);
kd_status kd_conv2d_dnnl_backward_weights(const kd_conv2d_geom *g, const kd_tensor *x,
                                          const kd_tensor *gy, kd_tensor *gw,
                                          kd_tensor *gbias);
#endif

#endif
