/* The label store's shards and index (format: label_store.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "label_store.h"

bool kd_label_layout_equal(const kd_label_layout *a, const kd_label_layout *b)
{
    return a->samples == b->samples && a->top_k == b->top_k &&
           a->num_classes == b->num_classes && a->index_bytes == b->index_bytes;
}

int kd_label_index_bytes(int num_classes) { return num_classes <= 32767 ? 2 : 4; }

int64_t kd_label_shard_size(const kd_label_layout *l)
{
    return KD_LABEL_HEADER_BYTES + l->samples * l->top_k * (2 + l->index_bytes);
}

uint64_t kd_fnv1a64(uint64_t h, const void *bytes, size_t n)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

kd_status kd_label_shard_alloc(const kd_label_layout *layout, int64_t epoch, kd_label_shard *out)
{
    memset(out, 0, sizeof *out);
    size_t n = (size_t)(layout->samples * layout->top_k);
    out->layout = *layout;
    out->epoch = epoch;
    out->values = calloc(n + 1, sizeof *out->values);
    out->indices = malloc((n + 1) * sizeof *out->indices);
    if (!out->values || !out->indices) {
        kd_label_shard_free(out);
        return kd_error(KD_ERR_NOMEM, "labels: out of memory for %lld samples x top-%d",
                        (long long)layout->samples, layout->top_k);
    }
    for (size_t i = 0; i < n; i++)
        out->indices[i] = -1;
    return KD_OK;
}

void kd_label_shard_free(kd_label_shard *shard)
{
    free(shard->values);
    free(shard->indices);
    shard->values = NULL;
    shard->indices = NULL;
}

void kd_label_shard_name(int64_t epoch, char *buf, size_t size)
{
    snprintf(buf, size, "epoch-%05lld.labels", (long long)epoch);
}

/* ---------------------------------------------------------------- bytes */

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The shard's whole file in a malloc'd buffer. */
static unsigned char *encode(const kd_label_shard *s, size_t *len)
{
    const kd_label_layout *l = &s->layout;
    size_t n = (size_t)(l->samples * l->top_k);
    *len = (size_t)kd_label_shard_size(l);
    unsigned char *b = calloc(1, *len);
    if (!b)
        return NULL;
    unsigned char *payload = b + KD_LABEL_HEADER_BYTES;
    for (size_t i = 0; i < n; i++)
        put_le(payload + 2 * i, s->values[i], 2);
    unsigned char *idx = payload + 2 * n;
    for (size_t i = 0; i < n; i++)
        put_le(idx + (size_t)l->index_bytes * i, (uint64_t)(uint32_t)s->indices[i],
               l->index_bytes);
    memcpy(b, KD_LABEL_MAGIC, 8);
    put_le(b + 8, KD_LABEL_VERSION, 4);
    put_le(b + 12, (uint64_t)s->epoch, 4);
    put_le(b + 16, (uint64_t)l->samples, 8);
    put_le(b + 24, (uint64_t)l->top_k, 4);
    put_le(b + 28, (uint64_t)l->num_classes, 4);
    put_le(b + 32, (uint64_t)l->index_bytes, 4);
    put_le(b + 40, kd_fnv1a64(KD_FNV1A64_INIT, payload, *len - KD_LABEL_HEADER_BYTES), 8);
    return b;
}

/* path.tmp, fsync, rename: a reader sees the old file or the new one. */
static kd_status write_atomic(const char *path, const void *bytes, size_t len)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return kd_error(KD_ERR_INVALID, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    const unsigned char *p = bytes;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return kd_error(KD_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_error(KD_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(e));
    }
    return KD_OK;
}

kd_status kd_label_shard_write(const char *path, const kd_label_shard *shard, int64_t *bytes,
                               uint64_t *checksum)
{
    size_t len;
    unsigned char *b = encode(shard, &len);
    if (!b)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    *bytes = (int64_t)len;
    *checksum = get_le(b + 40, 8);
    kd_status st = write_atomic(path, b, len);
    free(b);
    return st;
}

