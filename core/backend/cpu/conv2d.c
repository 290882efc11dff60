/* The CPU convolution (cpu.h): depthwise convolutions run the direct
 * kernel (conv2d_depthwise.c) in every dtype; others run on oneDNN in f32
 * when the build has it; f64 (the gradient check) and builds without
 * oneDNN run im2col + GEMM (conv2d_im2col.c). */
#include "conv2d.h"

kd_status kd_cpu_conv2d_forward(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                const void *w, const void *bias, void *y, bool training)
{
    if (kd_conv2d_depthwise_applies(g))
        return kd_conv2d_depthwise_forward(dt, g, x, w, bias, y);
#ifdef KD_HAVE_DNNL
    if (dt == KD_F32) {
        kd_status st = kd_conv2d_dnnl_forward(g, x, w, bias, y, training);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#else
    (void)training;
#endif
    return kd_conv2d_im2col_forward(dt, g, x, w, bias, y);
}

kd_status kd_cpu_conv2d_backward_data(kd_dtype dt, const kd_conv2d_geom *g, const void *gy,
                                      const void *w, void *gx)
{
    if (kd_conv2d_depthwise_applies(g))
        return kd_conv2d_depthwise_backward_data(dt, g, gy, w, gx);
#ifdef KD_HAVE_DNNL
    if (dt == KD_F32) {
        kd_status st = kd_conv2d_dnnl_backward_data(g, gy, w, gx);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    return kd_conv2d_im2col_backward_data(dt, g, gy, w, gx);
}

kd_status kd_cpu_conv2d_backward_weights(kd_dtype dt, const kd_conv2d_geom *g, const void *x,
                                         const void *gy, void *gw, void *gbias)
{
    if (kd_conv2d_depthwise_applies(g))
        return kd_conv2d_depthwise_backward_weights(dt, g, x, gy, gw, gbias);
#ifdef KD_HAVE_DNNL
    if (dt == KD_F32) {
        kd_status st = kd_conv2d_dnnl_backward_weights(g, x, gy, gw, gbias);
        if (st != KD_ERR_UNSUPPORTED)
            return st;
    }
#endif
    return kd_conv2d_im2col_backward_weights(dt, g, x, gy, gw, gbias);
}
