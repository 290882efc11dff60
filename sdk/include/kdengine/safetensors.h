/* kdengine: safetensors files (the Hugging Face format timm publishes).
 *
 * A file is opened with mmap and validated whole before any tensor is
 * handed out: header size bound, JSON shape, known dtypes, offsets that tile
 * the data buffer exactly (no gaps, no overlaps), byte counts that match
 * the shapes, a file length that matches the last offset. A malformed file
 * is a KD_ERR_FORMAT naming the file and the offending tensor.
 *
 * Ownership: kd_safetensors_open returns a handle the caller closes with
 * kd_safetensors_close; entries and their data pointers live until then.
 * Tensors made by kd_safetensors_load are ordinary tensors (tensor.h). */
#ifndef KDENGINE_SAFETENSORS_H
#define KDENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <kdengine/api.h>
#include <kdengine/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kd_safetensors kd_safetensors;

typedef struct kd_safetensors_entry {
    const char *name;
    const char *file_dtype; /* as written: "F32", "I64", "F8_E4M3", ... */
    int dtype;              /* the kd_dtype it maps to, or -1 if none */
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    const void *data; /* inside the mapping; may be unaligned */
    size_t nbytes;
} kd_safetensors_entry;

KD_API kd_status kd_safetensors_open(const char *path, kd_safetensors **out);
/* Validates and indexes a file already in memory (bytes must outlive the
 * handle). label names it in messages. Used by the fuzzer. */
KD_API kd_status kd_safetensors_parse(const void *bytes, size_t len, const char *label,
                                      kd_safetensors **out);
KD_API void kd_safetensors_close(kd_safetensors *f);

KD_API int kd_safetensors_count(const kd_safetensors *f);
/* Entries in data-offset order. */
KD_API const kd_safetensors_entry *kd_safetensors_at(const kd_safetensors *f, int i);
KD_API const kd_safetensors_entry *kd_safetensors_find(const kd_safetensors *f,
                                                       const char *name);
/* A value from __metadata__, or NULL. */
KD_API const char *kd_safetensors_metadata(const kd_safetensors *f, const char *key);

/* A new CPU tensor holding the named entry converted to `dtype` (float
 * types convert among themselves, integer types among themselves). */
KD_API kd_tensor *kd_safetensors_load(const kd_safetensors *f, const char *name,
                                      kd_dtype dtype);

/* Writes tensors (any device; copied to the host) with the given names and
 * optional string metadata pairs (meta[2*i] key, meta[2*i+1] value), laid
 * out as the reference writer does (by alignment, then name; header padded
 * to 8 bytes). Atomic: temp file, fsync, rename, fsync of the directory. */
KD_API kd_status kd_safetensors_save(const char *path, int n, const char *const *names,
                                     kd_tensor *const *tensors, int nmeta,
                                     const char *const *meta);

#ifdef __cplusplus
}
#endif
#endif
