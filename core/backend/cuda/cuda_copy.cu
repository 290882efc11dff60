/* Copies on the device: strided gathers into contiguous memory, dtype
 * conversion and fill. */
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_kernel.h"

/* A source layout with size-1 dims dropped and mergeable dims merged. */
struct strided_layout {
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    int64_t stride[KD_MAX_DIMS];
};

static strided_layout collapse_layout(const kd_tensor *t)
{
    strided_layout l;
    l.ndim = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 1)
            continue;
        int last = l.ndim - 1;
        if (last >= 0 && l.stride[last] == t->stride[d] * t->shape[d]) {
            l.shape[last] *= t->shape[d];
            l.stride[last] = t->stride[d];
        } else {
            l.shape[l.ndim] = t->shape[d];
            l.stride[l.ndim] = t->stride[d];
            l.ndim++;
        }
    }
    return l;
}

template <typename T>
__global__ void gather_strided(T *dst, const T *src, strided_layout l, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t rem = i, off = 0;
        for (int d = l.ndim - 1; d >= 0; d--) {
            int64_t q = rem / l.shape[d];
            off += (rem - q * l.shape[d]) * l.stride[d];
            rem = q;
        }
        dst[i] = src[off];
    }
}

template <typename T>
static void launch_gather(void *dst, const void *src, const strided_layout &l, int64_t n)
{
    gather_strided<T><<<grid_for(n, KD_BLOCK), KD_BLOCK>>>((T *)dst, (const T *)src, l, n);
}

extern "C" kd_status kd_cuda_copy_strided(kd_tensor *dst, const kd_tensor *src)
{
    if (dst->dtype != src->dtype || !kd_tensor_same_shape(dst, src) ||
        !kd_tensor_is_contiguous(dst))
        return kd_error(KD_ERR_INVALID,
                        "cuda copy: needs a contiguous destination of the same "
                        "shape and dtype (%s into %s)",
                        dtype_name(src->dtype), dtype_name(dst->dtype));
    int64_t n = kd_tensor_numel(dst);
    if (n == 0)
        return KD_OK;
    size_t elem = kd_dtype_size(src->dtype);
    strided_layout l = collapse_layout(src);
    if (l.ndim == 0 || (l.ndim == 1 && l.stride[0] == 1))
        return kd_cuda_memcpy(kd_tensor_data(dst), kd_tensor_data(src),
                              (size_t)n * elem, KD_COPY_D2D);
    void *d = kd_tensor_data(dst);
    const void *s = kd_tensor_data(src);
    switch (elem) {
    case 1: launch_gather<uint8_t>(d, s, l, n); break;
    case 2: launch_gather<uint16_t>(d, s, l, n); break;
    case 4: launch_gather<uint32_t>(d, s, l, n); break;
    default: launch_gather<uint64_t>(d, s, l, n); break;
    }
    return launch_status("a strided copy");
}

/* Conversions follow the CPU's kd_tensor_copy_: between integer types
 * through int64, otherwise through double (half types round via float). */
