/* A caching allocator for host memory.
 *
 * A training step allocates the same sizes every step. Returning those
 * blocks to the C library and asking again costs page faults on every step
 * (large blocks come from fresh mmap'd pages), so freed blocks are kept in
 * per-size-class free lists and handed out again. Size classes are a
 * quarter of a power of two apart, so rounding wastes at most 25%. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

#define CLASS_TABLE 1024          /* open addressing, power of two */
#define SMALL_GRAIN 64            /* below 4 KiB: round to 64 bytes */
#define DEFAULT_CACHE_LIMIT (4ull << 30)

typedef struct free_block {
    struct free_block *next;
} free_block;

typedef struct size_class {
    size_t size; /* 0 = empty slot */
    free_block *head;
} size_class;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_class classes[CLASS_TABLE];
static size_t cached_bytes, cache_limit = DEFAULT_CACHE_LIMIT;

static size_t class_size(size_t n)
{
    if (n <= 4096)
        return (n + SMALL_GRAIN - 1) & ~(size_t)(SMALL_GRAIN - 1);
    size_t p = (size_t)1 << (63 - __builtin_clzll((unsigned long long)n));
    size_t quarter = p / 4;
    return (n + quarter - 1) / quarter * quarter;
}

static size_class *find_class(size_t size)
{
    size_t h = (size * 0x9E3779B97F4A7C15ull) >> 54; /* top 10 bits */
    for (size_t i = 0; i < CLASS_TABLE; i++) {
        size_class *c = &classes[(h + i) & (CLASS_TABLE - 1)];
        if (c->size == size || c->size == 0) {
            c->size = size;
            return c;
        }
    }
    return NULL; /* table full: the caller bypasses the cache */
}

void *kd_host_alloc(size_t nbytes, size_t *capacity)
{
    size_t size = class_size(nbytes ? nbytes : 1);
    *capacity = size;
    pthread_mutex_lock(&lock);
    size_class *c = find_class(size);
    free_block *b = c ? c->head : NULL;
    if (b) {
        c->head = b->next;
        cached_bytes -= size;
    }
    pthread_mutex_unlock(&lock);
    return b ? (void *)b : aligned_alloc(64, size);
}

void kd_host_free(void *ptr, size_t capacity)
{
    if (!ptr)
        return;
    pthread_mutex_lock(&lock);
    size_class *c = cached_bytes + capacity <= cache_limit ? find_class(capacity) : NULL;
    if (c) {
        free_block *b = ptr;
        b->next = c->head;
        c->head = b;
        cached_bytes += capacity;
    }
    pthread_mutex_unlock(&lock);
    if (!c)
        free(ptr);
}

void kd_host_release_cache(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < CLASS_TABLE; i++) {
        for (free_block *b = classes[i].head, *next; b; b = next) {
            next = b->next;
            free(b);
        }
        classes[i].head = NULL;
    }
    cached_bytes = 0;
    pthread_mutex_unlock(&lock);
}

size_t kd_host_cached_bytes(void)
{
    pthread_mutex_lock(&lock);
    size_t n = cached_bytes;
    pthread_mutex_unlock(&lock);
    return n;
}
