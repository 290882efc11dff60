#include "config.h"

#include "idx_reader.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef KD_HAVE_ZLIB
#include <zlib.h>
#endif

struct kd_idx {
    char *label;
    kd_idx_type type;
    int ndims;
    int64_t dims[KD_IDX_MAX_DIMS];
    size_t item_bytes;
    size_t data_bytes;
    uint8_t *buf; /* the whole decoded file: header, then the elements */
    const uint8_t *data;
};

typedef struct idx_header {
    int type, ndims;
    int64_t dims[KD_IDX_MAX_DIMS];
    size_t header_bytes, item_bytes, data_bytes;
} idx_header;

const char *kd_idx_type_name(int code)
{
    switch (code) {
    case KD_IDX_U8: return "u8";
    case KD_IDX_I8: return "i8";
    case KD_IDX_I16: return "i16";
    case KD_IDX_I32: return "i32";
    case KD_IDX_F32: return "f32";
    case KD_IDX_F64: return "f64";
    default: return NULL;
    }
}

int kd_idx_type_size(int code)
{
    switch (code) {
    case KD_IDX_U8:
    case KD_IDX_I8: return 1;
    case KD_IDX_I16: return 2;
    case KD_IDX_I32:
    case KD_IDX_F32: return 4;
    case KD_IDX_F64: return 8;
    default: return 0;
    }
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* "60000x28x28 u8" */
static const char *describe_dims(const idx_header *h, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < h->ndims && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64, i ? "x" : "", h->dims[i]);
    if (n < size)
        snprintf(buf + n, size - n, " %s", kd_idx_type_name(h->type));
    return buf;
}

/* Validates the header at the start of p[0..n) and sizes the data it
 * announces; the caller compares that with the bytes that follow. */
static kd_status parse_header(const char *label, const uint8_t *p, size_t n, idx_header *h)
{
    if (n < 4)
        return kd_error(KD_ERR_FORMAT, "%s: %zu bytes, too short for the 4-byte IDX magic",
                        label, n);
    if (p[0] || p[1])
        return kd_error(KD_ERR_FORMAT,
                        "%s: bad magic %02x %02x %02x %02x (an IDX file starts with two "
                        "zero bytes)",
                        label, p[0], p[1], p[2], p[3]);
    h->type = p[2];
    h->ndims = p[3];
    int esize = kd_idx_type_size(h->type);
    if (!esize)
        return kd_error(KD_ERR_FORMAT,
                        "%s: unknown element type 0x%02x (known: 0x08 u8, 0x09 i8, 0x0b "
                        "i16, 0x0c i32, 0x0d f32, 0x0e f64)",
                        label, h->type);
    if (h->ndims < 1 || h->ndims > KD_IDX_MAX_DIMS)
        return kd_error(KD_ERR_FORMAT, "%s: %d dims; IDX files here have 1 to %d", label,
                        h->ndims, KD_IDX_MAX_DIMS);
    h->header_bytes = 4 + 4 * (size_t)h->ndims;
    if (n < h->header_bytes)
        return kd_error(KD_ERR_FORMAT,
                        "%s: truncated header: %d dims need %zu header bytes but the file "
                        "has %zu",
                        label, h->ndims, h->header_bytes, n);
    for (int i = 0; i < h->ndims; i++)
        h->dims[i] = be32(p + 4 + 4 * i);
    /* Item size and total both checked: with a zero count the total is 0
     * even when the item size overflows. Kept below INT64_MAX so byte
     * offsets also fit an int64_t. */
    uint64_t item = (uint64_t)esize, total;
    bool overflow = false;
    for (int i = 1; i < h->ndims; i++)
        overflow |= __builtin_mul_overflow(item, (uint64_t)h->dims[i], &item);
    overflow |= __builtin_mul_overflow(item, (uint64_t)h->dims[0], &total);
    overflow |= total > (uint64_t)INT64_MAX || total > SIZE_MAX - h->header_bytes;
    if (overflow) {
        char dims[96];
        return kd_error(KD_ERR_FORMAT, "%s: header says %s, too large to address", label,
                        describe_dims(h, dims, sizeof dims));
    }
    h->item_bytes = (size_t)item;
    h->data_bytes = (size_t)total;
    return KD_OK;
}

/* Builds the kd_idx over buf[0..used), which it takes over (also on
 * failure); extra counts decoded bytes past used that were not kept. */
