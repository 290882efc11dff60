/* Batched f32 matrix products on oneDNN's matmul: attention runs one
 * small product per (batch, window, head) — Swin's 49x49x32 by the
 * thousand per layer — and one library call that spreads the batch over
 * the threads beats a BLAS call per matrix, which each run on one thread
 * at these sizes. Primitives are cached per problem (LRU), behind one
 * mutex also held while they run (their memory objects are the entry's). */
#include <pthread.h>
#include <string.h>

#include "dnnl_context.h"
#include "matmul_dnnl.h"

typedef struct mm_key {
    int64_t batch, m, n, k;
    int64_t trans_a, trans_b;
    double alpha;
} mm_key;

typedef struct mm_entry {
    mm_key key;
    uint64_t last_use; /* 0: free */
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} mm_entry;

#define MM_CACHE 128

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static mm_entry cache[MM_CACHE];
static uint64_t use_clock;

static void entry_release(mm_entry *e)
{
    if (e->a)
        dnnl_memory_destroy(e->a);
    if (e->b)
        dnnl_memory_destroy(e->b);
    if (e->c)
        dnnl_memory_destroy(e->c);
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

/* A [batch, rows, cols] matrix stored row-major, or transposed (stored as
 * [batch, cols, rows]). */
static dnnl_status_t matrix_md(dnnl_memory_desc_t *md, int64_t batch, int64_t rows, int64_t cols,
                               bool transposed)
{
    dnnl_dims_t dims = {batch, rows, cols};
    dnnl_dims_t strides = {rows * cols, transposed ? 1 : cols, transposed ? rows : 1};
    return dnnl_memory_desc_init_by_strides(md, 3, dims, dnnl_f32, strides);
}

static dnnl_status_t entry_create(mm_entry *e, const mm_key *key, dnnl_engine_t engine)
{
    dnnl_memory_desc_t a, b, c;
    dnnl_status_t s;
    if ((s = matrix_md(&a, key->batch, key->m, key->k, key->trans_a)) ||
        (s = matrix_md(&b, key->batch, key->k, key->n, key->trans_b)) ||
        (s = matrix_md(&c, key->batch, key->m, key->n, false)))
        return s;
    dnnl_matmul_desc_t d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    float scale = (float)key->alpha;
    if (!(s = dnnl_matmul_desc_init(&d, &a, &b, NULL, &c)) &&
        !(s = dnnl_primitive_attr_create(&attr)) &&
        (key->alpha == 1.0 || !(s = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale))) &&
        !(s = dnnl_primitive_desc_create(&pd, &d, attr, engine, NULL)) &&
        !(s = dnnl_primitive_create(&e->prim, pd)) &&
        !(s = dnnl_memory_create(&e->a, &a, engine, DNNL_MEMORY_NONE)) &&
        !(s = dnnl_memory_create(&e->b, &b, engine, DNNL_MEMORY_NONE)))
        s = dnnl_memory_create(&e->c, &c, engine, DNNL_MEMORY_NONE);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return s;
}

kd_status kd_dnnl_batched_gemm(bool trans_a, bool trans_b, int64_t batch, int64_t m, int64_t n,
                               int64_t k, double alpha, const float *a, const float *b, float *c)
{
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    kd_status st = kd_dnnl_context("batched matmul", &engine, &stream);
    if (st != KD_OK)
        return st;
    mm_key key = {batch, m, n, k, trans_a, trans_b, alpha}; /* no padding: memcmp is safe */
    pthread_mutex_lock(&lock);
    mm_entry *e = NULL, *victim = &cache[0];
    for (int i = 0; i < MM_CACHE && !e; i++) {
        if (cache[i].last_use && !memcmp(&cache[i].key, &key, sizeof key))
            e = &cache[i];
        else if (cache[i].last_use < victim->last_use)
            victim = &cache[i];
    }
    dnnl_status_t s = dnnl_success;
    if (!e) {
        entry_release(victim);
        victim->key = key;
        if ((s = entry_create(victim, &key, engine)))
            entry_release(victim);
        else
            e = victim;
    }
    if (e) {
        e->last_use = ++use_clock;
        /* oneDNN takes non-const handles; it does not write the inputs. */
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b},
                                   {DNNL_ARG_DST, e->c}};
        if (!(s = dnnl_memory_set_data_handle(e->a, (void *)a)) &&
            !(s = dnnl_memory_set_data_handle(e->b, (void *)b)) &&
            !(s = dnnl_memory_set_data_handle(e->c, c)) &&
            !(s = dnnl_primitive_execute(e->prim, stream, 3, args)))
            s = dnnl_stream_wait(stream);
    }
    pthread_mutex_unlock(&lock);
    return s ? kd_dnnl_fail("batched matmul", e ? "execution" : "primitive creation", s) : KD_OK;
}
