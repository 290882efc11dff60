/* Refcounted device memory. Host blocks come from the caching allocator
 * (host_alloc.c), 64-byte aligned for SIMD. */
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"
#ifdef KD_HAVE_CUDA
#include "backend/cuda/cuda.h"
#endif

/* Bytes of storage alive per device kind, and the most alive at once:
 * loader threads allocate batches while the training thread runs. */
static _Atomic int64_t live_bytes[2], peak_bytes[2];

static int device_slot(kd_device device) { return device == KD_CPU ? 0 : 1; }

static void count_alloc(kd_device device, int64_t n)
{
    int slot = device_slot(device);
    int64_t now = atomic_fetch_add(&live_bytes[slot], n) + n;
    int64_t peak = atomic_load(&peak_bytes[slot]);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes[slot], &peak, now))
        ;
}

kd_memory_stats kd_memory_stats_of(kd_device device)
{
    int slot = device_slot(device);
    return (kd_memory_stats){atomic_load(&live_bytes[slot]), atomic_load(&peak_bytes[slot])};
}

void kd_memory_peak_reset(kd_device device)
{
    int slot = device_slot(device);
    atomic_store(&peak_bytes[slot], atomic_load(&live_bytes[slot]));
}

kd_status kd_storage_new(kd_device device, size_t nbytes, kd_storage **out)
{
    if (device != KD_CPU && device != KD_CUDA)
        return kd_error(KD_ERR_UNSUPPORTED, "storage: device %s:%d: one process drives the CPU "
                        "and cuda:0", kd_device_kind(device) == KD_CUDA ? "cuda" : "unknown",
                        kd_device_index(device));
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
    count_alloc(device, (int64_t)nbytes);
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
    atomic_fetch_sub(&live_bytes[device_slot(s->device)], (int64_t)s->nbytes);
    if (s->device == KD_CPU)
        kd_host_free(s->data, s->capacity);
#ifdef KD_HAVE_CUDA
    else
        kd_cuda_free(s->data);
#endif
    free(s);
}
