/* Batched f32 matrix products on oneDNN (builds with oneDNN only). */
#ifndef KD_CPU_MATMUL_DNNL_H
#define KD_CPU_MATMUL_DNNL_H

#include "cpu.h"

/* For each of `batch` entries, c = alpha op(a) op(b), with op(a) [m, k]
 * and op(b) [k, n]; entries are contiguous and follow each other (a: m*k
 * floats apart, b: k*n, c: m*n); a transposed entry is stored [k, m]
 * (or [n, k] for b). KD_ERR_UNSUPPORTED when oneDNN cannot run the
 * problem, so the caller can use BLAS instead. */
kd_status kd_dnnl_batched_gemm(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n,
                               int64_t k, double alpha, const float *a, const float *b, float *c);

#endif
