/* kdengine: process-wide runtime settings and what the build contains. */
#ifndef KDENGINE_RUNTIME_H
#define KDENGINE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/api.h>
#include <kdengine/status.h>
#include <kdengine/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

KD_API const char *kd_version(void);
/* Sets the CPU threads used by OpenMP loops, OpenBLAS and oneDNN. */
KD_API void kd_set_num_threads(int n);
KD_API int kd_num_threads(void);
/* One line per component: "openblas 0.3.21 (pthread), threads 2", ... */
KD_API const char *kd_build_info(void);
/* What the CPU libraries are and run as, for a run's record: OpenBLAS's
 * build configuration ("OpenBLAS 0.3.21 DYNAMIC_ARCH ... MAX_THREADS=64")
 * and the kernel core it chose for this CPU ("Haswell"; OPENBLAS_CORETYPE
 * overrides it); oneDNN's version ("3.0.0") and the most capable
 * instruction set it may use ("avx512_core"; ONEDNN_MAX_CPU_ISA caps it),
 * both NULL in a build without oneDNN. Static strings of the libraries. */
KD_API const char *kd_blas_config(void);
KD_API const char *kd_blas_core(void);
KD_API const char *kd_onednn_version(void);
KD_API const char *kd_onednn_isa(void);
KD_API bool kd_have_cuda_build(void);
/* True when this build has CUDA and a GPU is present. */
KD_API bool kd_cuda_device_available(void);

/* Multiply-accumulates done by the forward ops of this thread that carry
 * the compute (conv2d, matmul, linear) since the last call; returns the
 * count and restarts it. `plan` reports a model's MACs per image from it. */
KD_API int64_t kd_macs_take(void);
/* Bytes of tensor storage this thread created since the last call; returns
 * the count and restarts it. `plan` estimates a step's memory from it. */
KD_API int64_t kd_alloc_bytes_take(void);

/* Tensor storage of all threads on a device kind (CPU, or the GPUs): the
 * bytes alive now, and the most alive at once since the last reset. `run`
 * reports the peak of a training run. */
typedef struct kd_memory_stats {
    int64_t live_bytes, peak_bytes;
} kd_memory_stats;
KD_API kd_memory_stats kd_memory_stats_of(kd_device device);
/* Starts the peak again from what is alive now. */
KD_API void kd_memory_peak_reset(kd_device device);

#ifdef __cplusplus
}
#endif
#endif
