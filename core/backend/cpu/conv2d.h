/* The CPU convolution's kernel families as cpu/conv2d.c chooses among
 * them: the direct depthwise kernel, im2col + GEMM for any float dtype, and
 * oneDNN for f32 when the build has it. Buffers are contiguous: x [N, Cin,
 * H, W], weight [Cout, Cin/groups, kH, kW], y [N, Cout, oH, oW]. */
#ifndef KD_CPU_CONV2D_H
#define KD_CPU_CONV2D_H

#include "cpu.h"

/* groups == Cin == Cout: one small filter per channel. */
bool kd_conv2d_depthwise_applies(const kd_conv2d_geom *g);
kd_status kd_conv2d_depthwise_forward(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                      const void *w, const void *bias, void *y);
kd_status kd_conv2d_depthwise_backward_data(kd_dtype dt, const kd_conv2d_geom *g,
                                            const void *gy, const void *w, void *gx);
kd_status kd_conv2d_depthwise_backward_weights(kd_dtype dt, const kd_conv2d_geom *g,
                                               const void *x, const void *gy, void *gw,
                                               void *gbias);

/* y = conv(x, w) + bias (bias NULL: none). */
kd_status kd_conv2d_im2col_forward(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                   const void *w, const void *bias, void *y);
/* gx = the gradient of the input, overwritten. */
kd_status kd_conv2d_im2col_backward_data(kd_dtype dt, const kd_conv2d_geom *g, const void *gy,
                                         const void *w, void *gx);
/* gw (and gbias unless NULL) = the gradients of weight and bias, overwritten. */
kd_status kd_conv2d_im2col_backward_weights(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                            const void *gy, void *gw, void *gbias);

#ifdef KD_HAVE_DNNL
/* The same three on oneDNN, f32 only. They return KD_ERR_UNSUPPORTED when
 * oneDNN has no implementation for the problem, so the caller can fall back
 * to im2col. `training` picks forward_training over forward_inference. */
kd_status kd_conv2d_dnnl_forward(const kd_conv2d_geom *g, const float *x, const float *w,
                                 const float *bias, float *y, bool training);
kd_status kd_conv2d_dnnl_backward_data(const kd_conv2d_geom *g, const float *gy, const float *w,
                                       float *gx);
kd_status kd_conv2d_dnnl_backward_weights(const kd_conv2d_geom *g, const float *x,
                                          const float *gy, float *gw, float *gbias);

/* What the primitive cache holds and has done, for tests and benchmarks. */
typedef struct kd_conv2d_dnnl_stats {
    int64_t calls;         /* convolutions run */
    int64_t created;       /* primitives made (a miss) */
    int64_t evicted;       /* entries dropped to make room */
    int64_t entries;       /* live entries now */
    size_t scratch_bytes;  /* the shared reorder buffer's size */
} kd_conv2d_dnnl_stats;
void kd_conv2d_dnnl_stats_get(kd_conv2d_dnnl_stats *out);
#endif

#endif