static kd_status finish(const char *label, uint8_t *buf, size_t used, size_t extra,
                        kd_idx **out)
{
    idx_header h = {0};
    kd_status st = parse_header(label, buf, used, &h);
    if (st != KD_OK) {
        free(buf);
        return st;
    }
    size_t follow = used - h.header_bytes + extra;
    if (follow != h.data_bytes) {
        char dims[96];
        free(buf);
        return kd_error(KD_ERR_FORMAT, "%s: header says %s (%zu bytes) but %zu bytes follow",
                        label, describe_dims(&h, dims, sizeof dims), h.data_bytes, follow);
    }
    kd_idx *idx = calloc(1, sizeof *idx);
    char *name = strdup(label);
    if (!idx || !name) {
        free(idx);
        free(name);
        free(buf);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    }
    idx->label = name;
    idx->type = (kd_idx_type)h.type;
    idx->ndims = h.ndims;
    memcpy(idx->dims, h.dims, sizeof idx->dims);
    idx->item_bytes = h.item_bytes;
    idx->data_bytes = h.data_bytes;
    idx->buf = buf;
    idx->data = buf + h.header_bytes;
    *out = idx;
    return KD_OK;
}

static bool is_gzip(const uint8_t *p, size_t n)
{
    return n >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

#ifdef KD_HAVE_ZLIB

/* Grows buf to hold at least need bytes, doubling up to limit. */
static bool grow(uint8_t **buf, size_t *cap, size_t need, size_t limit)
{
    if (need <= *cap)
        return true;
    size_t next = *cap > SIZE_MAX / 2 ? SIZE_MAX : *cap * 2;
    if (next < need)
        next = need;
    if (next > limit)
        next = limit;
    uint8_t *grown = realloc(*buf, next);
    if (!grown)
        return false;
    *buf = grown;
    *cap = next;
    return true;
}

/* Inflates every gzip member in src and hands the result to finish().
 * The header is validated as soon as it is out, so a bad file stops early
 * and the buffer never grows past what the header announces; bytes beyond
 * that are only counted. */
static kd_status gunzip(const char *label, const uint8_t *src, size_t len, kd_idx **out)
{
    /* Deflate expands at most about 1032:1, which bounds the trailer's
     * size hint for a hostile file. */
    size_t hint = len >= 18 ? (size_t)(src[len - 4] | (uint32_t)src[len - 3] << 8 |
                                       (uint32_t)src[len - 2] << 16 |
                                       (uint32_t)src[len - 1] << 24)
                            : 0;
    size_t cap = hint > 64 && hint / 1032 <= len ? hint : 4096;
    uint8_t *buf = malloc(cap);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (!buf || inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        free(buf);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for gzip", label);
    }
    static const size_t unknown = SIZE_MAX;
    size_t used = 0, extra = 0, limit = unknown, fed = 0;
    uint8_t scratch[16384];
    kd_status st = KD_OK;
    for (;;) {
        /* parse_header() refuses a bad magic, type or dim count on the
         * first 4 bytes alone; otherwise it waits for all the dims. */
        if (limit == unknown && used >= 4 &&
            used >= 4 + 4 * (size_t)(buf[3] <= KD_IDX_MAX_DIMS ? buf[3] : 0)) {
            idx_header h = {0};
            st = parse_header(label, buf, used, &h);
            if (st != KD_OK)
                break;
            limit = h.header_bytes + h.data_bytes;
            if (used > limit) {
                extra += used - limit;
                used = limit;
            }
        }
        if (used < limit && !grow(&buf, &cap, used + 1, limit)) {
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory decompressing", label);
            break;
        }
        uint8_t *dst = used < limit ? buf + used : scratch;
        size_t room = used < limit ? cap - used : sizeof scratch;
        zs.next_out = dst;
        zs.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
        if (zs.avail_in == 0 && fed < len) {
            size_t chunk = len - fed > UINT32_MAX ? UINT32_MAX : len - fed;
            zs.next_in = (Bytef *)(uintptr_t)(src + fed);
            zs.avail_in = (uInt)chunk;
            fed += chunk;
        }
        int rc = inflate(&zs, Z_NO_FLUSH);
        size_t produced = (size_t)(zs.next_out - dst);
        if (dst == scratch)
            extra += produced;
        else
            used += produced;
        if (limit != unknown && used > limit) {
            extra += used - limit;
            used = limit;
        }
        if (rc == Z_STREAM_END) {
            size_t left = zs.avail_in + (len - fed);
            if (left == 0)
                break;
            if (!is_gzip(src + len - left, left)) {
                st = kd_error(KD_ERR_FORMAT, "%s: %zu bytes of trailing data after the gzip "
                                             "stream",
                              label, left);
                break;
            }
            inflateReset(&zs);
        } else if (rc == Z_BUF_ERROR) {
            /* There is always output room, so zlib wants more input. */
            st = kd_error(KD_ERR_FORMAT,
                          "%s: gzip stream truncated (ends after %zu compressed bytes, %zu "
                          "decompressed)",
                          label, len, used + extra);
            break;
        } else if (rc == Z_MEM_ERROR) {
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory in zlib", label);
            break;
        } else if (rc != Z_OK) {
            st = kd_error(KD_ERR_FORMAT, "%s: corrupt gzip stream: %s", label,
                          zs.msg ? zs.msg : "bad data");
            break;
        }
    }
    inflateEnd(&zs);
    if (st != KD_OK) {
        free(buf);
        return st;
    }
    return finish(label, buf, used, extra, out);
}

#else

static kd_status gunzip(const char *label, const uint8_t *src, size_t len, kd_idx **out)
{
    (void)src;
    (void)len;
    (void)out;
    return kd_error(KD_ERR_UNSUPPORTED, "%s: gzip-compressed, and kdengine was built without "
                                        "zlib",
                    label);
}

#endif

kd_status kd_idx_parse(const void *bytes, size_t len, const char *label, kd_idx **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "kd_idx_parse: out is NULL");
    *out = NULL;
    if (!label)
        label = "(memory)";
    if (!bytes && len)
        return kd_error(KD_ERR_INVALID, "%s: NULL bytes", label);
    if (is_gzip(bytes, len))
        return gunzip(label, bytes, len, out);
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for %zu bytes", label, len);
    if (len)
        memcpy(copy, bytes, len);
    return finish(label, copy, len, 0, out);
}

