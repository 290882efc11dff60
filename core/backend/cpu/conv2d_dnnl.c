/* 2-D convolution on oneDNN, f32: forward, backward data and backward
 * weights (with the bias gradient).
 *
 * Creating a oneDNN primitive costs far more than running a small one, so
 * primitives live in a cache keyed by the whole problem (batch size
 * included), behind one mutex that is also held while they run. The cache
 * grows to hold a teacher's and a student's every convolution in all three
 * directions (a ResNet-50 teacher with a MobileNet student needs a few
 * hundred entries); past CACHE_MAX it evicts the least recently used. An
 * entry holds no activation memory: where the primitive prefers a blocked
 * layout, its reorders run through one scratch buffer shared by all entries
 * (the lock serialises them), so the cache costs JIT code, not copies of
 * activations. One engine and one stream serve every call. Tensors stay in
 * plain NCHW / OIHW. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "conv2d.h"
#include "dnnl_context.h"

typedef enum conv_kind {
    CONV_FORWARD_TRAINING,
    CONV_FORWARD_INFERENCE,
    CONV_BACKWARD_DATA,
    CONV_BACKWARD_WEIGHTS
} conv_kind;

typedef struct conv_key {
    kd_conv2d_geom g;
    int64_t kind;
    int64_t with_bias;
} conv_key;

/* One tensor argument: memory over the caller's plain buffer and, when the
 * primitive wants another layout, memory in that layout (placed in the
 * scratch buffer at `offset` when the entry runs) and the reorder between
 * the two (plain -> inner for inputs, inner -> plain for outputs). */
typedef struct conv_arg {
    int arg;
    bool output;
    dnnl_memory_t user, inner;
    dnnl_primitive_t reorder;
    size_t offset;
} conv_arg;

#define CONV_MAX_ARGS 4
#define CACHE_MAX 1024
#define SCRATCH_ALIGN 64

typedef struct conv_entry {
    conv_key key;
    uint64_t hash;
    uint64_t last_use;
    dnnl_primitive_t prim;
    int nargs;
    conv_arg args[CONV_MAX_ARGS];
    size_t scratch_bytes; /* what its inner memories need together */
} conv_entry;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static uint64_t use_clock;
static conv_entry *cache;
static int cache_len, cache_cap;
static kd_conv2d_dnnl_stats stats;
static void *scratch;
static size_t scratch_size;

static kd_status dnnl_fail(const char *what, dnnl_status_t s)
{
    return kd_dnnl_fail("conv2d", what, s);
}

static void entry_release(conv_entry *e)
{
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder)
            dnnl_primitive_destroy(a->reorder);
        if (a->inner)
            dnnl_memory_destroy(a->inner);
        if (a->user)
            dnnl_memory_destroy(a->user);
    }
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

/* Memory descriptors of the problem's tensors: plain ones for the caller's
 * buffers, and the layouts the primitive is asked to work in. */
typedef struct conv_mds {
    dnnl_memory_desc_t src, weights, bias, dst;
    dnnl_memory_desc_t src_any, weights_any, dst_any; /* the primitive's */
    dnnl_dims_t strides, dilates, padding;
} conv_mds;

