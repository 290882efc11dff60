/* The host's data loader: batches of transformed samples from a dataset
 * provider, built ahead by worker threads.
 *
 * Results do not depend on the number of workers or on timing:
 *  - Sample order of epoch e (with shuffle): a Fisher-Yates shuffle of
 *    0..n-1 (i from n-1 down to 1 swaps i with kd_rng_below(rng, i + 1))
 *    drawing from
 *        kd_rng_make(seed, KD_LOADER_STREAM_SHUFFLE << 32 | e, 0).
 *    Without shuffle the order is 0..n-1.
 *  - The transforms of dataset sample i in epoch e share one rng,
 *        kd_rng_make(seed, KD_LOADER_STREAM_AUGMENT << 32 | e, i),
 *    handed to each transform in list order.
 * Epochs are below 2^32. Batch b of an epoch holds order positions
 * b * batch_size onwards, so kd_loader_start(l, e, k) continues exactly
 * where an uninterrupted epoch would be at batch k (a resumed run).
 *
 * Threads: workers build whole batches into a ring of prefetch + 1 slots
 * (prefetch built ahead, one held by the caller). With workers == 0
 * kd_loader_next builds each batch on the calling thread. A dataset or
 * transform error is returned by kd_loader_next for the batch it broke,
 * with its message; batches before it arrive as usual. kd_loader_free
 * stops and joins the workers wherever they are.
 *
 * Every function is called from one thread (the training thread). */
#ifndef KD_CORE_LOADER_H
#define KD_CORE_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/plugin.h>

/* The purpose words of the loader's rng streams ("SHUF", "AUGM"). */
#define KD_LOADER_STREAM_SHUFFLE 0x53485546ull
#define KD_LOADER_STREAM_AUGMENT 0x4155474Dull

typedef struct kd_loader_config {
    const kd_dataset_vtable *dataset;
    void *dataset_self;
    const char *label; /* names the loader in messages: "data.train" */
    int n_transforms;
    const kd_transform_vtable *const *transforms; /* [n_transforms] */
    void *const *transform_selves;                /* [n_transforms] */
    int64_t batch_size;
    bool shuffle;
    bool drop_last; /* skip a last batch smaller than batch_size */
    int64_t subset; /* 0: the whole dataset, else its first `subset` samples */
    int workers;    /* 0: batches are built on the calling thread */
    int prefetch;   /* batches built ahead, >= 1 */
    uint64_t seed;
    /* Data parallel: this process builds part `shard` of `shards` of every
     * batch (0 and 0 or 1: all of it). batch_size is then the global
     * batch: batch b's order positions b * batch_size onwards are cut in
     * contiguous parts, part r from floor(m * r / shards) to
     * floor(m * (r + 1) / shards) of the batch's m samples, so parts differ
     * by one sample at most. A last batch of fewer than `shards` samples
     * is dropped (it cannot give every process one). */
    int shard, shards;
} kd_loader_config;

/* One batch. The tensors are caller-owned tensors of the loader (in no
 * scope): valid, views of them included, until the next kd_loader_next,
 * kd_loader_start or kd_loader_free; do not free them. */
typedef struct kd_batch {
    kd_tensor *images;  /* f32 [N, C, H, W] */
    kd_tensor *labels;  /* I64 [N] */
    kd_tensor *indices; /* I64 [N]: dataset positions of the samples */
    int64_t index;      /* batch number in the epoch */
    int64_t global_size; /* samples of the batch over every shard */
} kd_batch;

typedef struct kd_loader kd_loader;

/* Checks the config (the dataset's length against subset and batch size)
 * and starts the workers; the config's vtables and instances must outlive
 * the loader. Nothing is built until kd_loader_start. */
kd_status kd_loader_new(const kd_loader_config *config, kd_loader **out);
/* Stops and joins the workers and frees every batch. NULL is fine. */
void kd_loader_free(kd_loader *loader);

/* Batches per epoch: ceil(n / batch_size), or floor with drop_last. */
int64_t kd_loader_batches_per_epoch(const kd_loader *loader);
/* Samples per epoch: the subset size or the dataset's length. */
int64_t kd_loader_samples_per_epoch(const kd_loader *loader);

/* Begins epoch `epoch` at batch first_batch (0 <= first_batch <=
 * batches per epoch), abandoning whatever the previous epoch had left. */
kd_status kd_loader_start(kd_loader *loader, int64_t epoch, int64_t first_batch);
/* The next batch into *out, or *done = true after the epoch's last one.
 * A failed batch keeps failing with the same error until the next
 * kd_loader_start. KD_ERR_STATE before the first start. */
kd_status kd_loader_next(kd_loader *loader, kd_batch *out, bool *done);

#endif
