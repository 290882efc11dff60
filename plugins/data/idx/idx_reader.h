/* IDX files (MNIST, Fashion-MNIST): plain or gzip-compressed, read whole
 * into memory and validated.
 *
 * Layout, all big-endian: two zero bytes, a type code, the number of dims
 * (1..4), one u32 per dim, then the elements. The first dim counts items;
 * item i is the i-th block of (product of the other dims) elements.
 *
 * After open the object is read-only, so any number of loader threads may
 * read items at once. Every failure leaves a message naming the file. */
#ifndef KD_IDX_READER_H
#define KD_IDX_READER_H

#include <stddef.h>
#include <stdint.h>

#include <kdengine/status.h>

typedef enum kd_idx_type {
    KD_IDX_U8 = 0x08,
    KD_IDX_I8 = 0x09,
    KD_IDX_I16 = 0x0B,
    KD_IDX_I32 = 0x0C,
    KD_IDX_F32 = 0x0D,
    KD_IDX_F64 = 0x0E
} kd_idx_type;

#define KD_IDX_MAX_DIMS 4

typedef struct kd_idx kd_idx;

/* Opens path; gzip is recognised by its magic bytes, not the name.
 * KD_ERR_IO (with strerror), KD_ERR_FORMAT (bad header, size mismatch,
 * corrupt gzip) or KD_ERR_NOMEM; *out is NULL on failure. */
kd_status kd_idx_open(const char *path, kd_idx **out);
/* The same from memory (the bytes are copied); label names the data in
 * messages. */
kd_status kd_idx_parse(const void *bytes, size_t len, const char *label, kd_idx **out);
void kd_idx_close(kd_idx *idx);

const char *kd_idx_label(const kd_idx *idx);
kd_idx_type kd_idx_type_of(const kd_idx *idx);
int kd_idx_ndims(const kd_idx *idx);
/* Dim i (0 <= i < ndims), or -1 when i is out of range. */
int64_t kd_idx_dim(const kd_idx *idx, int i);
/* Items: the first dim. */
int64_t kd_idx_count(const kd_idx *idx);
/* Bytes per item: element size times the product of dims 1.. (the element
 * size for a 1-D file). */
size_t kd_idx_item_bytes(const kd_idx *idx);
/* The raw bytes of item i (big-endian for multi-byte types), or NULL when i
 * is out of range. */
const uint8_t *kd_idx_item(const kd_idx *idx, int64_t i);
/* All elements, count * item_bytes bytes. */
const uint8_t *kd_idx_data(const kd_idx *idx);

/* "u8", "i8", "i16", "i32", "f32", "f64"; NULL for an unknown code. */
const char *kd_idx_type_name(int code);
/* Element size in bytes; 0 for an unknown code. */
int kd_idx_type_size(int code);

/* Checks that images and labels form a classification set: images are u8
 * with 3 (N x H x W) or 4 (N x H x W x C) dims and at least one item,
 * labels are u8 with 1 dim and the same count, and every label is below
 * num_classes. KD_ERR_FORMAT naming the file at fault otherwise. */
kd_status kd_idx_check_pair(const kd_idx *images, const kd_idx *labels, int num_classes);

#endif