static dnnl_status_t conv_mds_init(const kd_conv2d_geom *g, conv_mds *m)
{
    dnnl_dims_t src = {g->n, g->cin, g->h, g->w}, dst = {g->n, g->cout, g->oh, g->ow};
    dnnl_dims_t bias = {g->cout};
    dnnl_dims_t wg = {g->groups, g->cout / g->groups, g->cin / g->groups, g->kh, g->kw};
    dnnl_dims_t w = {g->cout, g->cin, g->kh, g->kw};
    bool grouped = g->groups > 1;
    dnnl_format_tag_t wtag = grouped ? dnnl_goihw : dnnl_oihw, any = dnnl_format_tag_any;
    /* Measured (oneDNN 2.6, AVX2): 1x1 kernels and inputs with fewer channels
     * than a SIMD block run fastest on the plain layout itself; other
     * kernels win more on oneDNN's blocked layouts than the reorders cost. */
    bool plain = g->groups == 1 && ((g->kh == 1 && g->kw == 1) || g->cin < 8);
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&m->src, 4, src, dnnl_f32, dnnl_nchw)) ||
        (s = dnnl_memory_desc_init_by_tag(&m->dst, 4, dst, dnnl_f32, dnnl_nchw)) ||
        (s = dnnl_memory_desc_init_by_tag(&m->bias, 1, bias, dnnl_f32, dnnl_x)) ||
        (s = dnnl_memory_desc_init_by_tag(&m->weights, grouped ? 5 : 4, grouped ? wg : w,
                                          dnnl_f32, wtag)) ||
        (s = dnnl_memory_desc_init_by_tag(&m->src_any, 4, src, dnnl_f32, plain ? dnnl_nchw : any)) ||
        (s = dnnl_memory_desc_init_by_tag(&m->dst_any, 4, dst, dnnl_f32, plain ? dnnl_nchw : any)) ||
        (s = dnnl_memory_desc_init_by_tag(&m->weights_any, grouped ? 5 : 4, grouped ? wg : w,
                                          dnnl_f32, plain ? wtag : any)))
        return s;
    for (int i = 0; i < 2; i++) {
        m->strides[i] = g->stride[i];
        m->dilates[i] = g->dil[i] - 1;
        m->padding[i] = g->pad[i];
    }
    return dnnl_success;
}

static dnnl_status_t forward_pd(const conv_mds *m, bool with_bias, dnnl_prop_kind_t prop,
                                dnnl_primitive_desc_t *pd)
{
    dnnl_convolution_desc_t d;
    dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(
        &d, prop, dnnl_convolution_direct, &m->src_any, &m->weights_any,
        with_bias ? &m->bias : NULL, &m->dst_any, m->strides, m->dilates, m->padding,
        m->padding);
    return s ? s : dnnl_primitive_desc_create(pd, &d, NULL, engine, NULL);
}

