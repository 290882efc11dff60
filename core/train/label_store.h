/* The label store: a teacher's top-k soft labels for every training view
 * (epoch, sample), written once by `kdengine label` and read by the fkd
 * loss, so students train without running the teacher (FKD, Shen & Xing
 * 2022).
 *
 * A store is a folder:
 *
 *   index.json           what the store holds and what made it:
 *     {"format": "kdengine-labels", "version": 1,
 *      "top_k": K, "num_classes": C, "index_bytes": 2 or 4,
 *      "samples": N,                 rows per shard: data.train's samples
 *      "fingerprint": {...},         kd_session_fingerprint of the job
 *      "shards": [{"epoch": 0, "file": "epoch-00000.labels",
 *                  "bytes": B, "checksum": "fnv1a64:0123456789abcdef"}, ...]}
 *   epoch-EEEEE.labels   one shard per labelled epoch, listed in the index
 *                        once it is complete
 *
 * A shard, little-endian:
 *
 *   offset  size  field
 *    0       8    magic "KDLABEL1"
 *    8       4    u32 format version (1)
 *   12       4    u32 epoch
 *   16       8    u64 samples N
 *   24       4    u32 top_k K
 *   28       4    u32 num_classes C
 *   32       4    u32 index bytes: 2 (i16, C <= 32767) or 4 (i32)
 *   36       4    u32 reserved, 0
 *   40       8    u64 FNV-1a 64 of the payload
 *   48            payload: values f16 [N][K], then class indices [N][K]
 *
 * Row i is dataset position i of data.train (its subset), whatever order
 * the epoch visited it in. A row holds the K most probable classes of the
 * teacher's softmax on that view, most probable first (ties: the lower
 * class first); a row the epoch did not visit (drop_last) has every index
 * -1. A shard is written to a temp file, fsynced and renamed into place,
 * then the index is rewritten the same way: a crash leaves the previous
 * index, and `label` continues after the last shard it lists.
 *
 * This file and label_store.c use only the SDK and jansson: the host's
 * `label` command and the fkd loss plugin both compile them. */
#ifndef KD_CORE_LABEL_STORE_H
#define KD_CORE_LABEL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <kdengine/status.h>

#define KD_LABEL_MAGIC "KDLABEL1"
#define KD_LABEL_VERSION 1
#define KD_LABEL_HEADER_BYTES 48
#define KD_LABEL_INDEX_FILE "index.json"
#define KD_LABEL_DEFAULT_TOP_K 10 /* `kdengine label` without --top-k */

/* What every shard of a store shares. */
typedef struct kd_label_layout {
    int64_t samples;
    int top_k, num_classes;
    int index_bytes; /* 2 or 4 */
} kd_label_layout;

/* One epoch's labels, in memory: values f16 bits [samples * top_k],
 * indices [samples * top_k] (-1: not visited). Owned by whoever filled it;
 * kd_label_shard_free releases the arrays. */
typedef struct kd_label_shard {
    kd_label_layout layout;
    int64_t epoch;
    uint16_t *values;
    int32_t *indices;
} kd_label_shard;

/* The index: its layout, its fingerprint (owned) and the complete shards,
 * epoch e in shard_files[e] (owned strings). */
typedef struct kd_label_index {
    kd_label_layout layout;
    json_t *fingerprint;
    int64_t n_shards;
    char **shard_files;
    int64_t *shard_bytes;
    uint64_t *shard_checksums;
} kd_label_index;

/* Whether two layouts are the same, field by field. */
bool kd_label_layout_equal(const kd_label_layout *a, const kd_label_layout *b);

/* 2 when class indices fit in an i16, else 4. */
int kd_label_index_bytes(int num_classes);

/* Bytes of a shard with this layout. */
int64_t kd_label_shard_size(const kd_label_layout *layout);

/* FNV-1a 64 of bytes, continuing from h (start with KD_FNV1A64_INIT). */
#define KD_FNV1A64_INIT 0xcbf29ce484222325ull
uint64_t kd_fnv1a64(uint64_t h, const void *bytes, size_t n);

/* Allocates a shard's arrays, every index -1. */
kd_status kd_label_shard_alloc(const kd_label_layout *layout, int64_t epoch,
                               kd_label_shard *out);
void kd_label_shard_free(kd_label_shard *shard);

/* "epoch-EEEEE.labels" for epoch e. */
void kd_label_shard_name(int64_t epoch, char *buf, size_t size);

/* Writes the shard atomically to path; *bytes and *checksum say what the
 * index records. */
kd_status kd_label_shard_write(const char *path, const kd_label_shard *shard, int64_t *bytes,
                               uint64_t *checksum);

/* Parses a shard's bytes (label names it in messages): the header must
 * match `expect` and `epoch`, the size the layout, the checksum the
 * payload, every index lie in [-1, num_classes). KD_ERR_FORMAT otherwise,
 * naming the label and what is wrong (a truncated file says how many bytes
 * it has and needs). */
kd_status kd_label_shard_parse(const unsigned char *bytes, size_t len, const char *label,
                               const kd_label_layout *expect, int64_t epoch,
                               kd_label_shard *out);

/* Reads and parses the shard of epoch e listed in the index of dir. */
kd_status kd_label_shard_load(const char *dir, const kd_label_index *index, int64_t epoch,
                              kd_label_shard *out);

/* Reads and parses the shard file at path (not listed in an index: a
 * rank's part of an epoch while `label` runs distributed). */
kd_status kd_label_shard_read(const char *path, const kd_label_layout *layout, int64_t epoch,
                              kd_label_shard *out);

/* Reads dir/index.json; KD_ERR_IO when it does not exist, KD_ERR_FORMAT
 * naming the file and the key when it is not a valid index. */
kd_status kd_label_index_load(const char *dir, kd_label_index *out);
/* Parses an index's text (label names it in messages). */
kd_status kd_label_index_parse(const char *text, size_t len, const char *label,
                               kd_label_index *out);
/* Writes dir/index.json atomically. */
kd_status kd_label_index_write(const char *dir, const kd_label_index *index);
/* Drops the shards from epoch `from` on (a rerun labels them again). */
void kd_label_index_truncate(kd_label_index *index, int64_t from);
/* Appends the shard of the next epoch (index->n_shards). */
kd_status kd_label_index_append(kd_label_index *index, const char *file, int64_t bytes,
                                uint64_t checksum);
void kd_label_index_free(kd_label_index *index);

/* Compares two fingerprints key by key. Returns true when they agree;
 * otherwise writes the first difference into why, as a JSON path and both
 * values ("data.transforms[0].params.padding: 1 in the store, 2 in this
 * job"). Top-level keys in `skip_missing` (NULL-terminated) are compared
 * only when both have them. */
bool kd_label_fingerprint_equal(const json_t *store, const json_t *job,
                                const char *const *skip_missing, char *why, size_t size);

#endif
