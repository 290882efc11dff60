/* What the .cu files share: the C contract seen from C++, launch sizing,
 * launch checks and 128-bit vectors. CUDA C++ only. */
#ifndef KD_CUDA_KERNEL_H
#define KD_CUDA_KERNEL_H

#include <cuda_runtime.h>

extern "C" {
#include "cuda.h"
}

#define KD_BLOCK 256
/* Grid-stride loops cover the rest; this many blocks fill an H100 many times. */
#define KD_MAX_GRID 65536

static inline unsigned grid_for(int64_t n, int block)
{
    int64_t g = (n + block - 1) / block;
    return (unsigned)(g < 1 ? 1 : (g > KD_MAX_GRID ? KD_MAX_GRID : g));
}

/* Reports a failed launch (bad configuration, no kernel image for this GPU)
 * as KD_ERR_DEVICE naming the kernel's job. */
static inline kd_status launch_status(const char *what)
{
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess)
        return KD_OK;
    return kd_error(KD_ERR_DEVICE, "cuda: launching %s: %s", what,
                    cudaGetErrorString(err));
}

/* 16 bytes of T, loaded and stored as one 128-bit access. */
template <typename T> struct alignas(16) vec16 {
    static constexpr int n = 16 / sizeof(T);
    T v[n];
};

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static inline const char *dtype_name(kd_dtype dtype)
{
    const char *name = kd_dtype_name(dtype);
    return name ? name : "unknown";
}

#endif
