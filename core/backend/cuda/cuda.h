/* The CUDA backend as the core sees it. Compiled only with CUDA
 * (KD_HAVE_CUDA); every pointer here is a device pointer and every tensor
 * argument is contiguous unless stated. Functions return KD_ERR_DEVICE with
 * the CUDA error string when the runtime fails. */
#ifndef KD_CUDA_BACKEND_H
#define KD_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../internal.h"

/* The answer is probed once (cudaGetDeviceCount) and cached; false, never a
 * crash, without a GPU or driver. */
bool kd_cuda_available(void);
/* Why kd_cuda_available() is false; "" when it is true. */
const char *kd_cuda_unavailable_reason(void);
/* "NVIDIA H100 80GB HBM3, compute capability 9.0, 79.1 GiB"; "" without one. */
const char *kd_cuda_device_description(void);
/* Device memory through a caching allocator: freed blocks are kept by size
 * class for reuse; the cache is returned to the driver when an allocation
 * fails, at exit, or by kd_cuda_release_cache(). Thread-safe. */
kd_status kd_cuda_alloc(void **ptr, size_t bytes);
void kd_cuda_free(void *ptr);
void kd_cuda_release_cache(void);
/* Waits for the device's queued work; reports a kernel's failure. */
kd_status kd_cuda_synchronize(void);
typedef enum kd_copy_kind { KD_COPY_H2D, KD_COPY_D2H, KD_COPY_D2D } kd_copy_kind;
kd_status kd_cuda_memcpy(void *dst, const void *src, size_t bytes, kd_copy_kind kind);
/* dst contiguous; src any strides; same shape and dtype, both on CUDA. */
kd_status kd_cuda_copy_strided(kd_tensor *dst, const kd_tensor *src);
/* dst and src contiguous, same shape, both on CUDA; float dtypes convert. */
kd_status kd_cuda_cast(kd_tensor *dst, const kd_tensor *src);
kd_status kd_cuda_fill(kd_tensor *t, double value);

/* out = a op b; a and b contiguous, broadcast to out's shape. */
kd_status kd_cuda_binary(kd_binary_op op, kd_tensor *out, const kd_tensor *a,
                         const kd_tensor *b);
/* out = f(x), same shape. */
kd_status kd_cuda_unary(kd_unary_op op, kd_tensor *out, const kd_tensor *x,
                        double p0, double p1);
/* grad_x = grad_y * f'(x) (y = f(x) given for ops that use it). */
kd_status kd_cuda_unary_backward(kd_unary_op op, kd_tensor *grad_x,
                                 const kd_tensor *grad_y, const kd_tensor *x,
                                 const kd_tensor *y, double p0, double p1);
/* x viewed as [outer, reduce, inner]; out [outer, inner]. sum scales by
 * `scale` (1 for sum, 1/reduce for mean). max/min also write I64 argidx
 * (may be NULL). */
kd_status kd_cuda_reduce_sum(kd_tensor *out, const kd_tensor *x, int64_t outer,
                             int64_t reduce, int64_t inner, double scale);
kd_status kd_cuda_reduce_max(kd_tensor *out, kd_tensor *argidx,
                             const kd_tensor *x, int64_t outer, int64_t reduce,
                             int64_t inner, bool is_min);
/* The gradient of max/min: grad_x [outer, reduce, inner] is zero except
 * grad_x[o, argidx[o, i], i] = grad_out[o, i]. */
kd_status kd_cuda_extreme_backward(kd_tensor *grad_x, const kd_tensor *grad_out,
                                   const kd_tensor *argidx, int64_t outer,
                                   int64_t reduce, int64_t inner);
/* Row-major batched GEMM: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b]. */
kd_status kd_cuda_gemm(kd_dtype dtype, bool trans_a, bool trans_b, int64_t m,
                       int64_t n, int64_t k, double alpha, const void *a,
                       int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                       int64_t stride_b, double beta, void *c, int64_t ldc,
                       int64_t stride_c, int64_t batch);

#endif
