/* The threaded data loader (loader.h).
 *
 * Workers claim batch numbers in order and build each into slot
 * (batch % n_slots). A batch may be claimed only once the batch n_slots
 * before it has been released by the caller, so a slot is never written
 * while the caller holds it. kd_loader_start bumps a generation number:
 * builds of the old epoch notice it between samples, stop, and their
 * results are dropped. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"
#include "loader.h"

#define LOADER_MAX_THREADS 64
#define LOADER_MAX_PREFETCH 64
#define LOADER_MESSAGE_MAX 1024

typedef struct slot {
    int64_t batch; /* the batch it holds once ready */
    bool ready;
    kd_status status;
    char message[LOADER_MESSAGE_MAX]; /* the error when status != KD_OK */
    kd_tensor *images, *labels, *indices;
    int64_t global_size;
} slot;

/* What one building thread owns: the dataset writes one buffer and the
 * transforms alternate between the two. */
typedef struct builder {
    kd_loader *loader;
    kd_sample buf[2];
    pthread_t thread;
} builder;

struct kd_loader {
    kd_loader_config cfg; /* label and transform arrays point at copies */
    char *label;
    const kd_transform_vtable **transforms;
    void **transform_selves;
    kd_dataset_info info;
    int64_t n, batches;
    int64_t *order; /* [n]: dataset position of each order position */

    builder *builders; /* one per worker, or one for the calling thread */
    int n_builders, n_threads;
    slot *slots;
    int n_slots;

    pthread_mutex_t mu;
    pthread_cond_t work; /* a batch may be claimed, or quit */
    pthread_cond_t done; /* a build finished */
    atomic_uint_fast64_t generation;
    bool quit, active;
    int64_t epoch, claim, next_out;
    int64_t held; /* the batch the caller holds, -1 for none */
    int busy;     /* builds in flight */
};

/* ---------------------------------------------------------------- building */

static bool abandoned(kd_loader *l, uint64_t gen)
{
    return atomic_load_explicit(&l->generation, memory_order_relaxed) != gen;
}

/* Dataset sample idx through the transforms; *out points at the builder
 * buffer holding the result. */
static kd_status make_sample(kd_loader *l, builder *w, int64_t epoch, int64_t idx,
                             int64_t *label, const kd_sample **out)
{
    const kd_loader_config *c = &l->cfg;
    kd_sample *cur = &w->buf[0], *next = &w->buf[1];
    kd_status st = c->dataset->get(c->dataset_self, idx, cur, label);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", l->label);
    /* KD_LABEL_NONE: a sample of an unlabeled pool (data.train.unlabeled) */
    if (l->info.num_classes > 0 && *label != KD_LABEL_NONE &&
        (*label < 0 || *label >= l->info.num_classes))
        return kd_error(KD_ERR_FORMAT, "%s: sample %" PRId64 " has label %" PRId64
                                       ", outside 0..%d",
                        l->label, idx, *label, l->info.num_classes - 1);
    kd_rng rng = kd_rng_make(c->seed, (KD_LOADER_STREAM_AUGMENT << 32) | (uint64_t)epoch,
                             (uint64_t)idx);
    for (int t = 0; t < c->n_transforms; t++) {
        st = l->transforms[t]->apply(l->transform_selves[t], cur, next, &rng);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s.transforms[%d] on sample %" PRId64, l->label, t, idx);
        kd_sample *swap = cur;
        cur = next;
        next = swap;
    }
    if (cur->dtype != KD_F32)
        return kd_error(KD_ERR_INVALID,
                        "%s.transforms: the last transform must produce a tensor (to_tensor "
                        "or normalize); sample %" PRId64 " ends as a %s image",
                        l->label, idx, kd_dtype_name(cur->dtype));
    *out = cur;
    return KD_OK;
}

/* Makes t a caller-owned tensor of the given shape, reusing it when it
 * already is one. */
static kd_status shape_tensor(const char *label, kd_tensor **t, kd_dtype dtype, int ndim,
                              const int64_t *shape)
{
    if (*t) {
        bool same = (*t)->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
            same = (*t)->shape[d] == shape[d];
        if (same)
            return KD_OK;
        kd_tensor_free(*t);
    }
    /* kd_loader_next may build on a thread with a step scope open. */
    *t = kd_tensor_keep(kd_tensor_empty(dtype, KD_CPU, ndim, shape));
    return *t ? KD_OK : kd_error_wrap(KD_ERR_NOMEM, "%s: a batch", label);
}