kd_status kd_label_shard_parse(const unsigned char *bytes, size_t len, const char *label,
                               const kd_label_layout *expect, int64_t epoch, kd_label_shard *out)
{
    memset(out, 0, sizeof *out);
    int64_t need = kd_label_shard_size(expect);
    if (len < KD_LABEL_HEADER_BYTES || memcmp(bytes, KD_LABEL_MAGIC, 8) != 0)
        return kd_error(KD_ERR_FORMAT, "%s: not a kdengine label shard (%s)", label,
                        len < KD_LABEL_HEADER_BYTES ? "shorter than its header"
                                                    : "no KDLABEL1 magic");
    uint64_t version = get_le(bytes + 8, 4), e = get_le(bytes + 12, 4),
             samples = get_le(bytes + 16, 8), k = get_le(bytes + 24, 4),
             classes = get_le(bytes + 28, 4), ib = get_le(bytes + 32, 4);
    if (version != KD_LABEL_VERSION)
        return kd_error(KD_ERR_FORMAT, "%s: format version %llu, this kdengine reads %d", label,
                        (unsigned long long)version, KD_LABEL_VERSION);
    if (e != (uint64_t)epoch || samples != (uint64_t)expect->samples ||
        k != (uint64_t)expect->top_k || classes != (uint64_t)expect->num_classes ||
        ib != (uint64_t)expect->index_bytes)
        return kd_error(KD_ERR_FORMAT, "%s: header says epoch %llu, %llu samples, top-%llu of "
                        "%llu classes, %llu-byte indices; the index says epoch %lld, %lld, "
                        "top-%d of %d, %d", label, (unsigned long long)e,
                        (unsigned long long)samples, (unsigned long long)k,
                        (unsigned long long)classes, (unsigned long long)ib, (long long)epoch,
                        (long long)expect->samples, expect->top_k, expect->num_classes,
                        expect->index_bytes);
    if ((int64_t)len != need)
        return kd_error(KD_ERR_FORMAT, "%s: %s: %zu bytes, a shard of %lld samples x top-%d "
                        "has %lld", label, (int64_t)len < need ? "truncated" : "trailing bytes",
                        len, (long long)expect->samples, expect->top_k, (long long)need);
    const unsigned char *payload = bytes + KD_LABEL_HEADER_BYTES;
    uint64_t sum = kd_fnv1a64(KD_FNV1A64_INIT, payload, len - KD_LABEL_HEADER_BYTES);
    if (sum != get_le(bytes + 40, 8))
        return kd_error(KD_ERR_FORMAT, "%s: corrupt: the payload's checksum is %016llx, the "
                        "header's %016llx", label, (unsigned long long)sum,
                        (unsigned long long)get_le(bytes + 40, 8));
    kd_status st = kd_label_shard_alloc(expect, epoch, out);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", label);
    size_t n = (size_t)(expect->samples * expect->top_k);
    const unsigned char *idx = payload + 2 * n;
    for (size_t i = 0; i < n; i++) {
        out->values[i] = (uint16_t)get_le(payload + 2 * i, 2);
        uint64_t raw = get_le(idx + (size_t)expect->index_bytes * i, expect->index_bytes);
        int32_t c = expect->index_bytes == 2 ? (int32_t)(int16_t)raw : (int32_t)(uint32_t)raw;
        if (c < -1 || c >= expect->num_classes) {
            kd_label_shard_free(out);
            return kd_error(KD_ERR_FORMAT, "%s: sample %lld holds class %d of %d", label,
                            (long long)(i / (size_t)expect->top_k), (int)c,
                            expect->num_classes);
        }
        out->indices[i] = c;
    }
    return KD_OK;
}

