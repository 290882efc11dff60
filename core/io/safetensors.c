/* safetensors files: a validating mmap reader and an atomic writer.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data
 * buffer that the tensors' data_offsets tile exactly. The reader checks the
 * whole header against the buffer before it hands out any entry, so no
 * later access can leave the mapping. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and this code does not byte-swap"
#endif

#define HEADER_MAX_BYTES 100000000u
/* The format's JSON schema caps every integer at 2^48 - 1. */
#define DIM_LIMIT ((uint64_t)1 << 48)
#define METADATA_KEY "__metadata__"

typedef enum element_kind {
    KIND_FLOAT, /* F16, BF16, F32, F64: loadable into any float dtype */
    KIND_SIGNED,
    KIND_UNSIGNED,
    KIND_BOOL,
    KIND_OTHER /* fp8, sub-byte and complex types: indexed, never loaded */
} element_kind;

typedef struct format_dtype {
    const char *name;
    int bits;
    element_kind kind;
    int kd; /* kd_dtype, or -1 */
} format_dtype;

/* In the reference library's enum order: the writer lays tensors out by
 * descending position in this table, which is descending alignment. */
static const format_dtype format_dtypes[] = {
    {"BOOL", 8, KIND_BOOL, -1},
    {"F4", 4, KIND_OTHER, -1},
    {"F6_E2M3", 6, KIND_OTHER, -1},
    {"F6_E3M2", 6, KIND_OTHER, -1},
    {"U8", 8, KIND_UNSIGNED, KD_U8},
    {"I8", 8, KIND_SIGNED, -1},
    {"F8_E5M2", 8, KIND_OTHER, -1},
    {"F8_E4M3", 8, KIND_OTHER, -1},
    {"F8_E8M0", 8, KIND_OTHER, -1},
    {"F8_E4M3FNUZ", 8, KIND_OTHER, -1},
    {"F8_E5M2FNUZ", 8, KIND_OTHER, -1},
    {"I16", 16, KIND_SIGNED, -1},
    {"U16", 16, KIND_UNSIGNED, -1},
    {"F16", 16, KIND_FLOAT, KD_F16},
    {"BF16", 16, KIND_FLOAT, KD_BF16},
    {"I32", 32, KIND_SIGNED, KD_I32},
    {"U32", 32, KIND_UNSIGNED, -1},
    {"F32", 32, KIND_FLOAT, KD_F32},
    {"C64", 64, KIND_OTHER, -1},
    {"F64", 64, KIND_FLOAT, KD_F64},
    {"I64", 64, KIND_SIGNED, KD_I64},
    {"U64", 64, KIND_UNSIGNED, -1},
};
#define N_FORMAT_DTYPES ((int)(sizeof format_dtypes / sizeof format_dtypes[0]))

static int format_dtype_find(const char *name)
{
    for (int i = 0; i < N_FORMAT_DTYPES; i++)
        if (strcmp(format_dtypes[i].name, name) == 0)
            return i;
    return -1;
}

static int format_dtype_of(kd_dtype dtype)
{
    for (int i = 0; i < N_FORMAT_DTYPES; i++)
        if (format_dtypes[i].kd == (int)dtype)
            return i;
    return -1;
}

typedef struct slot {
    kd_safetensors_entry entry;
    uint64_t begin, end; /* data_offsets, relative to the data buffer */
    int format;          /* index into format_dtypes */
} slot;

struct kd_safetensors {
    char *label;
    slot *slots; /* data-offset order */
    int n;
    const slot **by_name; /* sorted by name */
    char **meta;  /* key, value, key, value, ... */
    int nmeta;
    void *map; /* the mapping kd_safetensors_open made, if any */
    size_t map_len;
};

/* ------------------------------------------------------------------ reader */

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void shape_text(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* Reads a JSON integer in [0, limit). */
static bool json_uint(const json_t *v, uint64_t limit, uint64_t *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i >= limit)
        return false;
    *out = (uint64_t)i;
    return true;
}