static kd_status build_batch(kd_loader *l, builder *w, int64_t b, int64_t epoch, uint64_t gen,
                             slot *s)
{
    const kd_loader_config *c = &l->cfg;
    int64_t first = b * c->batch_size;
    int64_t count = l->n - first < c->batch_size ? l->n - first : c->batch_size;
    s->global_size = count;
    if (c->shards > 1) {
        /* this process's contiguous part of the global batch */
        int64_t begin = count * c->shard / c->shards, end = count * (c->shard + 1) / c->shards;
        first += begin;
        count = end - begin;
    }
    int64_t shape[4] = {count, 0, 0, 0}, first_index = 0;
    size_t sample_floats = 0;
    for (int64_t i = 0; i < count; i++) {
        if (abandoned(l, gen))
            return KD_OK;
        int64_t idx = c->shuffle ? l->order[first + i] : first + i, label;
        const kd_sample *x = NULL;
        kd_status st = make_sample(l, w, epoch, idx, &label, &x);
        if (st != KD_OK)
            return st;
        if (i == 0) {
            shape[1] = x->channels;
            shape[2] = x->height;
            shape[3] = x->width;
            first_index = idx;
            sample_floats = (size_t)x->channels * (size_t)x->height * (size_t)x->width;
            if ((st = shape_tensor(l->label, &s->images, KD_F32, 4, shape)) != KD_OK ||
                (st = shape_tensor(l->label, &s->labels, KD_I64, 1, shape)) != KD_OK ||
                (st = shape_tensor(l->label, &s->indices, KD_I64, 1, shape)) != KD_OK)
                return st;
        } else if (x->channels != shape[1] || x->height != shape[2] || x->width != shape[3]) {
            return kd_error(KD_ERR_INVALID,
                            "%s.transforms: sample %" PRId64 " ends %dx%dx%d (CxHxW) but "
                            "sample %" PRId64 " of the same batch ends %" PRId64 "x%" PRId64
                            "x%" PRId64 "; every sample must end the same shape",
                            l->label, idx, x->channels, x->height, x->width, first_index,
                            shape[1], shape[2], shape[3]);
        }
        float *images = kd_tensor_data(s->images);
        memcpy(images + (size_t)i * sample_floats, x->data, sample_floats * sizeof(float));
        ((int64_t *)kd_tensor_data(s->labels))[i] = label;
        ((int64_t *)kd_tensor_data(s->indices))[i] = idx;
    }
    return KD_OK;
}

/* Builds batch b into s and records the outcome in it. */
static void fill_slot(kd_loader *l, builder *w, int64_t b, int64_t epoch, uint64_t gen,
                      slot *s)
{
    s->status = build_batch(l, w, b, epoch, gen, s);
    if (s->status != KD_OK)
        snprintf(s->message, sizeof s->message, "%s", kd_last_error());
}

static bool can_claim(const kd_loader *l)
{
    int64_t released = l->held >= 0 ? l->held : l->next_out;
    return l->active && l->claim < l->batches && l->claim < released + l->n_slots;
}

/* A worker builds one sample at a time on its own thread. An OpenMP
 * region in a dataset or transform would otherwise start a team of
 * OpenMP's default size (every CPU: kd_set_num_threads sets the calling
 * thread's only) next to the compute team (core/train/threads.h). */
static void keep_openmp_on_this_thread(void)
{
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
}

static void *worker_main(void *arg)
{
    builder *w = arg;
    kd_loader *l = w->loader;
    keep_openmp_on_this_thread();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && !can_claim(l))
            pthread_cond_wait(&l->work, &l->mu);
        if (l->quit)
            break;
        int64_t b = l->claim++, epoch = l->epoch;
        uint64_t gen = atomic_load(&l->generation);
        slot *s = &l->slots[b % l->n_slots];
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        fill_slot(l, w, b, epoch, gen, s);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == atomic_load(&l->generation)) {
            s->batch = b;
            s->ready = true;
        }
        pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---------------------------------------------------------------- lifetime */

static kd_status check_config(const kd_loader_config *c, const char *label)
{
    if (!c->dataset || !c->dataset->get || !c->dataset->info || !c->dataset_self)
        return kd_error(KD_ERR_INVALID, "%s: no dataset", label);
    if (c->n_transforms < 0 ||
        (c->n_transforms > 0 && (!c->transforms || !c->transform_selves)))
        return kd_error(KD_ERR_INVALID, "%s.transforms: %d transforms without their vtables",
                        label, c->n_transforms);
    for (int t = 0; t < c->n_transforms; t++)
        if (!c->transforms[t] || !c->transforms[t]->apply || !c->transform_selves[t])
            return kd_error(KD_ERR_INVALID, "%s.transforms[%d]: no transform", label, t);
    if (c->batch_size < 1)
        return kd_error(KD_ERR_INVALID, "%s: batch_size must be at least 1, got %" PRId64,
                        label, c->batch_size);
    if (c->workers < 0 || c->workers > LOADER_MAX_THREADS)
        return kd_error(KD_ERR_INVALID, "%s: workers must be 0 to %d, got %d", label,
                        LOADER_MAX_THREADS, c->workers);
    if (c->prefetch < 1 || c->prefetch > LOADER_MAX_PREFETCH)
        return kd_error(KD_ERR_INVALID, "%s: prefetch must be 1 to %d, got %d", label,
                        LOADER_MAX_PREFETCH, c->prefetch);
    if (c->subset < 0)
        return kd_error(KD_ERR_INVALID, "%s: subset must be 0 (all) or positive, got %" PRId64,
                        label, c->subset);
    if (c->shards > 1 && (c->shard < 0 || c->shard >= c->shards))
        return kd_error(KD_ERR_INVALID, "%s: shard %d of %d", label, c->shard, c->shards);
    if (c->shards > 1 && c->batch_size < c->shards)
        return kd_error(KD_ERR_INVALID, "%s: batch_size %" PRId64 " is the global batch and "
                        "must give each of the %d processes a sample", label, c->batch_size,
                        c->shards);
    return KD_OK;
}

