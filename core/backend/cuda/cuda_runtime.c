/* The CUDA device: probing, a caching allocator and host/device copies.
 * Everything runs on the legacy default stream, so work is ordered and a
 * block freed here can be handed out again without waiting for the GPU. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "cuda.h"

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool device_ok;
static char unavailable_reason[256];
static char device_description[384];

/* A failed runtime call also sets the thread's last error, which a later
 * launch check would report as its own; read it back to clear it. */
static kd_status runtime_error(cudaError_t err, const char *what)
{
    cudaGetLastError();
    return kd_error(KD_ERR_DEVICE, "cuda: %s: %s", what, cudaGetErrorString(err));
}

static void probe_device(void)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        snprintf(unavailable_reason, sizeof unavailable_reason,
                 "cudaGetDeviceCount: %s", cudaGetErrorString(err));
        cudaGetLastError();
        return;
    }
    if (count == 0) {
        snprintf(unavailable_reason, sizeof unavailable_reason,
                 "cudaGetDeviceCount found no device");
        return;
    }
    /* Creating the context here makes "available" mean usable. */
    err = cudaFree(NULL);
    if (err != cudaSuccess) {
        snprintf(unavailable_reason, sizeof unavailable_reason,
                 "creating a context on device 0: %s", cudaGetErrorString(err));
        cudaGetLastError();
        return;
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        snprintf(device_description, sizeof device_description,
                 "%.255s, compute capability %d.%d, %.1f GiB", prop.name, prop.major,
                 prop.minor, (double)prop.totalGlobalMem / (1 << 30));
    cudaGetLastError();
    device_ok = true;
}

bool kd_cuda_available(void)
{
    pthread_once(&probe_once, probe_device);
    return device_ok;
}

const char *kd_cuda_unavailable_reason(void)
{
    pthread_once(&probe_once, probe_device);
    return unavailable_reason;
}

const char *kd_cuda_device_description(void)
{
    pthread_once(&probe_once, probe_device);
    return device_description;
}

/* --- caching allocator ---
 * Sizes round up to a class (512 B; then four classes per power of two up
 * to 64 MiB, wasting at most a quarter; then 2 MiB steps). Live blocks are
 * found by pointer in a hash table; freed ones wait in lists keyed by their
 * class size until reused or released. */
typedef struct cuda_block {
    void *ptr;
    size_t size;
    struct cuda_block *next;
} cuda_block;

#define LIVE_BUCKETS 4096
#define CACHE_BUCKETS 256
#define SMALL_CLASS ((size_t)512)
#define LARGE_STEP ((size_t)2 << 20)
#define LARGE_FROM ((size_t)64 << 20)

static struct {
    pthread_mutex_t lock;
    cuda_block *live[LIVE_BUCKETS];
    cuda_block *cached[CACHE_BUCKETS];
    bool release_at_exit;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

static size_t class_size(size_t bytes)
{
    if (bytes <= SMALL_CLASS)
        return SMALL_CLASS;
    if (bytes > LARGE_FROM)
        return (bytes + LARGE_STEP - 1) / LARGE_STEP * LARGE_STEP;
    size_t pow2 = SMALL_CLASS;
    while (pow2 * 2 < bytes)
        pow2 *= 2;
    size_t quarter = pow2 / 4;
    return (bytes + quarter - 1) / quarter * quarter;
}

static size_t live_bucket(const void *ptr)
{
    uint64_t h = (uint64_t)(uintptr_t)ptr * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 52) % LIVE_BUCKETS;
}

static size_t cache_bucket(size_t size)
{
    uint64_t h = (uint64_t)size * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 56) % CACHE_BUCKETS;
}

static cuda_block *take_cached(size_t size)
{
    cuda_block **link = &pool.cached[cache_bucket(size)];
    for (; *link; link = &(*link)->next) {
        if ((*link)->size == size) {
            cuda_block *b = *link;
            *link = b->next;
            return b;
        }
    }
    return NULL;
}

/* Caller holds the lock. */
static void release_cached_locked(void)
{
    for (int i = 0; i < CACHE_BUCKETS; i++) {
        cuda_block *b = pool.cached[i];
        while (b) {
            cuda_block *next = b->next;
            cudaFree(b->ptr);
            free(b);
            b = next;
        }
        pool.cached[i] = NULL;
    }
    cudaGetLastError();
}

void kd_cuda_release_cache(void)
{
    pthread_mutex_lock(&pool.lock);
    release_cached_locked();
    pthread_mutex_unlock(&pool.lock);
}

kd_status kd_cuda_alloc(void **ptr, size_t bytes)
{
    *ptr = NULL;
    if (!kd_cuda_available())
        return kd_error(KD_ERR_DEVICE, "cuda: no device: %s", unavailable_reason);
    size_t size = class_size(bytes);
    pthread_mutex_lock(&pool.lock);
    cuda_block *b = take_cached(size);
    if (!b) {
        b = malloc(sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&pool.lock);
            return kd_error(KD_ERR_NOMEM, "cuda: out of host memory");
        }
        b->size = size;
        cudaError_t err = cudaMalloc(&b->ptr, size);
        if (err == cudaErrorMemoryAllocation) {
            release_cached_locked();
            err = cudaMalloc(&b->ptr, size);
        }
        if (err != cudaSuccess) {
            pthread_mutex_unlock(&pool.lock);
            free(b);
            char what[64];
            snprintf(what, sizeof what, "cudaMalloc of %zu bytes", bytes);
            return runtime_error(err, what);
        }
        if (!pool.release_at_exit)
            pool.release_at_exit = atexit(kd_cuda_release_cache) == 0;
    }
    size_t h = live_bucket(b->ptr);
    b->next = pool.live[h];
    pool.live[h] = b;
    pthread_mutex_unlock(&pool.lock);
    *ptr = b->ptr;
    return KD_OK;
}

void kd_cuda_free(void *ptr)
{
    if (!ptr)
        return;
    pthread_mutex_lock(&pool.lock);
    cuda_block **link = &pool.live[live_bucket(ptr)];
    while (*link && (*link)->ptr != ptr)
        link = &(*link)->next;
    cuda_block *b = *link;
    if (b) {
        *link = b->next;
        size_t h = cache_bucket(b->size);
        b->next = pool.cached[h];
        pool.cached[h] = b;
    }
    pthread_mutex_unlock(&pool.lock);
    if (!b) /* not from this allocator */
        cudaFree(ptr);
}

kd_status kd_cuda_memcpy(void *dst, const void *src, size_t bytes, kd_copy_kind kind)
{
    if (bytes == 0)
        return KD_OK;
    static const struct {
        enum cudaMemcpyKind kind;
        const char *name;
    } kinds[] = {
        [KD_COPY_H2D] = {cudaMemcpyHostToDevice, "host to device"},
        [KD_COPY_D2H] = {cudaMemcpyDeviceToHost, "device to host"},
        [KD_COPY_D2D] = {cudaMemcpyDeviceToDevice, "device to device"},
    };
    /* cudaMemcpy returns once a device-to-host copy has landed, so the host
     * may read it at once; the other directions are queued in order. */
    cudaError_t err = cudaMemcpy(dst, src, bytes, kinds[kind].kind);
    if (err != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaMemcpy %s of %zu bytes", kinds[kind].name,
                 bytes);
        return runtime_error(err, what);
    }
    return KD_OK;
}

kd_status kd_cuda_synchronize(void)
{
    cudaError_t err = cudaDeviceSynchronize();
    return err == cudaSuccess ? KD_OK : runtime_error(err, "cudaDeviceSynchronize");
}