/* A tensor name short enough to leave room for the rule in a message. */
static const char *clip_name(const char *name, char *buf, size_t size)
{
    if (strlen(name) < size)
        return name;
    snprintf(buf, size, "%.*s...", (int)size - 4, name);
    return buf;
}

static kd_status parse_entry(const char *label, const char *full_name, json_t *info,
                             slot *s)
{
    char clipped[200];
    const char *name = clip_name(full_name, clipped, sizeof clipped);
    if (!json_is_object(info))
        return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                        label, name);
    const char *field;
    json_t *value;
    json_object_foreach(info, field, value) {
        if (strcmp(field, "dtype") != 0 && strcmp(field, "shape") != 0 &&
            strcmp(field, "data_offsets") != 0) {
            char clipped_field[64];
            return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': unknown field '%s'",
                            label, name,
                            clip_name(field, clipped_field, sizeof clipped_field));
        }
    }
    static const char *const required[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(info, required[i]))
            return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': missing field '%s'",
                            label, name, required[i]);

    json_t *dtype = json_object_get(info, "dtype");
    if (!json_is_string(dtype))
        return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': dtype is not a string",
                        label, name);
    s->format = format_dtype_find(json_string_value(dtype));
    if (s->format < 0)
        return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'",
                        label, name, json_string_value(dtype));
    const format_dtype *ft = &format_dtypes[s->format];

    json_t *shape = json_object_get(info, "shape");
    if (!json_is_array(shape))
        return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': shape is not an array",
                        label, name);
    if (json_array_size(shape) > KD_MAX_DIMS)
        return kd_error(KD_ERR_FORMAT, "%s: tensor '%s': rank %zu exceeds %d", label,
                        name, json_array_size(shape), KD_MAX_DIMS);
    s->entry.ndim = (int)json_array_size(shape);
    /* span multiplies the non-zero dims: a tensor's strides are products of
     * them even when another dim is 0, so it must fit an int64 too. */
    uint64_t span = 1;
    bool overflow = false, empty = false;
    for (int d = 0; d < s->entry.ndim; d++) {
        uint64_t dim;
        if (!json_uint(json_array_get(shape, (size_t)d), DIM_LIMIT, &dim))
            return kd_error(KD_ERR_FORMAT,
                            "%s: tensor '%s': shape[%d] is not an integer in "
                            "[0, 2^48)",
                            label, name, d);
        s->entry.shape[d] = (int64_t)dim;
        empty |= dim == 0;
        overflow |= __builtin_mul_overflow(span, dim ? dim : 1, &span);
    }
    char shape_buf[256];
    shape_text(s->entry.shape, s->entry.ndim, shape_buf, sizeof shape_buf);
    uint64_t nbits;
    if (overflow || span > INT64_MAX ||
        __builtin_mul_overflow(empty ? 0 : span, (uint64_t)ft->bits, &nbits))
        return kd_error(KD_ERR_FORMAT,
                        "%s: tensor '%s': shape %s of %s overflows a 64-bit size",
                        label, name, shape_buf, ft->name);
    if (nbits % 8 != 0)
        return kd_error(KD_ERR_FORMAT,
                        "%s: tensor '%s': shape %s of %s is %llu bits, not whole "
                        "bytes",
                        label, name, shape_buf, ft->name, (unsigned long long)nbits);

    json_t *offsets = json_object_get(info, "data_offsets");
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        !json_uint(json_array_get(offsets, 0), UINT64_MAX, &s->begin) ||
        !json_uint(json_array_get(offsets, 1), UINT64_MAX, &s->end))
        return kd_error(KD_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets is not an array of two "
                        "non-negative integers",
                        label, name);
    if (s->end < s->begin)
        return kd_error(KD_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] end before they "
                        "begin",
                        label, name, (unsigned long long)s->begin,
                        (unsigned long long)s->end);
    if (s->end - s->begin != nbits / 8)
        return kd_error(KD_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes "
                        "but shape %s of %s needs %llu",
                        label, name, (unsigned long long)s->begin,
                        (unsigned long long)s->end,
                        (unsigned long long)(s->end - s->begin), shape_buf, ft->name,
                        (unsigned long long)(nbits / 8));

    s->entry.name = strdup(full_name);
    if (!s->entry.name)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    s->entry.file_dtype = ft->name;
    s->entry.dtype = ft->kd;
    s->entry.nbytes = (size_t)(nbits / 8);
    return KD_OK;
}