static kd_status read_file(const char *path, unsigned char **bytes, size_t *len)
{
    *bytes = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        fclose(f);
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    }
    *len = (size_t)sb.st_size;
    *bytes = malloc(*len + 1);
    size_t got = *bytes ? fread(*bytes, 1, *len, f) : 0;
    fclose(f);
    if (!*bytes)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for %zu bytes", path, *len);
    if (got != *len) {
        free(*bytes);
        *bytes = NULL;
        return kd_error(KD_ERR_IO, "%s: read %zu of %zu bytes", path, got, *len);
    }
    (*bytes)[*len] = '\0';
    return KD_OK;
}

kd_status kd_label_shard_load(const char *dir, const kd_label_index *index, int64_t epoch,
                              kd_label_shard *out)
{
    memset(out, 0, sizeof *out);
    if (epoch < 0 || epoch >= index->n_shards)
        return kd_error(KD_ERR_INVALID, "%s: no shard of epoch %lld (the index lists %lld)",
                        dir, (long long)epoch, (long long)index->n_shards);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, index->shard_files[epoch]);
    unsigned char *bytes;
    size_t len;
    kd_status st = read_file(path, &bytes, &len);
    if (st == KD_OK && (int64_t)len == index->shard_bytes[epoch] && len >= KD_LABEL_HEADER_BYTES &&
        get_le(bytes + 40, 8) != index->shard_checksums[epoch])
        st = kd_error(KD_ERR_FORMAT, "%s: its checksum is not the one the index recorded "
                      "(replaced after labelling?)", path);
    if (st == KD_OK)
        st = kd_label_shard_parse(bytes, len, path, &index->layout, epoch, out);
    free(bytes);
    return st;
}

/* ---------------------------------------------------------------- index */

void kd_label_index_free(kd_label_index *index)
{
    json_decref(index->fingerprint);
    for (int64_t i = 0; i < index->n_shards; i++)
        free(index->shard_files[i]);
    free(index->shard_files);
    free(index->shard_bytes);
    free(index->shard_checksums);
    memset(index, 0, sizeof *index);
}

void kd_label_index_truncate(kd_label_index *index, int64_t from)
{
    for (int64_t i = from; i < index->n_shards; i++)
        free(index->shard_files[i]);
    if (from < index->n_shards)
        index->n_shards = from;
}

kd_status kd_label_index_append(kd_label_index *index, const char *file, int64_t bytes,
                                uint64_t checksum)
{
    int64_t n = index->n_shards + 1;
    char **files = realloc(index->shard_files, (size_t)n * sizeof *files);
    if (files)
        index->shard_files = files;
    int64_t *b = realloc(index->shard_bytes, (size_t)n * sizeof *b);
    if (b)
        index->shard_bytes = b;
    uint64_t *c = realloc(index->shard_checksums, (size_t)n * sizeof *c);
    if (c)
        index->shard_checksums = c;
    char *name = files && b && c ? strdup(file) : NULL;
    if (!name)
        return kd_error(KD_ERR_NOMEM, "labels: out of memory");
    files[n - 1] = name;
    b[n - 1] = bytes;
    c[n - 1] = checksum;
    index->n_shards = n;
    return KD_OK;
}

static kd_status bad_index(const char *label, const char *key, const char *what)
{
    return kd_error(KD_ERR_FORMAT, "%s: %s: %s", label, key, what);
}

/* An integer member in [lo, hi]. */
static kd_status index_int(const json_t *o, const char *key, int64_t lo, int64_t hi,
                           const char *label, int64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return bad_index(label, key, "missing or not an integer");
    *out = json_integer_value(v);
    if (*out < lo || *out > hi)
        return kd_error(KD_ERR_FORMAT, "%s: %s: %lld is outside [%lld, %lld]", label, key,
                        (long long)*out, (long long)lo, (long long)hi);
    return KD_OK;
}

