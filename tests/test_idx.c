/* IDX reader and image transforms: the real Fashion-MNIST files, plain
 * against gzip, one malformed file per validation rule, the image/label
 * pair check, the fuzz corpus; crop/flip against a padded-array reference,
 * their randomness, and normalisation against an f64 reference. */
#include "config.h"

#include "harness.h"

#include "../plugins/data/idx/idx_reader.h"
#include "../plugins/data/transforms/image_transforms.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef KD_HAVE_ZLIB
#include <zlib.h>
#endif

static char tmp_dir[] = "/tmp/kdidx.XXXXXX";

static const char *tmp_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An IDX file: header from type/dims, then data_len bytes counting up. */
static unsigned char *build_idx(int type, int ndims, const uint32_t *dims, size_t data_len,
                                size_t *len)
{
    *len = 4 + 4 * (size_t)ndims + data_len;
    unsigned char *buf = malloc(*len);
    buf[0] = buf[1] = 0;
    buf[2] = (unsigned char)type;
    buf[3] = (unsigned char)ndims;
    for (int i = 0; i < ndims; i++)
        for (int b = 0; b < 4; b++)
            buf[4 + 4 * i + b] = (unsigned char)(dims[i] >> (24 - 8 * b));
    for (size_t i = 0; i < data_len; i++)
        buf[4 + 4 * (size_t)ndims + i] = (unsigned char)(i * 7 + 3);
    return buf;
}

/* ------------------------------------------------------------ gzip helpers */

#ifdef KD_HAVE_ZLIB

static unsigned char *gzip_bytes(const unsigned char *src, size_t len, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&zs, (uLong)len) + 32;
    unsigned char *out = malloc(cap);
    zs.next_in = (Bytef *)(uintptr_t)src;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int rc = deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

/* The decompressed content of a gzip file, via zlib's own gzread. */
static unsigned char *gunzip_file(const char *path, size_t *len)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return NULL;
    size_t cap = 1 << 20, used = 0;
    unsigned char *buf = malloc(cap);
    int got;
    while ((got = gzread(gz, buf + used, (unsigned)(cap - used))) > 0) {
        used += (size_t)got;
        if (used == cap)
            buf = realloc(buf, cap *= 2);
    }
    gzclose(gz);
    *len = used;
    return buf;
}

/* ------------------------------------------------------------ Fashion-MNIST */

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Reference values from Debian's dataset-fashion-mnist files, computed
 * independently with /usr/bin/python3 (gzip.open(f).read(), the dims by
 * struct.unpack('>3I'), then zlib.crc32 and sum() over the data after the
 * header, and over its first and last item). */
typedef struct fmnist_ref {
    const char *file;
    int ndims;
    int64_t count;
    uint32_t crc;
    uint64_t sum, first_sum, last_sum;
} fmnist_ref;

static const fmnist_ref fmnist_refs[] = {
    {"train-images-idx3-ubyte.gz", 3, 60000, 0xae65dccdu, 3431114169u, 76247, 16684},
    {"train-labels-idx1-ubyte.gz", 1, 60000, 0x2ed6e46au, 270000, 9, 5},
    {"t10k-images-idx3-ubyte.gz", 3, 10000, 0x12728439u, 573469082, 33456, 24390},
    {"t10k-labels-idx1-ubyte.gz", 1, 10000, 0x242bc73fu, 45000, 9, 5},
};

static uint64_t byte_sum(const uint8_t *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

static void check_fmnist_file(const fmnist_ref *ref)
{
    char path[256], name[128];
    snprintf(path, sizeof path, "%s/%s", FMNIST_DIR, ref->file);
    kd_idx *idx = NULL;
    double t0 = now();
    kd_status st = kd_idx_open(path, &idx);
    double secs = now() - t0;
    snprintf(name, sizeof name, "fashion-mnist: %s opens", ref->file);
    if (!kt_check(st == KD_OK, name, "%s", kd_last_error()))
        return;
    printf("     %s: opened in %.3f s\n", ref->file, secs);
    int64_t n = kd_idx_count(idx);
    bool images = ref->ndims == 3;
    snprintf(name, sizeof name, "fashion-mnist: %s shape", ref->file);
    kt_check(kd_idx_type_of(idx) == KD_IDX_U8 && kd_idx_ndims(idx) == ref->ndims &&
                 n == ref->count &&
                 (!images || (kd_idx_dim(idx, 1) == 28 && kd_idx_dim(idx, 2) == 28)) &&
                 kd_idx_item_bytes(idx) == (images ? 784u : 1u),
             name, "type %d, %d dims, count %lld, item %zu bytes", kd_idx_type_of(idx),
             kd_idx_ndims(idx), (long long)n, kd_idx_item_bytes(idx));
    size_t total = (size_t)n * kd_idx_item_bytes(idx);
    const uint8_t *data = kd_idx_data(idx);
    uint32_t crc = (uint32_t)crc32(crc32(0, NULL, 0), data, (uInt)total);
    uint64_t sum = byte_sum(data, total);
    uint64_t first = byte_sum(kd_idx_item(idx, 0), kd_idx_item_bytes(idx));
    uint64_t last = byte_sum(kd_idx_item(idx, n - 1), kd_idx_item_bytes(idx));
    snprintf(name, sizeof name, "fashion-mnist: %s content", ref->file);
    kt_check(crc == ref->crc && sum == ref->sum && first == ref->first_sum &&
                 last == ref->last_sum,
             name, "crc32 %08x sum %llu first %llu last %llu", crc, (unsigned long long)sum,
             (unsigned long long)first, (unsigned long long)last);
    if (!images) {
        int64_t hist[256] = {0};
        for (int64_t i = 0; i < n; i++)
            hist[data[i]]++;
        bool balanced = true;
        for (int k = 0; k < 256; k++)
            balanced &= hist[k] == (k < 10 ? n / 10 : 0);
        snprintf(name, sizeof name, "fashion-mnist: %s labels 0..9, %lld each", ref->file,
                 (long long)(n / 10));
        kt_check(balanced, name, "histogram differs");
    }
    kd_idx_close(idx);
}

static kd_idx *open_fmnist(const char *file)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", FMNIST_DIR, file);
    kd_idx *idx = NULL;
    kd_idx_open(path, &idx);
    return idx;
}

