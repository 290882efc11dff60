/* Refcounted device memory. Host blocks come from the caching allocator
 * (host_alloc.c), 64-byte aligned for SIMD. */
#include <stdlib.h>

#include "internal.h"
#ifdef KD_HAVE_CUDA
#include "backend/cuda/cuda.h"
#endif

kd_status kd_storage_new(kd_device device, size_t nbytes, kd_storage **out)
{
    kd_storage *s = calloc(1, sizeof *s);
    if (!s)
        return kd_error(KD_ERR_NOMEM, "storage: out of host memory");
    size_t alloc = nbytes ? nbytes : 1;
    if (device == KD_CPU) {
        s->data = kd_host_alloc(alloc, &s->capacity);
        if (!s->data) {
            free(s);
            return kd_error(KD_ERR_NOMEM, "storage: cannot allocate %zu bytes",
                            nbytes);
        }
    } else {
#ifdef KD_HAVE_CUDA
        kd_status st = kd_cuda_alloc(&s->data, alloc);
        if (st != KD_OK) {
            free(s);
            return st;
        }
#else
        free(s);
        return kd_error(KD_ERR_UNSUPPORTED,
                        "storage: this build has no CUDA (configure --with-cuda)");
#endif
    }
    kd_alloc_bytes_add((int64_t)nbytes);
    s->nbytes = nbytes;
    s->device = device;
    s->refcount = 1;
    *out = s;
    return KD_OK;
}

void kd_storage_retain(kd_storage *s) { s->refcount++; }

void kd_storage_release(kd_storage *s)
{
    if (!s || --s->refcount > 0)
        return;
    if (s->device == KD_CPU)
        kd_host_free(s->data, s->capacity);
#ifdef KD_HAVE_CUDA
    else
        kd_cuda_free(s->data);
#endif
    free(s);
}
