/* Threads and build information. */
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"
#ifdef KD_HAVE_CUDA
#include "backend/cuda/cuda.h"
#endif
#ifdef KD_HAVE_DNNL
#include <dnnl.h>
#include <dnnl_debug.h>
#endif

static int num_threads = 1;
static _Thread_local int64_t mac_count;

static _Thread_local int64_t alloc_bytes;

void kd_macs_add(int64_t n) { mac_count += n; }
void kd_alloc_bytes_add(int64_t n) { alloc_bytes += n; }

int64_t kd_alloc_bytes_take(void)
{
    int64_t n = alloc_bytes;
    alloc_bytes = 0;
    return n;
}

int64_t kd_macs_take(void)
{
    int64_t n = mac_count;
    mac_count = 0;
    return n;
}

const char *kd_version(void) { return PACKAGE_VERSION; }

void kd_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    num_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

int kd_num_threads(void) { return num_threads; }

const char *kd_build_info(void)
{
    static char info[512];
    int used = snprintf(info, sizeof info, "kdengine %s; blas: %s; threads %d",
                        PACKAGE_VERSION, openblas_get_config(), num_threads);
#ifdef KD_HAVE_DNNL
    const dnnl_version_t *v = dnnl_version();
    used += snprintf(info + used, sizeof info - (size_t)used, "; onednn %d.%d.%d",
                     v->major, v->minor, v->patch);
#else
    used += snprintf(info + used, sizeof info - (size_t)used, "; onednn: no");
#endif
#ifdef _OPENMP
    used += snprintf(info + used, sizeof info - (size_t)used, "; openmp: yes");
#endif
    snprintf(info + used, sizeof info - (size_t)used, "; cuda: %s",
             kd_have_cuda_build() ? "yes" : "no");
    return info;
}

const char *kd_blas_config(void) { return openblas_get_config(); }

const char *kd_blas_core(void) { return openblas_get_corename(); }

const char *kd_onednn_version(void)
{
#ifdef KD_HAVE_DNNL
    static _Thread_local char version[48]; /* no lock: each thread its own */
    const dnnl_version_t *v = dnnl_version();
    snprintf(version, sizeof version, "%d.%d.%d", v->major, v->minor, v->patch);
    return version;
#else
    return NULL;
#endif
}

const char *kd_onednn_isa(void)
{
#ifdef KD_HAVE_DNNL
    const char *isa = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
    static const char prefix[] = "cpu_isa_"; /* "cpu_isa_avx2" says avx2 */
    return isa && !strncmp(isa, prefix, sizeof prefix - 1) ? isa + sizeof prefix - 1 : isa;
#else
    return NULL;
#endif
}

bool kd_have_cuda_build(void)
{
#ifdef KD_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

bool kd_cuda_device_available(void)
{
#ifdef KD_HAVE_CUDA
    return kd_cuda_available();
#else
    return false;
#endif
}