static void test_fashion_mnist(void)
{
    if (access(FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", R_OK) != 0) {
        kt_skip("fashion-mnist", "%s is absent (Debian package dataset-fashion-mnist; "
                                 "scripts/setup installs it)",
                FMNIST_DIR);
        return;
    }
    for (size_t i = 0; i < sizeof fmnist_refs / sizeof fmnist_refs[0]; i++)
        check_fmnist_file(&fmnist_refs[i]);

    kd_idx *train_x = open_fmnist("train-images-idx3-ubyte.gz");
    kd_idx *train_y = open_fmnist("train-labels-idx1-ubyte.gz");
    kd_idx *test_x = open_fmnist("t10k-images-idx3-ubyte.gz");
    kd_idx *test_y = open_fmnist("t10k-labels-idx1-ubyte.gz");
    if (train_x && train_y && test_x && test_y) {
        kt_check(kd_idx_check_pair(train_x, train_y, 10) == KD_OK &&
                     kd_idx_check_pair(test_x, test_y, 10) == KD_OK,
                 "fashion-mnist: pairs check with 10 classes", "%s", kd_last_error());
        kt_check(kd_idx_check_pair(train_x, test_y, 10) == KD_ERR_FORMAT &&
                     contains(kd_last_error(), "t10k-labels-idx1-ubyte.gz has 10000 labels") &&
                     contains(kd_last_error(), "train-images-idx3-ubyte.gz has 60000 images"),
                 "fashion-mnist: train images with test labels refused", "%s",
                 kd_last_error());
        kt_check(kd_idx_check_pair(test_x, test_y, 9) == KD_ERR_FORMAT &&
                     contains(kd_last_error(), "t10k-labels-idx1-ubyte.gz: label 9 at index 0"),
                 "fashion-mnist: label 9 refused with 9 classes", "%s", kd_last_error());
    }

    /* Plain against gzip: write the decompressed file and read both. */
    char src[256], plain[256];
    snprintf(src, sizeof src, "%s/t10k-images-idx3-ubyte.gz", FMNIST_DIR);
    tmp_path("t10k-images-idx3-ubyte", plain, sizeof plain);
    size_t raw_len;
    unsigned char *raw = gunzip_file(src, &raw_len);
    kd_idx *p = NULL;
    bool same = raw && kt_write_file(plain, raw, raw_len) && kd_idx_open(plain, &p) == KD_OK &&
                test_x && kd_idx_count(p) == kd_idx_count(test_x) &&
                kd_idx_ndims(p) == kd_idx_ndims(test_x) &&
                kd_idx_item_bytes(p) == kd_idx_item_bytes(test_x) &&
                memcmp(kd_idx_data(p), kd_idx_data(test_x), 7840000) == 0;
    kt_check(same, "fashion-mnist: plain copy reads the same bytes as the .gz", "%s",
             kd_last_error());
    kd_idx_close(p);

    /* From memory, plain and gzip, and as two concatenated gzip members. */
    size_t gz_len;
    unsigned char *gz = kt_read_file(src, &gz_len);
    kd_idx *m1 = NULL, *m2 = NULL, *m3 = NULL;
    size_t half = raw_len / 2, g1_len = 0, g2_len = 0;
    unsigned char *g1 = raw ? gzip_bytes(raw, half, &g1_len) : NULL;
    unsigned char *g2 = raw ? gzip_bytes(raw + half, raw_len - half, &g2_len) : NULL;
    unsigned char *two = g1 && g2 ? malloc(g1_len + g2_len) : NULL;
    if (two) {
        memcpy(two, g1, g1_len);
        memcpy(two + g1_len, g2, g2_len);
    }
    same = gz && two && test_x && kd_idx_parse(raw, raw_len, "plain", &m1) == KD_OK &&
           kd_idx_parse(gz, gz_len, "gz", &m2) == KD_OK &&
           kd_idx_parse(two, g1_len + g2_len, "two members", &m3) == KD_OK &&
           memcmp(kd_idx_data(m1), kd_idx_data(test_x), 7840000) == 0 &&
           memcmp(kd_idx_data(m2), kd_idx_data(test_x), 7840000) == 0 &&
           memcmp(kd_idx_data(m3), kd_idx_data(test_x), 7840000) == 0;
    kt_check(same, "fashion-mnist: parse from memory: plain, gzip, two gzip members", "%s",
             kd_last_error());
    kd_idx_close(m1);
    kd_idx_close(m2);
    kd_idx_close(m3);
    free(two);
    free(g1);
    free(g2);
    free(gz);
    free(raw);
    kd_idx_close(train_x);
    kd_idx_close(train_y);
    kd_idx_close(test_x);
    kd_idx_close(test_y);
}

#endif

/* ------------------------------------------------------------ valid files */

static void test_valid_files(void)
{
    static const struct {
        int type;
        int size;
    } types[] = {{KD_IDX_U8, 1},  {KD_IDX_I8, 1},  {KD_IDX_I16, 2},
                 {KD_IDX_I32, 4}, {KD_IDX_F32, 4}, {KD_IDX_F64, 8}};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint32_t dims[3] = {5, 2, 3};
        size_t len, data_len = 5 * 2 * 3 * (size_t)types[t].size;
        unsigned char *bytes = build_idx(types[t].type, 3, dims, data_len, &len);
        char path[256], name[96];
        snprintf(name, sizeof name, "valid: 5x2x3 %s", kd_idx_type_name(types[t].type));
        snprintf(path, sizeof path, "%s/valid_%s.idx", tmp_dir, kd_idx_type_name(types[t].type));
        kd_idx *idx = NULL;
        bool ok = kt_write_file(path, bytes, len) && kd_idx_open(path, &idx) == KD_OK &&
                  (int)kd_idx_type_of(idx) == types[t].type && kd_idx_ndims(idx) == 3 &&
                  kd_idx_count(idx) == 5 && kd_idx_dim(idx, 1) == 2 &&
                  kd_idx_dim(idx, 2) == 3 && kd_idx_dim(idx, 3) == -1 &&
                  kd_idx_dim(idx, -1) == -1 && kd_idx_item_bytes(idx) == 6u * types[t].size &&
                  kd_idx_item(idx, 0) == kd_idx_data(idx) &&
                  kd_idx_item(idx, 4) == kd_idx_data(idx) + 24 * types[t].size &&
                  !kd_idx_item(idx, 5) && !kd_idx_item(idx, -1) &&
                  memcmp(kd_idx_data(idx), bytes + 16, data_len) == 0 &&
                  strcmp(kd_idx_label(idx), path) == 0;
        kt_check(ok, name, "%s", kd_last_error());
        kd_idx_close(idx);
        free(bytes);
    }
    uint32_t one[1] = {7}, empty[4] = {0, 0xffffffu, 3, 2}, four[4] = {2, 3, 2, 2};
    size_t len;
    unsigned char *bytes = build_idx(KD_IDX_U8, 1, one, 7, &len);
    kd_idx *idx = NULL;
    kt_check(kd_idx_parse(bytes, len, "one-d", &idx) == KD_OK && kd_idx_count(idx) == 7 &&
                 kd_idx_item_bytes(idx) == 1 && kd_idx_item(idx, 6)[0] == (6 * 7 + 3),
             "valid: 1-D labels, one byte per item", "%s", kd_last_error());
    kd_idx_close(idx);
    free(bytes);
    bytes = build_idx(KD_IDX_I16, 4, empty, 0, &len);
    idx = NULL;
    kt_check(kd_idx_parse(bytes, len, "empty", &idx) == KD_OK && kd_idx_count(idx) == 0 &&
                 kd_idx_item_bytes(idx) == 0xffffffu * 12 && !kd_idx_item(idx, 0),
             "valid: zero items", "%s", kd_last_error());
    kd_idx_close(idx);
    free(bytes);
    bytes = build_idx(KD_IDX_U8, 4, four, 24, &len);
    idx = NULL;
    kt_check(kd_idx_parse(bytes, len, "four-d", &idx) == KD_OK && kd_idx_ndims(idx) == 4 &&
                 kd_idx_item_bytes(idx) == 12,
             "valid: 4 dims", "%s", kd_last_error());
    kd_idx_close(idx);
    free(bytes);
}