static kd_status measure(kd_loader *l)
{
    const kd_loader_config *c = &l->cfg;
    kd_status st = c->dataset->info(c->dataset_self, &l->info);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", l->label);
    if (l->info.length < 1)
        return kd_error(KD_ERR_INVALID, "%s: the dataset is empty", l->label);
    if (c->subset > l->info.length)
        return kd_error(KD_ERR_INVALID,
                        "%s: subset %" PRId64 " is larger than the dataset's %" PRId64
                        " samples",
                        l->label, c->subset, l->info.length);
    l->n = c->subset ? c->subset : l->info.length;
    l->batches = c->drop_last ? l->n / c->batch_size
                              : (l->n + c->batch_size - 1) / c->batch_size;
    /* a last batch too small to give every process a sample is dropped */
    if (c->shards > 1 && !c->drop_last && l->n % c->batch_size != 0 &&
        l->n % c->batch_size < c->shards)
        l->batches--;
    if (l->batches == 0)
        return kd_error(KD_ERR_INVALID,
                        "%s: drop_last with batch_size %" PRId64 " leaves no batch of %" PRId64
                        " samples",
                        l->label, c->batch_size, l->n);
    return KD_OK;
}

static kd_status copy_config(kd_loader *l, const kd_loader_config *c, const char *label)
{
    l->cfg = *c;
    l->label = strdup(label);
    int nt = c->n_transforms;
    l->transforms = calloc((size_t)nt + 1, sizeof *l->transforms);
    l->transform_selves = calloc((size_t)nt + 1, sizeof *l->transform_selves);
    if (!l->label || !l->transforms || !l->transform_selves)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    for (int t = 0; t < nt; t++) {
        l->transforms[t] = c->transforms[t];
        l->transform_selves[t] = c->transform_selves[t];
    }
    l->cfg.label = l->label;
    l->cfg.transforms = l->transforms;
    l->cfg.transform_selves = l->transform_selves;
    return KD_OK;
}

static kd_status start_threads(kd_loader *l)
{
    for (int i = 0; i < l->cfg.workers; i++) {
        int rc = pthread_create(&l->builders[i].thread, NULL, worker_main, &l->builders[i]);
        if (rc != 0)
            return kd_error(KD_ERR_NOMEM, "%s: starting worker %d of %d: %s", l->label, i,
                            l->cfg.workers, strerror(rc));
        l->n_threads++;
    }
    return KD_OK;
}

kd_status kd_loader_new(const kd_loader_config *config, kd_loader **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "kd_loader_new: no output pointer");
    *out = NULL;
    if (!config)
        return kd_error(KD_ERR_INVALID, "kd_loader_new: no config");
    const char *label = config->label ? config->label : "data";
    kd_status st = check_config(config, label);
    if (st != KD_OK)
        return st;
    kd_loader *l = calloc(1, sizeof *l);
    if (!l)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->done, NULL);
    atomic_init(&l->generation, 0);
    l->held = -1;
    st = copy_config(l, config, label);
    if (st == KD_OK)
        st = measure(l);
    if (st == KD_OK) {
        l->n_builders = config->workers ? config->workers : 1;
        l->n_slots = config->workers ? config->prefetch + 1 : 1;
        l->builders = calloc((size_t)l->n_builders, sizeof *l->builders);
        l->slots = calloc((size_t)l->n_slots, sizeof *l->slots);
        l->order = config->shuffle ? malloc((size_t)l->n * sizeof *l->order) : NULL;
        if (!l->builders || !l->slots || (config->shuffle && !l->order))
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    }
    if (st == KD_OK) {
        for (int i = 0; i < l->n_builders; i++)
            l->builders[i].loader = l;
        st = start_threads(l);
    }
    if (st != KD_OK) {
        kd_loader_free(l);
        return st;
    }
    *out = l;
    return KD_OK;
}