__device__ static double load_as_double(kd_dtype t, const void *p, int64_t i)
{
    switch (t) {
    case KD_F32: return ((const float *)p)[i];
    case KD_F64: return ((const double *)p)[i];
    case KD_F16: return __half2float(((const __half *)p)[i]);
    case KD_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case KD_I32: return ((const int32_t *)p)[i];
    case KD_I64: return (double)((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}

__device__ static void store_double(kd_dtype t, void *p, int64_t i, double v)
{
    switch (t) {
    case KD_F32: ((float *)p)[i] = (float)v; break;
    case KD_F64: ((double *)p)[i] = v; break;
    case KD_F16: ((__half *)p)[i] = __float2half_rn((float)v); break;
    case KD_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v); break;
    case KD_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KD_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    default: ((uint8_t *)p)[i] = (uint8_t)v; break;
    }
}

__device__ static int64_t load_as_i64(kd_dtype t, const void *p, int64_t i)
{
    switch (t) {
    case KD_I32: return ((const int32_t *)p)[i];
    case KD_I64: return ((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}

__device__ static void store_i64(kd_dtype t, void *p, int64_t i, int64_t v)
{
    switch (t) {
    case KD_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KD_I64: ((int64_t *)p)[i] = v; break;
    default: ((uint8_t *)p)[i] = (uint8_t)v; break;
    }
}

__global__ void convert(void *dst, kd_dtype dst_dtype, const void *src,
                        kd_dtype src_dtype, int64_t n, bool ints)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (ints)
            store_i64(dst_dtype, dst, i, load_as_i64(src_dtype, src, i));
        else
            store_double(dst_dtype, dst, i, load_as_double(src_dtype, src, i));
    }
}

extern "C" kd_status kd_cuda_cast(kd_tensor *dst, const kd_tensor *src)
{
    if (!kd_tensor_same_shape(dst, src) || !kd_tensor_is_contiguous(dst) ||
        !kd_tensor_is_contiguous(src))
        return kd_error(KD_ERR_INVALID, "cuda cast: needs contiguous tensors of one shape");
    int64_t n = kd_tensor_numel(dst);
    if (n == 0)
        return KD_OK;
    if (dst->dtype == src->dtype)
        return kd_cuda_memcpy(kd_tensor_data(dst), kd_tensor_data(src),
                              (size_t)n * kd_dtype_size(dst->dtype), KD_COPY_D2D);
    bool ints = !kd_dtype_is_float(src->dtype) && !kd_dtype_is_float(dst->dtype);
    convert<<<grid_for(n, KD_BLOCK), KD_BLOCK>>>(kd_tensor_data(dst), dst->dtype,
                                                 kd_tensor_data(src), src->dtype, n, ints);
    return launch_status("a dtype conversion");
}

template <typename T> __global__ void fill_pattern(T *p, T value, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        p[i] = value;
}

template <typename T> static void launch_fill(void *p, const unsigned char *bytes, int64_t n)
{
    T value;
    memcpy(&value, bytes, sizeof value);
    fill_pattern<T><<<grid_for(n, KD_BLOCK), KD_BLOCK>>>((T *)p, value, n);
}

extern "C" kd_status kd_cuda_fill(kd_tensor *t, double value)
{
    if (!kd_tensor_is_contiguous(t))
        return kd_error(KD_ERR_INVALID, "cuda fill: needs a contiguous tensor");
    int64_t n = kd_tensor_numel(t);
    if (n == 0)
        return KD_OK;
    /* The element's bytes, converted on the host as the CPU fill does. */
    unsigned char bytes[8];
    size_t elem = kd_dtype_size(t->dtype);
    switch (t->dtype) {
    case KD_F32: { float f = (float)value; memcpy(bytes, &f, 4); break; }
    case KD_F64: memcpy(bytes, &value, 8); break;
    case KD_F16: { uint16_t h = kd_f32_to_f16((float)value); memcpy(bytes, &h, 2); break; }
    case KD_BF16: { uint16_t h = kd_f32_to_bf16((float)value); memcpy(bytes, &h, 2); break; }
    case KD_I32: { int32_t i = (int32_t)value; memcpy(bytes, &i, 4); break; }
    case KD_I64: { int64_t i = (int64_t)value; memcpy(bytes, &i, 8); break; }
    default: bytes[0] = (unsigned char)value; break;
    }
    bool uniform = true;
    for (size_t i = 1; i < elem; i++)
        uniform = uniform && bytes[i] == bytes[0];
    void *p = kd_tensor_data(t);
    if (uniform) {
        cudaError_t err = cudaMemset(p, bytes[0], (size_t)n * elem);
        if (err != cudaSuccess) {
            cudaGetLastError();
            return kd_error(KD_ERR_DEVICE, "cuda: cudaMemset of %zu bytes: %s",
                            (size_t)n * elem, cudaGetErrorString(err));
        }
        return KD_OK;
    }
    switch (elem) {
    case 2: launch_fill<uint16_t>(p, bytes, n); break;
    case 4: launch_fill<uint32_t>(p, bytes, n); break;
    default: launch_fill<uint64_t>(p, bytes, n); break;
    }
    return launch_status("a fill");
}