/* ------------------------------------------------------------ malformed files */

/* Writes bytes as file name, opens it, and expects `code` with a message
 * holding the path and `what`. */
static void expect_open_error(const char *test, const char *file, const unsigned char *bytes,
                              size_t len, kd_status code, const char *what)
{
    char path[256];
    tmp_path(file, path, sizeof path);
    kd_idx *idx = (kd_idx *)&idx;
    kd_status st = kt_write_file(path, bytes, len) ? kd_idx_open(path, &idx) : KD_ERR_STATE;
    kt_check(st == code && !idx && contains(kd_last_error(), path) &&
                 contains(kd_last_error(), what),
             test, "%s: %s (wanted %s and \"%s\")", kd_status_name(st), kd_last_error(),
             kd_status_name(code), what);
}

static void test_malformed(void)
{
    uint32_t dims[3] = {2, 3, 4};
    size_t len;
    unsigned char *good = build_idx(KD_IDX_U8, 3, dims, 24, &len);
    unsigned char *bytes = malloc(len + 8);

    expect_open_error("malformed: empty file", "empty", good, 0, KD_ERR_FORMAT,
                      "0 bytes, too short for the 4-byte IDX magic");
    expect_open_error("malformed: 3 bytes", "short", good, 3, KD_ERR_FORMAT, "too short");
    memcpy(bytes, good, len);
    bytes[0] = 1;
    expect_open_error("malformed: bad magic", "magic", bytes, len, KD_ERR_FORMAT,
                      "bad magic 01 00 08 03");
    memcpy(bytes, good, len);
    bytes[1] = 0x80;
    expect_open_error("malformed: bad second magic byte", "magic2", bytes, len, KD_ERR_FORMAT,
                      "bad magic 00 80 08 03");
    memcpy(bytes, good, len);
    bytes[2] = 0x0a;
    expect_open_error("malformed: unknown type", "type", bytes, len, KD_ERR_FORMAT,
                      "unknown element type 0x0a");
    memcpy(bytes, good, len);
    bytes[3] = 0;
    expect_open_error("malformed: zero dims", "dims0", bytes, len, KD_ERR_FORMAT,
                      "0 dims; IDX files here have 1 to 4");
    bytes[3] = 5;
    expect_open_error("malformed: five dims", "dims5", bytes, len, KD_ERR_FORMAT, "5 dims");
    expect_open_error("malformed: truncated header", "header", good, 12, KD_ERR_FORMAT,
                      "truncated header: 3 dims need 16 header bytes but the file has 12");
    expect_open_error("malformed: truncated data", "truncated", good, len - 4, KD_ERR_FORMAT,
                      "header says 2x3x4 u8 (24 bytes) but 20 bytes follow");
    memcpy(bytes, good, len);
    memset(bytes + len, 0, 3);
    expect_open_error("malformed: extra bytes", "extra", bytes, len + 3, KD_ERR_FORMAT,
                      "header says 2x3x4 u8 (24 bytes) but 27 bytes follow");

    uint32_t huge[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    unsigned char *big = build_idx(KD_IDX_F64, 4, huge, 0, &len);
    expect_open_error("malformed: dims product overflows", "overflow", big, len, KD_ERR_FORMAT,
                      "header says 4294967295x4294967295x4294967295x4294967295 f64, too "
                      "large to address");
    free(big);
    huge[0] = 0;
    big = build_idx(KD_IDX_F64, 4, huge, 0, &len);
    expect_open_error("malformed: zero items but the item size overflows", "overflow0", big,
                      len, KD_ERR_FORMAT, "too large to address");
    free(big);
    /* 2^63 bytes: no uint64_t overflow, but past INT64_MAX. */
    uint32_t wide[3] = {0x80000000u, 0x80000000u, 2};
    big = build_idx(KD_IDX_U8, 3, wide, 0, &len);
    expect_open_error("malformed: size past INT64_MAX", "int64", big, len, KD_ERR_FORMAT,
                      "too large to address");
    free(big);

    char missing[256];
    tmp_path("no-such-file", missing, sizeof missing);
    kd_idx *idx = NULL;
    kt_check(kd_idx_open(missing, &idx) == KD_ERR_IO && !idx &&
                 contains(kd_last_error(), missing) &&
                 contains(kd_last_error(), strerror(ENOENT)),
             "malformed: missing file is KD_ERR_IO with strerror", "%s", kd_last_error());
    kt_check(kd_idx_open(tmp_dir, &idx) == KD_ERR_IO && !idx &&
                 contains(kd_last_error(), tmp_dir),
             "malformed: a directory is KD_ERR_IO", "%s", kd_last_error());
    kt_check(kd_idx_open(NULL, &idx) == KD_ERR_INVALID && kd_idx_open(missing, NULL) ==
                 KD_ERR_INVALID && kd_idx_parse(NULL, 4, "x", &idx) == KD_ERR_INVALID,
             "malformed: NULL arguments are KD_ERR_INVALID", "%s", kd_last_error());
    free(bytes);
    free(good);
}

#ifdef KD_HAVE_ZLIB

static void test_malformed_gzip(void)
{
    uint32_t dims[3] = {40, 30, 20};
    size_t len, gz_len;
    unsigned char *good = build_idx(KD_IDX_U8, 3, dims, 24000, &len);
    unsigned char *gz = gzip_bytes(good, len, &gz_len);
    unsigned char *bytes = malloc(gz_len + 16);

    char path[256];
    tmp_path("good.gz", path, sizeof path);
    kd_idx *idx = NULL;
    kt_check(kt_write_file(path, gz, gz_len) && kd_idx_open(path, &idx) == KD_OK &&
                 kd_idx_count(idx) == 40 && memcmp(kd_idx_data(idx), good + 16, 24000) == 0,
             "gzip: a hand-built .gz opens", "%s", kd_last_error());
    kd_idx_close(idx);
    tmp_path("good.idx", path, sizeof path);
    idx = NULL;
    kt_check(kt_write_file(path, gz, gz_len) && kd_idx_open(path, &idx) == KD_OK,
             "gzip: detected by magic, not by the name", "%s", kd_last_error());
    kd_idx_close(idx);

    memcpy(bytes, gz, gz_len);
    for (size_t i = 12; i < 40; i++)
        bytes[i] ^= 0x5a;
    expect_open_error("gzip: corrupt deflate data", "corrupt.gz", bytes, gz_len, KD_ERR_FORMAT,
                      "corrupt gzip stream");
    memcpy(bytes, gz, gz_len);
    bytes[gz_len - 6] ^= 1;
    expect_open_error("gzip: bad CRC", "crc.gz", bytes, gz_len, KD_ERR_FORMAT,
                      "corrupt gzip stream: incorrect data check");
    expect_open_error("gzip: truncated stream", "cut.gz", gz, gz_len - 20, KD_ERR_FORMAT,
                      "gzip stream truncated");
    expect_open_error("gzip: header only", "magiconly.gz", gz, 2, KD_ERR_FORMAT,
                      "gzip stream truncated");
    memcpy(bytes, gz, gz_len);
    memcpy(bytes + gz_len, "garbage!", 8);
    expect_open_error("gzip: trailing data", "trailing.gz", bytes, gz_len + 8, KD_ERR_FORMAT,
                      "8 bytes of trailing data after the gzip stream");

    /* IDX errors found inside the stream, with the same messages. */
    size_t in_len;
    unsigned char *in;
    good[0] = 7;
    in = gzip_bytes(good, len, &in_len);
    expect_open_error("gzip: bad magic inside", "magic.gz", in, in_len, KD_ERR_FORMAT,
                      "bad magic 07 00 08 03");
    free(in);
    good[0] = 0;
    in = gzip_bytes(good, len - 100, &in_len);
    expect_open_error("gzip: truncated data inside", "short.gz", in, in_len, KD_ERR_FORMAT,
                      "header says 40x30x20 u8 (24000 bytes) but 23900 bytes follow");
    free(in);
    unsigned char *longer = malloc(len + 50000);
    memcpy(longer, good, len);
    memset(longer + len, 1, 50000);
    in = gzip_bytes(longer, len + 50000, &in_len);
    expect_open_error("gzip: extra data inside", "long.gz", in, in_len, KD_ERR_FORMAT,
                      "header says 40x30x20 u8 (24000 bytes) but 74000 bytes follow");
    free(in);
    free(longer);
    /* A 1 MB header claim inside a few bytes of gzip: refused for the
     * missing data, without allocating the claim up front. */
    uint32_t claim[2] = {1000, 1000};
    unsigned char *hdr = build_idx(KD_IDX_U8, 2, claim, 0, &len);
    in = gzip_bytes(hdr, len, &in_len);
    expect_open_error("gzip: header claims more than the stream holds", "claim.gz", in, in_len,
                      KD_ERR_FORMAT, "header says 1000x1000 u8 (1000000 bytes) but 0 bytes follow");
    free(in);
    free(hdr);
    free(bytes);
    free(gz);
    free(good);
}

#endif

/* ------------------------------------------------------------ image/label pairs */

static kd_idx *parse_built(int type, int ndims, const uint32_t *dims, const uint8_t *data,
                           size_t data_len, const char *label)
{
    size_t len;
    unsigned char *bytes = build_idx(type, ndims, dims, data_len, &len);
    if (data)
        memcpy(bytes + 4 + 4 * ndims, data, data_len);
    kd_idx *idx = NULL;
    kd_idx_parse(bytes, len, label, &idx);
    free(bytes);
    return idx;
}

static void expect_pair_error(const char *test, const kd_idx *x, const kd_idx *y,
                              int classes, kd_status code, const char *what)
{
    kd_status st = kd_idx_check_pair(x, y, classes);
    kt_check(st == code && contains(kd_last_error(), what), test, "%s: %s (wanted \"%s\")",
             kd_status_name(st), kd_last_error(), what);
}

static void test_pairs(void)
{
    uint32_t xd[3] = {4, 2, 2}, xd4[4] = {4, 2, 2, 3}, yd[1] = {4}, y3[1] = {3};
    uint32_t xd2[2] = {4, 4}, yd2[2] = {4, 1}, x0[3] = {0, 2, 2}, y0[1] = {0};
    uint8_t labels[4] = {0, 3, 9, 2};
    kd_idx *x = parse_built(KD_IDX_U8, 3, xd, NULL, 16, "imgs.idx");
    kd_idx *x4 = parse_built(KD_IDX_U8, 4, xd4, NULL, 48, "imgs4.idx");
    kd_idx *y = parse_built(KD_IDX_U8, 1, yd, labels, 4, "labels.idx");
    kd_idx *yshort = parse_built(KD_IDX_U8, 1, y3, labels, 3, "short-labels.idx");
    kd_idx *xf = parse_built(KD_IDX_F32, 3, xd, NULL, 64, "float-imgs.idx");
    kd_idx *xflat = parse_built(KD_IDX_U8, 2, xd2, NULL, 16, "flat-imgs.idx");
    kd_idx *ywide = parse_built(KD_IDX_U8, 2, yd2, labels, 4, "2d-labels.idx");
    kd_idx *yint = parse_built(KD_IDX_I32, 1, yd, NULL, 16, "int-labels.idx");
    kd_idx *xempty = parse_built(KD_IDX_U8, 3, x0, NULL, 0, "no-imgs.idx");
    kd_idx *yempty = parse_built(KD_IDX_U8, 1, y0, NULL, 0, "no-labels.idx");
    if (!kt_check(x && x4 && y && yshort && xf && xflat && ywide && yint && xempty && yempty,
                  "pairs: test files parse", "%s", kd_last_error()))
        return;
    kt_check(kd_idx_check_pair(x, y, 10) == KD_OK && kd_idx_check_pair(x4, y, 10) == KD_OK,
             "pairs: N x H x W and N x H x W x C with 10 classes", "%s", kd_last_error());
    expect_pair_error("pairs: label out of range", x, y, 9, KD_ERR_FORMAT,
                      "labels.idx: label 9 at index 2 is not below num_classes 9");
    expect_pair_error("pairs: count mismatch", x, yshort, 10, KD_ERR_FORMAT,
                      "short-labels.idx has 3 labels but imgs.idx has 4 images");
    expect_pair_error("pairs: f32 images", xf, y, 10, KD_ERR_FORMAT,
                      "float-imgs.idx: images must be u8 with 3 (N x H x W) or 4 (N x H x W x "
                      "C) dims, not 3-D f32");
    expect_pair_error("pairs: 2-D images", xflat, y, 10, KD_ERR_FORMAT,
                      "flat-imgs.idx: images must be u8");
    expect_pair_error("pairs: 2-D labels", x, ywide, 10, KD_ERR_FORMAT,
                      "2d-labels.idx: labels must be 1-D u8, not 2-D u8");
    expect_pair_error("pairs: i32 labels", x, yint, 10, KD_ERR_FORMAT,
                      "int-labels.idx: labels must be 1-D u8, not 1-D i32");
    expect_pair_error("pairs: no images", xempty, yempty, 10, KD_ERR_FORMAT,
                      "no-imgs.idx: no images");
    expect_pair_error("pairs: num_classes 0", x, y, 0, KD_ERR_INVALID, "num_classes 0");
    expect_pair_error("pairs: num_classes 257", x, y, 257, KD_ERR_INVALID, "num_classes 257");
    expect_pair_error("pairs: NULL labels", x, NULL, 10, KD_ERR_INVALID, "NULL labels");
    kd_idx_close(x);
    kd_idx_close(x4);
    kd_idx_close(y);
    kd_idx_close(yshort);
    kd_idx_close(xf);
    kd_idx_close(xflat);
    kd_idx_close(ywide);
    kd_idx_close(yint);
    kd_idx_close(xempty);
    kd_idx_close(yempty);
}

/* ------------------------------------------------------------ fuzz corpus */

static kd_status parse_idx(const unsigned char *bytes, size_t len, const char *label,
                           bool *consistent)
{
    kd_idx *idx = NULL;
    kd_status st = kd_idx_parse(bytes, len, label, &idx);
    if (st == KD_OK) {
        int64_t n = kd_idx_count(idx);
        size_t item = kd_idx_item_bytes(idx);
        *consistent = !(n > 0 && item > 0 &&
                        kd_idx_item(idx, n - 1) + item != kd_idx_data(idx) + (size_t)n * item);
    }
    kd_idx_close(idx);
    return st;
}

static void test_corpus(void) { kt_replay_corpus("tests/fuzz/corpus/idx", parse_idx); }

/* ------------------------------------------------------------ crop and flip */

/* The transform spelled out: build the zero-padded image, cut the window,
 * mirror the window. */
static void reference_aug(const uint8_t *src, int h, int w, int c, int pad, uint8_t *dst,
                          int out_h, int out_w, const kd_img_aug *aug)
{
    int ph = h + 2 * pad, pw = w + 2 * pad;
    uint8_t *padded = calloc((size_t)ph * pw * c, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                padded[((y + pad) * pw + x + pad) * c + k] = src[(y * w + x) * c + k];
    for (int y = 0; y < out_h; y++)
        for (int x = 0; x < out_w; x++) {
            int from = aug->flip ? out_w - 1 - x : x;
            for (int k = 0; k < c; k++)
                dst[(y * out_w + x) * c + k] =
                    padded[((aug->top + y) * pw + aug->left + from) * c + k];
        }
    free(padded);
}

static void test_crop_flip_reference(void)
{
    kd_rng rng = kd_rng_make(11, 0, 0);
    uint8_t src[12 * 12 * 4], got[20 * 20 * 4], want[20 * 20 * 4];
    int cases = 0, wrong = 0;
    char first[160] = "";
    for (int trial = 0; trial < 4000; trial++) {
        int h = 1 + (int)kd_rng_below(&rng, 12), w = 1 + (int)kd_rng_below(&rng, 12);
        int c = 1 + (int)kd_rng_below(&rng, 4), pad = (int)kd_rng_below(&rng, 5);
        int out_h = 1 + (int)kd_rng_below(&rng, (uint64_t)(h + 2 * pad));
        int out_w = 1 + (int)kd_rng_below(&rng, (uint64_t)(w + 2 * pad));
        for (int i = 0; i < h * w * c; i++)
            src[i] = (uint8_t)(1 + kd_rng_below(&rng, 255));
        kd_img_aug aug;
        if (kd_img_draw_crop(&rng, h, w, pad, out_h, out_w, &aug) != KD_OK) {
            wrong++;
            continue;
        }
        aug.flip = kd_img_draw_flip(&rng, 0.5);
        memset(got, 0xee, sizeof got);
        reference_aug(src, h, w, c, pad, want, out_h, out_w, &aug);
        kd_status st = kd_img_apply_aug(src, h, w, c, pad, got, out_h, out_w, &aug);
        size_t n = (size_t)out_h * out_w * c;
        cases++;
        if (st != KD_OK || memcmp(got, want, n) != 0 || got[n] != 0xee) {
            if (!wrong++)
                snprintf(first, sizeof first,
                         "%dx%dx%d pad %d -> %dx%d at (%d, %d) flip %d: %s", h, w, c, pad,
                         out_h, out_w, aug.top, aug.left, aug.flip, kd_last_error());
        }
    }
    kt_check(wrong == 0, "crop/flip: matches the padded-array reference",
             "%d of %d cases differ; first: %s", wrong, cases, first);

    /* Every window of one 28x28 image with padding 4, both ways. */
    uint8_t img[28 * 28], a[28 * 28], b[28 * 28];
    for (int i = 0; i < 28 * 28; i++)
        img[i] = (uint8_t)(i * 13 + 1);
    wrong = 0;
    for (int top = 0; top <= 8; top++)
        for (int left = 0; left <= 8; left++)
            for (int flip = 0; flip < 2; flip++) {
                kd_img_aug aug = {top, left, flip};
                reference_aug(img, 28, 28, 1, 4, a, 28, 28, &aug);
                if (kd_img_apply_aug(img, 28, 28, 1, 4, b, 28, 28, &aug) != KD_OK ||
                    memcmp(a, b, sizeof a) != 0)
                    wrong++;
            }
    kt_check(wrong == 0, "crop/flip: all 162 windows of 28x28 padded by 4", "%d differ",
             wrong);

    kd_img_aug aug;
    kd_img_aug off = {0, 9, false};
    kt_check(kd_img_draw_crop(&rng, 28, 28, 4, 37, 28, &aug) == KD_ERR_INVALID &&
                 contains(kd_last_error(), "37x28 window does not fit a 28x28 image padded "
                                           "by 4") &&
                 kd_img_draw_crop(&rng, 28, 28, -1, 28, 28, &aug) == KD_ERR_INVALID &&
                 kd_img_apply_aug(img, 28, 28, 1, 4, a, 28, 28, &off) == KD_ERR_INVALID &&
                 kd_img_apply_aug(img, 28, 28, 0, 4, a, 28, 28, &aug) == KD_ERR_INVALID,
             "crop/flip: windows that do not fit are KD_ERR_INVALID", "%s", kd_last_error());
}

static void test_crop_flip_randomness(void)
{
    /* A key fixes the parameters, whatever else was drawn before. */
    bool same = true, differs = false;
    kd_img_aug first = {0, 0, false};
    for (uint64_t sample = 0; sample < 64; sample++) {
        kd_img_aug a, b;
        kd_rng r1 = kd_rng_make(7, 3, sample), r2 = kd_rng_make(7, 3, sample);
        kd_rng noise = kd_rng_make(7, 3, sample + 1000);
        kd_rng_u32(&noise);
        kd_img_draw_crop(&r1, 28, 28, 4, 28, 28, &a);
        a.flip = kd_img_draw_flip(&r1, 0.5);
        kd_img_draw_crop(&r2, 28, 28, 4, 28, 28, &b);
        b.flip = kd_img_draw_flip(&r2, 0.5);
        same &= a.top == b.top && a.left == b.left && a.flip == b.flip &&
                r1.counter == r2.counter;
        if (sample == 0)
            first = a;
        else
            differs |= a.top != first.top || a.left != first.left || a.flip != first.flip;
    }
    kt_check(same && differs, "crop/flip: the same key gives the same parameters",
             "same %d, differs %d", same, differs);

    /* The documented draw order: top and left by kd_rng_below, then one
     * kd_rng_uniform for the flip. */
    kd_rng r = kd_rng_make(5, 1, 2), replay = r;
    kd_img_aug aug;
    kd_img_draw_crop(&r, 28, 28, 4, 28, 28, &aug);
    aug.flip = kd_img_draw_flip(&r, 0.5);
    int top = (int)kd_rng_below(&replay, 9), left = (int)kd_rng_below(&replay, 9);
    bool flip = kd_rng_uniform(&replay) < 0.5;
    kt_check(aug.top == top && aug.left == left && aug.flip == flip &&
                 r.counter == replay.counter && r.counter == 6,
             "crop/flip: draw order is top, left, flip (6 u32 draws)",
             "(%d %d %d) vs (%d %d %d), counter %llu", aug.top, aug.left, aug.flip, top, left,
             flip, (unsigned long long)r.counter);
    kd_rng fixed = kd_rng_make(5, 1, 2);
    kd_img_draw_crop(&fixed, 28, 28, 0, 28, 28, &aug);
    kt_check(fixed.counter == 0 && aug.top == 0 && aug.left == 0,
             "crop/flip: a crop with one possible window draws nothing", "counter %llu",
             (unsigned long long)fixed.counter);

    /* Flip rate and crop offsets over 90000 keys: flips within 4 sigma of
     * half, and a chi-square over the 81 (top, left) cells. */
    enum { N = 90000, P = 4, SIDE = 2 * P + 1 };
    int64_t flips = 0, cells[SIDE][SIDE] = {{0}};
    bool in_range = true;
    for (uint64_t s = 0; s < N; s++) {
        kd_rng key = kd_rng_make(2024, 1, s);
        kd_img_draw_crop(&key, 28, 28, P, 28, 28, &aug);
        flips += kd_img_draw_flip(&key, 0.5);
        in_range &= aug.top >= 0 && aug.top < SIDE && aug.left >= 0 && aug.left < SIDE;
        if (in_range)
            cells[aug.top][aug.left]++;
    }
    double rate = (double)flips / N, sigma = sqrt(0.25 / N);
    kt_check(fabs(rate - 0.5) < 4 * sigma, "crop/flip: flip rate is 0.5",
             "%.4f over %d keys (sigma %.4f)", rate, N, sigma);
    double expect = (double)N / (SIDE * SIDE), chi2 = 0;
    for (int i = 0; i < SIDE; i++)
        for (int j = 0; j < SIDE; j++)
            chi2 += (cells[i][j] - expect) * (cells[i][j] - expect) / expect;
    /* 80 degrees of freedom: P(chi2 > 124.8) = 0.001. */
    kt_check(in_range && chi2 < 124.8, "crop/flip: offsets uniform over [0, 2p]^2",
             "chi-square %.1f over 81 cells (in range %d)", chi2, in_range);
    int64_t never = 0;
    for (uint64_t s = 0; s < 1000; s++) {
        kd_rng key = kd_rng_make(9, 0, s);
        never += kd_img_draw_flip(&key, 0.0);
    }
    kt_check(never == 0, "crop/flip: p = 0 never flips", "%lld flips", (long long)never);
}

/* ------------------------------------------------------------ normalize */

static void test_normalize(void)
{
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    enum { H = 5, W = 7 };
    uint8_t img[H * W * 3];
    kd_rng rng = kd_rng_make(3, 0, 0);
    for (int i = 0; i < H * W * 3; i++)
        img[i] = (uint8_t)kd_rng_below(&rng, 256);
    img[0] = 0;
    img[1] = 255;
    float got[3 * H * W];
    for (int c = 1; c <= 3; c++) {
        kd_img_norm norm;
        char name[96];
        snprintf(name, sizeof name, "normalize: %d channel%s", c, c > 1 ? "s" : "");
        if (!kt_check(kd_img_norm_init(&norm, c, mean, std) == KD_OK, name, "%s",
                      kd_last_error()))
            continue;
        kd_img_normalize(&norm, img, H, W, got);
        double worst = 0;
        bool exact = true;
        for (int k = 0; k < c; k++)
            for (int p = 0; p < H * W; p++) {
                uint8_t v = img[p * c + k];
                double ref = ((double)v / 255.0 - (double)mean[k]) / (double)std[k];
                double err = fabs(got[k * H * W + p] - ref) / fmax(fabs(ref), 1.0);
                worst = fmax(worst, err);
                /* torch: x.float().div(255), then sub_(mean).div_(std) in f32. */
                float x = (float)v / 255.0f;
                x -= mean[k];
                exact &= got[k * H * W + p] == x / std[k];
            }
        kt_check(worst < 4e-7 && exact, name,
                 "largest error against f64 %.3g, bit-exact with the f32 steps %d", worst,
                 exact);
    }
    kd_img_norm norm;
    const float zero[1] = {0.0f}, nan_mean[1] = {NAN};
    kt_check(kd_img_norm_init(&norm, 0, mean, std) == KD_ERR_INVALID &&
                 kd_img_norm_init(&norm, 5, mean, std) == KD_ERR_INVALID &&
                 kd_img_norm_init(&norm, 1, mean, zero) == KD_ERR_INVALID &&
                 contains(kd_last_error(), "std nonzero") &&
                 kd_img_norm_init(&norm, 1, nan_mean, std) == KD_ERR_INVALID,
             "normalize: bad channels, zero std and NaN mean are KD_ERR_INVALID", "%s",
             kd_last_error());
}

/* ------------------------------------------------------------ speed */

static void test_speed(void)
{
    enum { N = 200000, HW = 28 * 28 };
    uint8_t img[HW], crop[HW];
    float out[HW];
    for (int i = 0; i < HW; i++)
        img[i] = (uint8_t)(i * 31);
    const float mean = 0.2860f, std = 0.3530f;
    kd_img_norm norm;
    kd_img_norm_init(&norm, 1, &mean, &std);
    double t0 = now(), check = 0;
    for (uint64_t s = 0; s < N; s++) {
        kd_rng key = kd_rng_make(1, 0, s);
        kd_img_aug aug;
        kd_img_draw_crop(&key, 28, 28, 4, 28, 28, &aug);
        aug.flip = kd_img_draw_flip(&key, 0.5);
        kd_img_apply_aug(img, 28, 28, 1, 4, crop, 28, 28, &aug);
        kd_img_normalize(&norm, crop, 28, 28, out);
        check += out[s % HW];
    }
    double rate = N / (now() - t0);
    printf("     crop + flip + normalize 28x28: %.0f images/s on one thread (%g)\n", rate,
           check);
    kt_check(rate > 10000, "speed: more than 10k 28x28 images/s per core", "%.0f/s", rate);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        kt_fail("setup", "mkdtemp: %s", strerror(errno));
        return kt_finish();
    }
#ifdef KD_HAVE_ZLIB
    test_fashion_mnist();
#else
    kt_skip("fashion-mnist", "built without zlib");
#endif
    test_valid_files();
    test_malformed();
#ifdef KD_HAVE_ZLIB
    test_malformed_gzip();
#else
    kt_skip("gzip", "built without zlib");
#endif
    test_pairs();
    test_corpus();
    test_crop_flip_reference();
    test_crop_flip_randomness();
    test_normalize();
    test_speed();
    kt_remove_tree(tmp_dir);
    return kt_finish();
}