void kd_loader_free(kd_loader *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->quit = true;
    atomic_fetch_add(&l->generation, 1);
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->n_threads; i++)
        pthread_join(l->builders[i].thread, NULL);
    for (int i = 0; l->slots && i < l->n_slots; i++) {
        kd_tensor_free(l->slots[i].images);
        kd_tensor_free(l->slots[i].labels);
        kd_tensor_free(l->slots[i].indices);
    }
    for (int i = 0; l->builders && i < l->n_builders; i++) {
        free(l->builders[i].buf[0].data);
        free(l->builders[i].buf[1].data);
    }
    pthread_cond_destroy(&l->done);
    pthread_cond_destroy(&l->work);
    pthread_mutex_destroy(&l->mu);
    free(l->slots);
    free(l->builders);
    free(l->order);
    free(l->transforms);
    free(l->transform_selves);
    free(l->label);
    free(l);
}

int64_t kd_loader_batches_per_epoch(const kd_loader *l) { return l ? l->batches : 0; }

int64_t kd_loader_samples_per_epoch(const kd_loader *l) { return l ? l->n : 0; }

/* ------------------------------------------------------------------ epochs */

static void shuffle_order(kd_loader *l, int64_t epoch)
{
    kd_rng rng = kd_rng_make(l->cfg.seed, (KD_LOADER_STREAM_SHUFFLE << 32) | (uint64_t)epoch, 0);
    for (int64_t i = 0; i < l->n; i++)
        l->order[i] = i;
    for (int64_t i = l->n - 1; i > 0; i--) {
        int64_t j = (int64_t)kd_rng_below(&rng, (uint64_t)i + 1);
        int64_t t = l->order[i];
        l->order[i] = l->order[j];
        l->order[j] = t;
    }
}

kd_status kd_loader_start(kd_loader *l, int64_t epoch, int64_t first_batch)
{
    if (!l)
        return kd_error(KD_ERR_INVALID, "kd_loader_start: no loader");
    if (epoch < 0 || epoch > (int64_t)UINT32_MAX)
        return kd_error(KD_ERR_INVALID, "%s: epoch %" PRId64 " is outside 0..%" PRIu32,
                        l->label, epoch, UINT32_MAX);
    if (first_batch < 0 || first_batch > l->batches)
        return kd_error(KD_ERR_INVALID,
                        "%s: first batch %" PRId64 " is outside 0..%" PRId64
                        " (batches per epoch)",
                        l->label, first_batch, l->batches);
    /* Abandon the previous epoch and wait until no worker writes a slot. */
    pthread_mutex_lock(&l->mu);
    l->active = false;
    atomic_fetch_add(&l->generation, 1);
    while (l->busy > 0)
        pthread_cond_wait(&l->done, &l->mu);
    for (int i = 0; i < l->n_slots; i++)
        l->slots[i].ready = false;
    pthread_mutex_unlock(&l->mu);
    if (l->cfg.shuffle)
        shuffle_order(l, epoch);
    pthread_mutex_lock(&l->mu);
    l->epoch = epoch;
    l->claim = l->next_out = first_batch;
    l->held = -1;
    l->active = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    return KD_OK;
}

kd_status kd_loader_next(kd_loader *l, kd_batch *out, bool *done)
{
    if (!l || !out || !done)
        return kd_error(KD_ERR_INVALID, "kd_loader_next: NULL %s",
                        !l ? "loader" : !out ? "batch" : "done");
    *done = false;
    pthread_mutex_lock(&l->mu);
    if (!l->active) {
        pthread_mutex_unlock(&l->mu);
        return kd_error(KD_ERR_STATE, "%s: kd_loader_next before kd_loader_start", l->label);
    }
    if (l->held >= 0) {
        l->slots[l->held % l->n_slots].ready = false;
        l->held = -1;
        pthread_cond_broadcast(&l->work);
    }
    if (l->next_out >= l->batches) {
        *done = true;
        pthread_mutex_unlock(&l->mu);
        return KD_OK;
    }
    int64_t b = l->next_out;
    slot *s = &l->slots[b % l->n_slots];
    if (l->n_threads == 0 && !(s->ready && s->batch == b)) {
        fill_slot(l, &l->builders[0], b, l->epoch, atomic_load(&l->generation), s);
        s->batch = b;
        s->ready = true;
    }
    while (!(s->ready && s->batch == b))
        pthread_cond_wait(&l->done, &l->mu);
    kd_status st = s->status;
    if (st == KD_OK) {
        l->held = b;
        l->next_out++;
        out->images = s->images;
        out->labels = s->labels;
        out->indices = s->indices;
        out->global_size = s->global_size;
        out->index = b;
    }
    pthread_mutex_unlock(&l->mu);
    return st == KD_OK ? KD_OK : kd_error(st, "%s", s->message);
}