static kd_status parse_metadata(kd_safetensors *f, json_t *meta)
{
    if (!json_is_object(meta))
        return kd_error(KD_ERR_FORMAT, "%s: __metadata__ is not a JSON object",
                        f->label);
    f->meta = calloc(2 * json_object_size(meta) + 1, sizeof *f->meta);
    if (!f->meta)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", f->label);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        char clipped[200];
        if (!json_is_string(value))
            return kd_error(KD_ERR_FORMAT,
                            "%s: __metadata__ value of '%s' is not a string",
                            f->label, clip_name(key, clipped, sizeof clipped));
        f->meta[2 * f->nmeta] = strdup(key);
        f->meta[2 * f->nmeta + 1] = strdup(json_string_value(value));
        f->nmeta++;
        if (!f->meta[2 * f->nmeta - 2] || !f->meta[2 * f->nmeta - 1])
            return kd_error(KD_ERR_NOMEM, "%s: out of memory", f->label);
    }
    return KD_OK;
}

static int compare_offsets(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->entry.name, y->entry.name);
}

static int compare_slot_names(const void *a, const void *b)
{
    return strcmp((*(const slot *const *)a)->entry.name,
                  (*(const slot *const *)b)->entry.name);
}

/* Checks that the sorted entries tile the data buffer exactly, then points
 * each entry into it. */
static kd_status place_entries(kd_safetensors *f, const unsigned char *data,
                               uint64_t data_len)
{
    uint64_t start = 0;
    for (int i = 0; i < f->n; i++) {
        const slot *s = &f->slots[i];
        char clipped[200];
        if (s->begin != start)
            return kd_error(KD_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu] begin at "
                            "%llu but the previous tensor ends at %llu (%s)",
                            f->label, clip_name(s->entry.name, clipped, sizeof clipped), (unsigned long long)s->begin,
                            (unsigned long long)s->end, (unsigned long long)s->begin,
                            (unsigned long long)start,
                            s->begin > start ? "a gap" : "an overlap");
        start = s->end;
    }
    if (start != data_len)
        return kd_error(KD_ERR_FORMAT,
                        "%s: the tensors end at data offset %llu but the data "
                        "buffer holds %llu bytes",
                        f->label, (unsigned long long)start,
                        (unsigned long long)data_len);
    for (int i = 0; i < f->n; i++)
        f->slots[i].entry.data = data + f->slots[i].begin;
    return KD_OK;
}