kd_status kd_label_index_parse(const char *text, size_t len, const char *label,
                               kd_label_index *out)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return kd_error(KD_ERR_FORMAT, "%s: line %d: %s", label, jerr.line, jerr.text);
    kd_status st = KD_OK;
    const json_t *format = json_object_get(root, "format");
    int64_t version = 0, k = 0, classes = 0, ib = 0, samples = 0;
    if (!json_is_object(root))
        st = bad_index(label, "(top level)", "not an object");
    else if (!json_is_string(format) || strcmp(json_string_value(format), "kdengine-labels"))
        st = bad_index(label, "format", "not \"kdengine-labels\"");
    if (st == KD_OK)
        st = index_int(root, "version", KD_LABEL_VERSION, KD_LABEL_VERSION, label, &version);
    if (st == KD_OK)
        st = index_int(root, "num_classes", 1, INT32_MAX, label, &classes);
    if (st == KD_OK)
        st = index_int(root, "top_k", 1, classes, label, &k);
    if (st == KD_OK)
        st = index_int(root, "index_bytes", 2, 4, label, &ib);
    if (st == KD_OK && ib != kd_label_index_bytes((int)classes))
        st = kd_error(KD_ERR_FORMAT, "%s: index_bytes: %lld for %lld classes (want %d)", label,
                      (long long)ib, (long long)classes, kd_label_index_bytes((int)classes));
    /* a shard's arrays are allocated from these: keep the product sane */
    if (st == KD_OK)
        st = index_int(root, "samples", 1, ((int64_t)1 << 40) / k, label, &samples);
    const json_t *fp = json_object_get(root, "fingerprint");
    const json_t *shards = json_object_get(root, "shards");
    if (st == KD_OK && !json_is_object(fp))
        st = bad_index(label, "fingerprint", "missing or not an object");
    if (st == KD_OK && !json_is_array(shards))
        st = bad_index(label, "shards", "missing or not an array");
    if (st == KD_OK) {
        out->layout = (kd_label_layout){samples, (int)k, (int)classes, (int)ib};
        out->fingerprint = json_incref((json_t *)fp);
    }
    int64_t need = kd_label_shard_size(&out->layout);
    for (size_t i = 0; st == KD_OK && i < json_array_size(shards); i++) {
        const json_t *s = json_array_get(shards, i);
        char key[64], want[64];
        snprintf(key, sizeof key, "shards[%zu]", i);
        int64_t epoch = -1, bytes = 0;
        const json_t *file = json_object_get(s, "file"), *sum = json_object_get(s, "checksum");
        unsigned long long checksum = 0;
        int used = 0;
        kd_label_shard_name((int64_t)i, want, sizeof want);
        if (!json_is_object(s))
            st = bad_index(label, key, "not an object");
        else if ((st = index_int(s, "epoch", (int64_t)i, (int64_t)i, label, &epoch)) != KD_OK)
            st = kd_error_wrap(st, "%s (shards are listed by epoch from 0)", key);
        else if ((st = index_int(s, "bytes", need, need, label, &bytes)) != KD_OK)
            st = kd_error_wrap(st, "%s", key);
        else if (!json_is_string(file) || strcmp(json_string_value(file), want) != 0)
            st = kd_error(KD_ERR_FORMAT, "%s: %s.file: not \"%s\"", label, key, want);
        else if (!json_is_string(sum) ||
                 sscanf(json_string_value(sum), "fnv1a64:%16llx%n", &checksum, &used) != 1 ||
                 used != 24 || json_string_value(sum)[used] != '\0')
            st = kd_error(KD_ERR_FORMAT, "%s: %s.checksum: not \"fnv1a64:\" and 16 hex digits",
                          label, key);
        if (st == KD_OK)
            st = kd_label_index_append(out, want, bytes, (uint64_t)checksum);
    }
    json_decref(root);
    if (st != KD_OK)
        kd_label_index_free(out);
    return st;
}