static dnnl_status_t arg_init(conv_entry *e, const_dnnl_primitive_desc_t pd, int arg,
                              const dnnl_memory_desc_t *plain, bool output)
{
    conv_arg *a = &e->args[e->nargs++];
    a->arg = arg;
    a->output = output;
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
    dnnl_status_t s = dnnl_memory_create(&a->user, plain, engine, DNNL_MEMORY_NONE);
    if (s || !want || dnnl_memory_desc_equal(want, plain))
        return s;
    if ((s = dnnl_memory_create(&a->inner, want, engine, DNNL_MEMORY_NONE)))
        return s;
    a->offset = e->scratch_bytes;
    size_t bytes = dnnl_memory_desc_get_size(want);
    e->scratch_bytes += (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    dnnl_primitive_desc_t rpd;
    s = output ? dnnl_reorder_primitive_desc_create(&rpd, want, engine, plain, engine, NULL)
               : dnnl_reorder_primitive_desc_create(&rpd, plain, engine, want, engine, NULL);
    if (s)
        return s;
    s = dnnl_primitive_create(&a->reorder, rpd);
    dnnl_primitive_desc_destroy(rpd);
    return s;
}

/* Creates the primitive and its arguments for key into e. */
static dnnl_status_t entry_create(conv_entry *e, const conv_key *key)
{
    conv_mds m;
    dnnl_status_t s = conv_mds_init(&key->g, &m);
    if (s)
        return s;
    bool with_bias = key->with_bias != 0;
    dnnl_primitive_desc_t fwd = NULL, pd = NULL;
    dnnl_convolution_desc_t d;
    switch ((conv_kind)key->kind) {
    case CONV_FORWARD_TRAINING:
    case CONV_FORWARD_INFERENCE:
        s = forward_pd(&m, with_bias,
                       key->kind == CONV_FORWARD_TRAINING ? dnnl_forward_training
                                                          : dnnl_forward_inference,
                       &pd);
        if (!s && !(s = arg_init(e, pd, DNNL_ARG_SRC, &m.src, false)) &&
            !(s = arg_init(e, pd, DNNL_ARG_WEIGHTS, &m.weights, false)) &&
            !(s = arg_init(e, pd, DNNL_ARG_DST, &m.dst, true)) && with_bias)
            s = arg_init(e, pd, DNNL_ARG_BIAS, &m.bias, false);
        break;
    case CONV_BACKWARD_DATA:
        s = forward_pd(&m, false, dnnl_forward_training, &fwd);
        if (!s)
            s = dnnl_dilated_convolution_backward_data_desc_init(
                &d, dnnl_convolution_direct, &m.src_any, &m.weights_any, &m.dst_any,
                m.strides, m.dilates, m.padding, m.padding);
        if (!s)
            s = dnnl_primitive_desc_create(&pd, &d, NULL, engine, fwd);
        if (!s && !(s = arg_init(e, pd, DNNL_ARG_DIFF_DST, &m.dst, false)) &&
            !(s = arg_init(e, pd, DNNL_ARG_WEIGHTS, &m.weights, false)))
            s = arg_init(e, pd, DNNL_ARG_DIFF_SRC, &m.src, true);
        break;
    case CONV_BACKWARD_WEIGHTS:
        s = forward_pd(&m, with_bias, dnnl_forward_training, &fwd);
        if (!s)
            s = dnnl_dilated_convolution_backward_weights_desc_init(
                &d, dnnl_convolution_direct, &m.src_any, &m.weights_any,
                with_bias ? &m.bias : NULL, &m.dst_any, m.strides, m.dilates, m.padding,
                m.padding);
        if (!s)
            s = dnnl_primitive_desc_create(&pd, &d, NULL, engine, fwd);
        if (!s && !(s = arg_init(e, pd, DNNL_ARG_SRC, &m.src, false)) &&
            !(s = arg_init(e, pd, DNNL_ARG_DIFF_DST, &m.dst, false)) &&
            !(s = arg_init(e, pd, DNNL_ARG_DIFF_WEIGHTS, &m.weights, true)) && with_bias)
            s = arg_init(e, pd, DNNL_ARG_DIFF_BIAS, &m.bias, true);
        break;
    }
    if (!s)
        s = dnnl_primitive_create(&e->prim, pd);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (fwd)
        dnnl_primitive_desc_destroy(fwd);
    return s;
}

/* FNV-1a over the key's bytes (keys are zeroed before they are filled). */
static uint64_t key_hash(const conv_key *key)
{
    const unsigned char *b = (const unsigned char *)key;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < sizeof *key; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* A slot for a new entry: a fresh one while the cache may grow, else the
 * least recently used, released. */
static kd_status entry_slot(conv_entry **out)
{
    if (cache_len == cache_cap && cache_cap < CACHE_MAX) {
        int cap = cache_cap ? 2 * cache_cap : 64;
        if (cap > CACHE_MAX)
            cap = CACHE_MAX;
        conv_entry *grown = realloc(cache, (size_t)cap * sizeof *grown);
        if (!grown)
            return kd_error(KD_ERR_NOMEM, "conv2d: no memory for %d oneDNN cache entries", cap);
        memset(grown + cache_cap, 0, (size_t)(cap - cache_cap) * sizeof *grown);
        cache = grown;
        cache_cap = cap;
    }
    if (cache_len < cache_cap) {
        *out = &cache[cache_len++];
        return KD_OK;
    }
    conv_entry *victim = &cache[0];
    for (int i = 1; i < cache_len; i++)
        if (cache[i].last_use < victim->last_use)
            victim = &cache[i];
    if (victim->last_use)
        stats.evicted++;
    entry_release(victim);
    *out = victim;
    return KD_OK;
}

/* The cached entry for key, made when missing. Called with the lock held. */
static kd_status entry_get(const conv_key *key, conv_entry **out)
{
    kd_status st = kd_dnnl_context("conv2d", &engine, &stream);
    if (st != KD_OK)
        return st;
    uint64_t hash = key_hash(key);
    for (int i = 0; i < cache_len; i++) {
        conv_entry *e = &cache[i];
        if (e->hash == hash && memcmp(&e->key, key, sizeof *key) == 0) {
            e->last_use = ++use_clock;
            *out = e;
            return KD_OK;
        }
    }
    conv_entry *e = NULL;
    if ((st = entry_slot(&e)) != KD_OK)
        return st;
    e->key = *key;
    e->hash = hash;
    dnnl_status_t s = entry_create(e, key);
    if (s) {
        entry_release(e);
        /* Free the slot: the last one is handed back, one in the middle
         * keeps last_use 0 and is the next one evicted. */
        if (e == &cache[cache_len - 1])
            cache_len--;
        return dnnl_fail("primitive creation", s);
    }
    stats.created++;
    e->last_use = ++use_clock;
    *out = e;
    return KD_OK;
}

/* Makes the scratch buffer at least `bytes` long. */
static kd_status scratch_reserve(size_t bytes)
{
    if (bytes <= scratch_size)
        return KD_OK;
    void *p = aligned_alloc(SCRATCH_ALIGN, bytes);
    if (!p)
        return kd_error(KD_ERR_NOMEM, "conv2d: no memory for %zu bytes of oneDNN reorder scratch",
                        bytes);
    free(scratch);
    scratch = p;
    scratch_size = bytes;
    return KD_OK;
}

/* Runs the entry on buffers given per argument, in the entry's order. */
static dnnl_status_t entry_run(conv_entry *e, void *const *buffers)
{
    dnnl_exec_arg_t args[CONV_MAX_ARGS];
    dnnl_status_t s;
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if ((s = dnnl_memory_set_data_handle(a->user, buffers[i])))
            return s;
        if (a->inner &&
            (s = dnnl_memory_set_data_handle(a->inner, (char *)scratch + a->offset)))
            return s;
        args[i] = (dnnl_exec_arg_t){a->arg, a->inner ? a->inner : a->user};
        if (a->reorder && !a->output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->user}, {DNNL_ARG_TO, a->inner}};
            if ((s = dnnl_primitive_execute(a->reorder, stream, 2, r)))
                return s;
        }
    }
    if ((s = dnnl_primitive_execute(e->prim, stream, e->nargs, args)))
        return s;
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder && a->output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->inner}, {DNNL_ARG_TO, a->user}};
            if ((s = dnnl_primitive_execute(a->reorder, stream, 2, r)))
                return s;
        }
    }
    return dnnl_stream_wait(stream);
}