static kd_status parse_header(kd_safetensors *f, const unsigned char *bytes,
                              size_t len)
{
    if (len < 8)
        return kd_error(KD_ERR_FORMAT,
                        "%s: %zu bytes, too short for the 8-byte header length",
                        f->label, len);
    uint64_t n = read_le64(bytes);
    if (n > HEADER_MAX_BYTES)
        return kd_error(KD_ERR_FORMAT,
                        "%s: header length %llu exceeds the limit of %u bytes",
                        f->label, (unsigned long long)n, HEADER_MAX_BYTES);
    if (n > len - 8)
        return kd_error(KD_ERR_FORMAT,
                        "%s: header length %llu runs past the end of the file "
                        "(%zu bytes)",
                        f->label, (unsigned long long)n, len);
    if (n == 0 || bytes[8] != '{')
        return kd_error(KD_ERR_FORMAT, "%s: the header does not start with '{'",
                        f->label);

    /* jansson rejects invalid UTF-8, NUL in strings, duplicate keys and
     * anything but JSON whitespace after the object. */
    json_error_t jerr;
    json_t *root = json_loadb((const char *)bytes + 8, (size_t)n,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return kd_error(KD_ERR_FORMAT,
                        "%s: the header is not valid JSON: %s (at header byte %d)",
                        f->label, jerr.text, jerr.position);
    kd_status st = KD_OK;
    if (!json_is_object(root)) {
        st = kd_error(KD_ERR_FORMAT, "%s: the header is not a JSON object", f->label);
        goto done;
    }
    size_t total = json_object_size(root);
    f->slots = calloc(total ? total : 1, sizeof *f->slots);
    if (!f->slots) {
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", f->label);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, METADATA_KEY) == 0)
            st = parse_metadata(f, value);
        else if ((st = parse_entry(f->label, key, value, &f->slots[f->n])) == KD_OK)
            f->n++;
        if (st != KD_OK)
            goto done;
    }
    qsort(f->slots, (size_t)f->n, sizeof *f->slots, compare_offsets);
    st = place_entries(f, bytes + 8 + n, len - 8 - n);
    if (st != KD_OK)
        goto done;
    f->by_name = malloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
    if (!f->by_name) {
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", f->label);
        goto done;
    }
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = &f->slots[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, compare_slot_names);
done:
    json_decref(root);
    return st;
}

void kd_safetensors_close(kd_safetensors *f)
{
    if (!f)
        return;
    if (f->slots)
        for (int i = 0; i < f->n; i++)
            free((char *)f->slots[i].entry.name);
    free(f->slots);
    free(f->by_name);
    if (f->meta)
        for (int i = 0; i < 2 * f->nmeta; i++)
            free(f->meta[i]);
    free(f->meta);
    free(f->label);
    if (f->map)
        munmap(f->map, f->map_len);
    free(f);
}

kd_status kd_safetensors_parse(const void *bytes, size_t len, const char *label,
                               kd_safetensors **out)
{
    if (!out)
        return kd_error(KD_ERR_INVALID, "safetensors parse: NULL output");
    *out = NULL;
    if (!label)
        label = "<memory>";
    if (!bytes && len)
        return kd_error(KD_ERR_INVALID, "%s: NULL bytes", label);
    kd_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label))) {
        free(f);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", label);
    }
    kd_status st = parse_header(f, bytes, len);
    if (st != KD_OK) {
        kd_safetensors_close(f);
        return st;
    }
    *out = f;
    return KD_OK;
}