kd_status kd_label_index_load(const char *dir, kd_label_index *out)
{
    memset(out, 0, sizeof *out);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, KD_LABEL_INDEX_FILE);
    unsigned char *text;
    size_t len;
    kd_status st = read_file(path, &text, &len);
    if (st != KD_OK)
        return st;
    st = kd_label_index_parse((const char *)text, len, path, out);
    free(text);
    return st;
}

kd_status kd_label_index_write(const char *dir, const kd_label_index *index)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, KD_LABEL_INDEX_FILE);
    json_t *shards = json_array();
    for (int64_t i = 0; shards && i < index->n_shards; i++) {
        char sum[32];
        snprintf(sum, sizeof sum, "fnv1a64:%016llx",
                 (unsigned long long)index->shard_checksums[i]);
        json_array_append_new(shards, json_pack("{s:I, s:s, s:I, s:s}", "epoch", (json_int_t)i,
                                                "file", index->shard_files[i], "bytes",
                                                (json_int_t)index->shard_bytes[i], "checksum",
                                                sum));
    }
    const kd_label_layout *l = &index->layout;
    json_t *root = shards ? json_pack("{s:s, s:i, s:i, s:i, s:i, s:I, s:O, s:o}", "format",
                                      "kdengine-labels", "version", KD_LABEL_VERSION, "top_k",
                                      l->top_k, "num_classes", l->num_classes, "index_bytes",
                                      l->index_bytes, "samples", (json_int_t)l->samples,
                                      "fingerprint", index->fingerprint, "shards", shards)
                          : NULL;
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    kd_status st = text ? write_atomic(path, text, strlen(text))
                        : kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    free(text);
    return st;
}

/* ---------------------------------------------------------------- fingerprints */

static void show(const json_t *v, char *buf, size_t size)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(buf, size, "%s", text ? text : "absent");
    free(text);
}

static bool differ(const json_t *a, const json_t *b, const char *path, char *why, size_t size)
{
    char sub[512], va[160], vb[160];
    if (json_is_object(a) && json_is_object(b)) {
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)a, key, v) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
            if (differ(v, json_object_get(b, key), sub, why, size))
                return true;
        }
        json_object_foreach((json_t *)b, key, v) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
            if (!json_object_get(a, key))
                return differ(NULL, v, sub, why, size);
        }
        return false;
    }
    if (json_is_array(a) && json_is_array(b) && json_array_size(a) == json_array_size(b)) {
        for (size_t i = 0; i < json_array_size(a); i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            if (differ(json_array_get(a, i), json_array_get(b, i), sub, why, size))
                return true;
        }
        return false;
    }
    if (a && b && json_equal((json_t *)a, (json_t *)b))
        return false;
    show(a, va, sizeof va);
    show(b, vb, sizeof vb);
    snprintf(why, size, "%s: %s in the store, %s in this job", path, va, vb);
    return true;
}

bool kd_label_fingerprint_equal(const json_t *store, const json_t *job,
                                const char *const *skip_missing, char *why, size_t size)
{
    json_t *a = json_deep_copy(store), *b = json_deep_copy(job);
    for (int i = 0; a && b && skip_missing && skip_missing[i]; i++)
        if (!json_object_get(a, skip_missing[i]) || !json_object_get(b, skip_missing[i])) {
            json_object_del(a, skip_missing[i]);
            json_object_del(b, skip_missing[i]);
        }
    bool same = a && b && !differ(a, b, "", why, size);
    if (!a || !b)
        snprintf(why, size, "out of memory comparing fingerprints");
    json_decref(a);
    json_decref(b);
    return same;
}

kd_status kd_label_shard_read(const char *path, const kd_label_layout *layout, int64_t epoch,
                              kd_label_shard *out)
{
    memset(out, 0, sizeof *out);
    unsigned char *bytes;
    size_t len;
    kd_status st = read_file(path, &bytes, &len);
    if (st == KD_OK)
        st = kd_label_shard_parse(bytes, len, path, layout, epoch, out);
    free(bytes);
    return st;
}