static kd_status run(const kd_conv2d_geom *g, conv_kind kind, bool with_bias,
                     void *const *buffers)
{
    conv_key key;
    memset(&key, 0, sizeof key);
    key.g = *g;
    key.kind = kind;
    key.with_bias = with_bias;
    pthread_mutex_lock(&cache_lock);
    conv_entry *e = NULL;
    kd_status st = entry_get(&key, &e);
    if (st == KD_OK)
        st = scratch_reserve(e->scratch_bytes);
    if (st == KD_OK) {
        stats.calls++;
        dnnl_status_t s = entry_run(e, buffers);
        if (s)
            st = dnnl_fail("execution", s);
    }
    pthread_mutex_unlock(&cache_lock);
    return st;
}

/* oneDNN reads its inputs through non-const handles; it does not write
 * them. */
kd_status kd_conv2d_dnnl_forward(const kd_conv2d_geom *g, const float *x, const float *w,
                                 const float *bias, float *y, bool training)
{
    void *buffers[4] = {(void *)x, (void *)w, y, (void *)bias};
    return run(g, training ? CONV_FORWARD_TRAINING : CONV_FORWARD_INFERENCE, bias != NULL,
               buffers);
}

kd_status kd_conv2d_dnnl_backward_data(const kd_conv2d_geom *g, const float *gy, const float *w,
                                       float *gx)
{
    void *buffers[3] = {(void *)gy, (void *)w, gx};
    return run(g, CONV_BACKWARD_DATA, false, buffers);
}

kd_status kd_conv2d_dnnl_backward_weights(const kd_conv2d_geom *g, const float *x,
                                          const float *gy, float *gw, float *gbias)
{
    void *buffers[4] = {(void *)x, (void *)gy, gw, gbias};
    return run(g, CONV_BACKWARD_WEIGHTS, gbias != NULL, buffers);
}

void kd_conv2d_dnnl_stats_get(kd_conv2d_dnnl_stats *out)
{
    pthread_mutex_lock(&cache_lock);
    *out = stats;
    out->entries = 0;
    for (int i = 0; i < cache_len; i++)
        out->entries += cache[i].last_use != 0;
    out->scratch_bytes = scratch_size;
    pthread_mutex_unlock(&cache_lock);
}