static kd_status read_all(const char *path, uint8_t **out, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) {
        int err = errno;
        fclose(fp);
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        fclose(fp);
        return kd_error(KD_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(fp);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
    }
    size_t got = fread(buf, 1, size, fp);
    int err = errno;
    bool failed = ferror(fp);
    fclose(fp);
    if (failed || got != size) {
        free(buf);
        return failed ? kd_error(KD_ERR_IO, "%s: read failed: %s", path, strerror(err))
                      : kd_error(KD_ERR_IO, "%s: file shrank while reading (%zu of %zu bytes)",
                                 path, got, size);
    }
    *out = buf;
    *len = size;
    return KD_OK;
}

kd_status kd_idx_open(const char *path, kd_idx **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "kd_idx_open: out is NULL");
    *out = NULL;
    if (!path)
        return kd_error(KD_ERR_INVALID, "kd_idx_open: path is NULL");
    uint8_t *bytes = NULL;
    size_t len = 0;
    kd_status st = read_all(path, &bytes, &len);
    if (st != KD_OK)
        return st;
    if (!is_gzip(bytes, len))
        return finish(path, bytes, len, 0, out);
    st = gunzip(path, bytes, len, out);
    free(bytes);
    return st;
}

void kd_idx_close(kd_idx *idx)
{
    if (!idx)
        return;
    free(idx->buf);
    free(idx->label);
    free(idx);
}

const char *kd_idx_label(const kd_idx *idx) { return idx->label; }
kd_idx_type kd_idx_type_of(const kd_idx *idx) { return idx->type; }
int kd_idx_ndims(const kd_idx *idx) { return idx->ndims; }
int64_t kd_idx_count(const kd_idx *idx) { return idx->dims[0]; }
size_t kd_idx_item_bytes(const kd_idx *idx) { return idx->item_bytes; }
const uint8_t *kd_idx_data(const kd_idx *idx) { return idx->data; }

int64_t kd_idx_dim(const kd_idx *idx, int i)
{
    return i >= 0 && i < idx->ndims ? idx->dims[i] : -1;
}

const uint8_t *kd_idx_item(const kd_idx *idx, int64_t i)
{
    if (i < 0 || i >= idx->dims[0])
        return NULL;
    return idx->data + (size_t)i * idx->item_bytes;
}

kd_status kd_idx_check_pair(const kd_idx *images, const kd_idx *labels, int num_classes)
{
    if (!images || !labels)
        return kd_error(KD_ERR_INVALID, "kd_idx_check_pair: NULL %s",
                        images ? "labels" : "images");
    if (num_classes < 1 || num_classes > 256)
        return kd_error(KD_ERR_INVALID,
                        "kd_idx_check_pair: num_classes %d is outside 1..256 (u8 labels)",
                        num_classes);
    if (images->type != KD_IDX_U8 || images->ndims < 3)
        return kd_error(KD_ERR_FORMAT,
                        "%s: images must be u8 with 3 (N x H x W) or 4 (N x H x W x C) dims, "
                        "not %d-D %s",
                        images->label, images->ndims, kd_idx_type_name(images->type));
    if (images->dims[0] == 0)
        return kd_error(KD_ERR_FORMAT, "%s: no images", images->label);
    if (labels->type != KD_IDX_U8 || labels->ndims != 1)
        return kd_error(KD_ERR_FORMAT, "%s: labels must be 1-D u8, not %d-D %s",
                        labels->label, labels->ndims, kd_idx_type_name(labels->type));
    if (labels->dims[0] != images->dims[0])
        return kd_error(KD_ERR_FORMAT, "%s has %" PRId64 " labels but %s has %" PRId64
                                       " images",
                        labels->label, labels->dims[0], images->label, images->dims[0]);
    for (int64_t i = 0; i < labels->dims[0]; i++)
        if (labels->data[i] >= num_classes)
            return kd_error(KD_ERR_FORMAT,
                            "%s: label %d at index %" PRId64 " is not below num_classes %d",
                            labels->label, labels->data[i], i, num_classes);
    return KD_OK;
}