kd_status kd_safetensors_open(const char *path, kd_safetensors **out)
{
    if (!out || !path)
        return kd_error(KD_ERR_INVALID, "safetensors open: NULL path or output");
    *out = NULL;
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return kd_error(KD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kd_error(KD_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return kd_error(KD_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kd_error(KD_ERR_IO, "%s: cannot map %zu bytes: %s", path, len,
                            strerror(e));
        }
    }
    close(fd);
    static const unsigned char empty[1];
    kd_status st = kd_safetensors_parse(map ? map : empty, len, path, out);
    if (st != KD_OK) {
        if (map)
            munmap(map, len);
        return st;
    }
    (*out)->map = map;
    (*out)->map_len = len;
    return KD_OK;
}

int kd_safetensors_count(const kd_safetensors *f) { return f ? f->n : 0; }

const kd_safetensors_entry *kd_safetensors_at(const kd_safetensors *f, int i)
{
    if (!f || i < 0 || i >= f->n)
        return NULL;
    return &f->slots[i].entry;
}

static const slot *find_slot(const kd_safetensors *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const slot *s = f->by_name[mid];
        int c = strcmp(name, s->entry.name);
        if (c == 0)
            return s;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const kd_safetensors_entry *kd_safetensors_find(const kd_safetensors *f,
                                                const char *name)
{
    if (!f || !name)
        return NULL;
    const slot *s = find_slot(f, name);
    return s ? &s->entry : NULL;
}

const char *kd_safetensors_metadata(const kd_safetensors *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

/* An integer element of a type kdengine has no dtype for, widened. */
static int64_t read_int_element(const format_dtype *ft, const unsigned char *p)
{
    switch (ft->bits) {
    case 8:
        if (ft->kind == KIND_BOOL)
            return p[0] != 0;
        return ft->kind == KIND_SIGNED ? (int8_t)p[0] : p[0];
    case 16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return ft->kind == KIND_SIGNED ? (int16_t)v : v;
    }
    case 32: {
        uint32_t v;
        memcpy(&v, p, 4);
        return ft->kind == KIND_SIGNED ? (int32_t)v : (int64_t)v;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, 8);
        return (int64_t)v; /* U64 above 2^63 wraps, as in torch */
    }
    }
}

static void store_int_element(kd_dtype dtype, char *p, int64_t v)
{
    switch (dtype) {
    case KD_I64: memcpy(p, &v, 8); break;
    case KD_I32: { int32_t i = (int32_t)v; memcpy(p, &i, 4); break; }
    default: *p = (char)(uint8_t)v; break;
    }
}

kd_tensor *kd_safetensors_load(const kd_safetensors *f, const char *name,
                               kd_dtype dtype)
{
    if (!f || !name) {
        kd_error(KD_ERR_INVALID, "safetensors load: NULL file or name");
        return NULL;
    }
    const slot *s = find_slot(f, name);
    if (!s) {
        kd_error(KD_ERR_INVALID, "%s: no tensor '%s'", f->label, name);
        return NULL;
    }
    const kd_safetensors_entry *e = &s->entry;
    const format_dtype *ft = &format_dtypes[s->format];
    if ((unsigned)dtype >= KD_DTYPE_COUNT) {
        kd_error(KD_ERR_INVALID, "%s: tensor '%s': unknown target dtype %d",
                 f->label, name, (int)dtype);
        return NULL;
    }
    if (ft->kind == KIND_OTHER) {
        kd_error(KD_ERR_UNSUPPORTED,
                 "%s: tensor '%s' is %s, which has no kdengine dtype to load into",
                 f->label, name, ft->name);
        return NULL;
    }
    if ((ft->kind == KIND_FLOAT) != (kd_dtype_is_float(dtype) != 0)) {
        kd_error(KD_ERR_INVALID,
                 "%s: tensor '%s' is %s and cannot load as %s (float and integer "
                 "types do not convert)",
                 f->label, name, ft->name, kd_dtype_name(dtype));
        return NULL;
    }
    kd_tensor *t = kd_tensor_empty(dtype, KD_CPU, e->ndim, e->shape);
    if (!t) {
        kd_error_wrap(KD_ERR_NOMEM, "%s: tensor '%s'", f->label, name);
        return NULL;
    }
    int64_t n = kd_tensor_numel(t);
    if (n == 0)
        return t;
    if (e->dtype >= 0) {
        /* A read-only view of the mapping; the copy reads it with memcpy, so
         * unaligned data is fine. */
        kd_storage storage = {.data = (void *)e->data, .nbytes = e->nbytes,
                              .device = KD_CPU, .refcount = 1};
        kd_tensor view = {.dtype = (kd_dtype)e->dtype, .device = KD_CPU,
                          .ndim = e->ndim, .storage = &storage};
        memcpy(view.shape, e->shape, sizeof view.shape);
        kd_contiguous_strides(e->ndim, e->shape, view.stride);
        if (kd_tensor_copy_(t, &view) != KD_OK) {
            kd_error_wrap(kd_last_status(), "%s: tensor '%s'", f->label, name);
            kd_tensor_free(t);
            return NULL;
        }
        return t;
    }
    const unsigned char *src = e->data;
    char *dst = kd_tensor_data(t);
    size_t src_size = (size_t)ft->bits / 8, dst_size = kd_dtype_size(dtype);
    for (int64_t i = 0; i < n; i++)
        store_int_element(dtype, dst + (size_t)i * dst_size,
                          read_int_element(ft, src + (size_t)i * src_size));
    return t;
}

/* ------------------------------------------------------------------ writer */

typedef struct pending {
    const char *name;
    kd_tensor *tensor;
    int format;
    uint64_t nbytes;
} pending;

static int compare_layout(const void *a, const void *b)
{
    const pending *x = a, *y = b;
    if (x->format != y->format)
        return x->format > y->format ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a string that occurs twice (stride picks every stride-th of n). */
static kd_status find_duplicate(const char *path, const char *what,
                                const char *const *strs, int n, int stride)
{
    const char **sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++)
        sorted[i] = strs[(size_t)i * (size_t)stride];
    qsort(sorted, (size_t)n, sizeof *sorted, compare_strings);
    kd_status st = KD_OK;
    for (int i = 1; i < n && st == KD_OK; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            st = kd_error(KD_ERR_INVALID, "%s: %s '%s' given twice", path, what,
                          sorted[i]);
    free(sorted);
    return st;
}

static kd_status check_save_args(const char *path, int n, const char *const *names,
                                 kd_tensor *const *tensors, int nmeta,
                                 const char *const *meta)
{
    if (n < 0 || nmeta < 0 || (n > 0 && (!names || !tensors)) || (nmeta > 0 && !meta))
        return kd_error(KD_ERR_INVALID,
                        "%s: bad arguments (%d tensors, %d metadata pairs)", path, n,
                        nmeta);
    for (int i = 0; i < n; i++) {
        if (!names[i])
            return kd_error(KD_ERR_INVALID, "%s: tensor %d has no name", path, i);
        if (strcmp(names[i], METADATA_KEY) == 0)
            return kd_error(KD_ERR_INVALID, "%s: '%s' is reserved for metadata", path,
                            METADATA_KEY);
        if (!tensors[i])
            return kd_error(KD_ERR_INVALID, "%s: tensor '%s' is NULL", path, names[i]);
        if (format_dtype_of(tensors[i]->dtype) < 0)
            return kd_error(KD_ERR_INVALID, "%s: tensor '%s' has unknown dtype %d",
                            path, names[i], (int)tensors[i]->dtype);
    }
    for (int i = 0; i < 2 * nmeta; i++)
        if (!meta[i])
            return kd_error(KD_ERR_INVALID, "%s: metadata %s %d is NULL", path,
                            i % 2 ? "value" : "key", i / 2);
    kd_status st = find_duplicate(path, "tensor name", names, n, 1);
    if (st == KD_OK)
        st = find_duplicate(path, "metadata key", meta, nmeta, 2);
    return st;
}

/* The compact JSON header, space-padded to a multiple of 8 bytes. */
static kd_status build_header(const char *path, const pending *order, int n,
                              int nmeta, const char *const *meta, char **out,
                              size_t *out_len)
{
    json_t *root = json_object();
    if (!root)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    kd_status st = KD_OK;
    if (nmeta > 0) {
        json_t *md = json_object();
        if (json_object_set_new(root, METADATA_KEY, md) != 0) {
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        for (int i = 0; i < nmeta; i++) {
            if (json_object_set_new(md, meta[2 * i], json_string(meta[2 * i + 1])) != 0) {
                st = kd_error(KD_ERR_INVALID,
                              "%s: metadata '%s' is not valid UTF-8 (key or value)",
                              path, meta[2 * i]);
                goto done;
            }
        }
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const kd_tensor *t = order[i].tensor;
        json_t *shape = json_array(), *info = NULL;
        bool ok = shape != NULL;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
        if (ok)
            info = json_pack("{s:s, s:O, s:[I, I]}", "dtype",
                             format_dtypes[order[i].format].name, "shape", shape,
                             "data_offsets", (json_int_t)offset,
                             (json_int_t)(offset + order[i].nbytes));
        json_decref(shape);
        offset += order[i].nbytes;
        if (!info) {
            st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        if (json_object_set_new(root, order[i].name, info) != 0) {
            st = kd_error(KD_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8",
                          path, order[i].name);
            goto done;
        }
    }
    char *text = json_dumps(root, JSON_COMPACT);
    if (!text) {
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    if (padded > HEADER_MAX_BYTES) {
        free(text);
        st = kd_error(KD_ERR_INVALID, "%s: the header needs %zu bytes, over the %u limit",
                      path, padded, HEADER_MAX_BYTES);
        goto done;
    }
    char *buf = realloc(text, padded);
    if (!buf) {
        free(text);
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memset(buf + len, ' ', padded - len);
    *out = buf;
    *out_len = padded;
done:
    json_decref(root);
    return st;
}

static bool write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        p += w;
        len -= (size_t)w;
    }
    return true;
}

/* Writes one tensor's bytes; non-contiguous or device tensors go through a
 * contiguous host copy that is freed at once. */
static kd_status write_tensor(int fd, const char *path, const pending *p)
{
    kd_tensor *t = p->tensor;
    if (p->nbytes == 0)
        return KD_OK;
    if (t->device == KD_CPU && kd_tensor_is_contiguous(t))
        return write_all(fd, kd_tensor_data(t), p->nbytes)
                   ? KD_OK
                   : kd_error(KD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    kd_tensor *host = kd_tensor_keep(kd_tensor_empty(t->dtype, KD_CPU, t->ndim, t->shape));
    if (!host)
        return kd_error_wrap(KD_ERR_NOMEM, "%s: tensor '%s'", path, p->name);
    kd_status st = kd_tensor_copy_(host, t);
    if (st != KD_OK)
        st = kd_error_wrap(st, "%s: tensor '%s'", path, p->name);
    else if (!write_all(fd, kd_tensor_data(host), p->nbytes))
        st = kd_error(KD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    kd_tensor_free(host);
    return st;
}

static kd_status sync_parent_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    char *slash = strrchr(dir, '/');
    const char *name = ".";
    if (slash == dir)
        name = "/";
    else if (slash) {
        *slash = '\0';
        name = dir;
    }
    kd_status st = KD_OK;
    int fd = open(name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        st = kd_error(KD_ERR_IO, "%s: written, but syncing directory %s failed: %s",
                      path, name, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

kd_status kd_safetensors_save(const char *path, int n, const char *const *names,
                              kd_tensor *const *tensors, int nmeta,
                              const char *const *meta)
{
    if (!path)
        return kd_error(KD_ERR_INVALID, "safetensors save: NULL path");
    kd_status st = check_save_args(path, n, names, tensors, nmeta, meta);
    if (st != KD_OK)
        return st;
    pending *order = calloc((size_t)(n ? n : 1), sizeof *order);
    if (!order)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        order[i].name = names[i];
        order[i].tensor = tensors[i];
        order[i].format = format_dtype_of(tensors[i]->dtype);
        order[i].nbytes = (uint64_t)kd_tensor_numel(tensors[i]) *
                          kd_dtype_size(tensors[i]->dtype);
    }
    qsort(order, (size_t)n, sizeof *order, compare_layout);

    char *header = NULL, *tmp = NULL;
    size_t header_len = 0;
    int fd = -1;
    st = build_header(path, order, n, nmeta, meta, &header, &header_len);
    if (st != KD_OK)
        goto done;
    size_t tmp_size = strlen(path) + 32;
    tmp = malloc(tmp_size);
    if (!tmp) {
        st = kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = kd_error(KD_ERR_IO, "%s: cannot create %s: %s", path, tmp,
                      strerror(errno));
        goto done;
    }
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    if (!write_all(fd, prefix, 8) || !write_all(fd, header, header_len)) {
        st = kd_error(KD_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    for (int i = 0; i < n && st == KD_OK; i++)
        st = write_tensor(fd, path, &order[i]);
    if (st != KD_OK)
        goto done;
    if (fsync(fd) != 0) {
        st = kd_error(KD_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
        goto done;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) {
        st = kd_error(KD_ERR_IO, "%s: close failed: %s", path, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = kd_error(KD_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp,
                      strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    st = sync_parent_dir(path);
done:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(header);
    free(order);
    return st;
}
