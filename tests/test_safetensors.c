/* safetensors reader and writer: round trips, layout, files from a Python
 * writer, one malformed file per validation rule, the fuzz corpus, and
 * atomic saves. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[] = "/tmp/kdsafetensors.XXXXXX";

static const char *tmp_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* [u64 N][header][data], with N taken from the header as given. */
static unsigned char *build_file(const char *header, size_t header_len,
                                 const void *data, size_t data_len, size_t *len)
{
    *len = 8 + header_len + data_len;
    unsigned char *buf = malloc(*len ? *len : 1);
    if (!buf)
        return NULL;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    memcpy(buf + 8, header, header_len);
    if (data_len)
        memcpy(buf + 8 + header_len, data, data_len);
    return buf;
}

static bool has_bytes(const unsigned char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

static bool contains(const char *haystack, const char *needle)
{
    return !needle || strstr(haystack, needle) != NULL;
}

/* Parses bytes labelled bad.safetensors and expects KD_ERR_FORMAT with a
 * message naming the file, the tensor and the rule (each when given). */
static void expect_bytes_rejected(const char *test, const unsigned char *bytes,
                                  size_t len, const char *tensor, const char *rule)
{
    kd_safetensors *f = NULL;
    kd_clear_error();
    kd_status st = kd_safetensors_parse(bytes, len, "bad.safetensors", &f);
    const char *msg = kd_last_error();
    char quoted[160];
    snprintf(quoted, sizeof quoted, "'%s'", tensor ? tensor : "");
    kt_check(st == KD_ERR_FORMAT && !f && contains(msg, "bad.safetensors") &&
                 (!tensor || contains(msg, quoted)) && contains(msg, rule),
             test, "status %s, message \"%s\" (want the file, %s and \"%s\")",
             kd_status_name(st), msg, tensor ? quoted : "no tensor",
             rule ? rule : "");
    kd_safetensors_close(f);
}

static void expect_rejected(const char *test, const char *header, const void *data,
                            size_t data_len, const char *tensor, const char *rule)
{
    size_t len;
    unsigned char *bytes = build_file(header, strlen(header), data, data_len, &len);
    expect_bytes_rejected(test, bytes, len, tensor, rule);
    free(bytes);
}

/* The bytes must outlive the handle: the caller frees *bytes after closing. */
static kd_safetensors *parse_ok(const char *test, const char *header, const void *data,
                                size_t data_len, unsigned char **bytes)
{
    size_t len;
    *bytes = build_file(header, strlen(header), data, data_len, &len);
    kd_safetensors *f = NULL;
    if (kd_safetensors_parse(*bytes, len, "good.safetensors", &f) != KD_OK)
        kt_fail(test, "parse: %s", kd_last_error());
    return f;
}

/* A contiguous copy of t, to compare saved bytes with. */
static kd_tensor *packed(const kd_tensor *t)
{
    kd_tensor *c = kd_tensor_empty(t->dtype, KD_CPU, t->ndim, t->shape);
    if (c && kd_tensor_copy_(c, t) != KD_OK)
        return NULL;
    return c;
}

static bool same_bytes(const kd_tensor *a, const kd_tensor *b)
{
    if (!a || !b || a->dtype != b->dtype || !kd_tensor_same_shape(a, b))
        return false;
    kd_tensor *pa = packed(a), *pb = packed(b);
    size_t n = (size_t)kd_tensor_numel(a) * kd_dtype_size(a->dtype);
    return pa && pb && (n == 0 || memcmp(kd_tensor_data(pa), kd_tensor_data(pb), n) == 0);
}

/* ------------------------------------------------------------ round trips */

static void test_round_trip_dtypes(void)
{
    kd_scope_begin();
    kd_rng rng = kd_rng_make(7, 0, 0);
    enum { PER_DTYPE = 5 };
    const char *names[KD_DTYPE_COUNT * PER_DTYPE];
    kd_tensor *tensors[KD_DTYPE_COUNT * PER_DTYPE];
    char name_buf[KD_DTYPE_COUNT * PER_DTYPE][32];
    kd_tensor views[KD_DTYPE_COUNT][2];
    int n = 0;
    for (int d = 0; d < KD_DTYPE_COUNT; d++) {
        const char *dn = kd_dtype_name((kd_dtype)d);
        const int64_t matrix[2] = {3, 4}, empty[3] = {2, 0, 3};
        kd_tensor *m = kt_uniform((kd_dtype)d, 2, matrix, &rng, 0.0, 100.0);
        kd_tensor *scalar = kt_uniform((kd_dtype)d, 0, NULL, &rng, 0.0, 100.0);
        kd_tensor *e = kd_tensor_empty((kd_dtype)d, KD_CPU, 3, empty);
        /* A transposed view and a strided slice with an offset. */
        views[d][0] = *m;
        views[d][0].shape[0] = 4, views[d][0].shape[1] = 3;
        views[d][0].stride[0] = 1, views[d][0].stride[1] = 4;
        views[d][1] = *m;
        views[d][1].shape[0] = 3, views[d][1].shape[1] = 2;
        views[d][1].stride[0] = 4, views[d][1].stride[1] = 2;
        views[d][1].offset = 1;
        kd_tensor *list[PER_DTYPE] = {m, scalar, e, &views[d][0], &views[d][1]};
        const char *kind[PER_DTYPE] = {"matrix", "scalar", "empty", "transposed",
                                       "sliced"};
        for (int k = 0; k < PER_DTYPE; k++) {
            snprintf(name_buf[n], sizeof name_buf[n], "%s.%s", dn, kind[k]);
            names[n] = name_buf[n];
            tensors[n++] = list[k];
        }
    }
    const char *meta[] = {"format", "pt", "note", "quote \" backslash \\ and ümlaut"};
    char path[256];
    tmp_path("dtypes.safetensors", path, sizeof path);
    if (kd_safetensors_save(path, n, names, tensors, 2, meta) != KD_OK) {
        kt_fail("round trip: save", "%s", kd_last_error());
        kd_scope_end();
        return;
    }
    kd_safetensors *f;
    if (kd_safetensors_open(path, &f) != KD_OK) {
        kt_fail("round trip: open", "%s", kd_last_error());
        kd_scope_end();
        return;
    }
    kt_check(kd_safetensors_count(f) == n, "round trip: count", "%d entries, want %d",
             kd_safetensors_count(f), n);
    for (int i = 0; i < n; i++) {
        char test[96];
        snprintf(test, sizeof test, "round trip: %s", names[i]);
        const kd_safetensors_entry *e = kd_safetensors_find(f, names[i]);
        kd_tensor *t = kd_safetensors_load(f, names[i], tensors[i]->dtype);
        bool shape_ok = e && e->ndim == tensors[i]->ndim &&
                        e->dtype == (int)tensors[i]->dtype &&
                        e->nbytes == (size_t)kd_tensor_numel(tensors[i]) *
                                         kd_dtype_size(tensors[i]->dtype);
        for (int k = 0; shape_ok && k < e->ndim; k++)
            shape_ok = e->shape[k] == tensors[i]->shape[k];
        bool layout_ok = t && t->device == KD_CPU && kd_tensor_is_contiguous(t);
        kt_check(shape_ok && layout_ok && same_bytes(t, tensors[i]), test,
                 "entry %s, load %s", !e ? "missing" : shape_ok ? "ok" : "differs",
                 !t ? kd_last_error() : layout_ok ? "gave other bytes" : "not contiguous");
    }
    kt_check(strcmp(kd_safetensors_metadata(f, "format") ? kd_safetensors_metadata(f, "format") : "", "pt") == 0 &&
                 kd_safetensors_metadata(f, "note") &&
                 strcmp(kd_safetensors_metadata(f, "note"), meta[3]) == 0 &&
                 !kd_safetensors_metadata(f, "missing"),
             "round trip: metadata", "format=%s note=%s",
             kd_safetensors_metadata(f, "format"), kd_safetensors_metadata(f, "note"));
    kd_safetensors_close(f);
    kd_scope_end();
}

static void test_load_conversions(void)
{
    kd_scope_begin();
    kd_rng rng = kd_rng_make(11, 0, 0);
    const int64_t shape[2] = {2, 5};
    kd_tensor *x = kt_uniform(KD_F32, 2, shape, &rng, -4.0, 4.0);
    const int32_t ints[4] = {-7, 0, 100000, 2147483647};
    const uint8_t bytes[3] = {0, 1, 255};
    const int64_t four = 4, three = 3;
    kd_tensor *i = kd_tensor_from_data(KD_I32, 1, &four, ints);
    kd_tensor *u = kd_tensor_from_data(KD_U8, 1, &three, bytes);
    const char *names[] = {"x", "i", "u"};
    kd_tensor *tensors[] = {x, i, u};
    char path[256];
    tmp_path("convert.safetensors", path, sizeof path);
    kd_safetensors *f = NULL;
    if (kd_safetensors_save(path, 3, names, tensors, 0, NULL) != KD_OK ||
        kd_safetensors_open(path, &f) != KD_OK) {
        kt_fail("load: conversions", "%s", kd_last_error());
        kd_scope_end();
        return;
    }
    for (int d = 0; d < KD_DTYPE_COUNT; d++) {
        char test[64];
        bool is_float = kd_dtype_is_float((kd_dtype)d);
        kd_tensor *src = is_float ? x : i;
        snprintf(test, sizeof test, "load: %s as %s", is_float ? "F32" : "I32",
                 kd_dtype_name((kd_dtype)d));
        kd_tensor *want = kd_tensor_empty((kd_dtype)d, KD_CPU, src->ndim, src->shape);
        kd_tensor_copy_(want, src);
        kd_tensor *got = kd_safetensors_load(f, is_float ? "x" : "i", (kd_dtype)d);
        kt_check(got && got->dtype == (kd_dtype)d && same_bytes(got, want), test, "%s",
                 got ? "values differ from kd_tensor_copy_" : kd_last_error());
    }
    kd_tensor *u64 = kd_safetensors_load(f, "u", KD_I64);
    kt_check(u64 && kd_tensor_get(u64, 2) == 255.0, "load: U8 as i64",
             "%s", u64 ? "value differs" : kd_last_error());

    kd_tensor *bad = kd_safetensors_load(f, "x", KD_I64);
    const char *msg = kd_last_error();
    kt_check(!bad && contains(msg, path) && contains(msg, "'x'") &&
                 contains(msg, "F32") && contains(msg, "i64"),
             "load: float to integer refused", "message \"%s\"", msg);
    bad = kd_safetensors_load(f, "i", KD_F32);
    kt_check(!bad && contains(kd_last_error(), "'i'"), "load: integer to float refused",
             "message \"%s\"", kd_last_error());
    kd_clear_error();
    bad = kd_safetensors_load(f, "nope", KD_F32);
    msg = kd_last_error();
    kt_check(!bad && contains(msg, path) && contains(msg, "'nope'"),
             "load: unknown name", "message \"%s\"", msg);
    bad = kd_safetensors_load(f, "x", (kd_dtype)42);
    kt_check(!bad, "load: unknown target dtype", "accepted");
    kd_scope_end();

    /* Without a scope the caller owns the tensor. */
    kd_tensor *own = kd_safetensors_load(f, "x", KD_F32);
    kt_check(own && !own->scope && kd_tensor_numel(own) == 10, "load: caller-owned",
             "%s", own ? "owned by a scope" : kd_last_error());
    kd_tensor_free(own);
    kd_safetensors_close(f);
}

/* Entries whose dtype kdengine lacks: integers widen, the rest refuse. */
static void test_foreign_dtypes(void)
{
    const char *header =
        "{\"b\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]},"
        "\"i8\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[3,5]},"
        "\"i16\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[5,7]},"
        "\"u16\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[7,9]},"
        "\"u32\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[9,13]},"
        "\"u64\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[13,21]},"
        "\"f8\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[21,23]},"
        "\"c\":{\"dtype\":\"C64\",\"shape\":[],\"data_offsets\":[23,31]},"
        "\"f4\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[31,34]},"
        "\"f6\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[34,37]}}";
    unsigned char data[37] = {0, 1, 7,           /* BOOL */
                              0xff, 0x80,        /* I8: -1, -128 */
                              0x00, 0x80,        /* I16: -32768 */
                              0xff, 0xff,        /* U16: 65535 */
                              0xff, 0xff, 0xff, 0xff, /* U32 */
                              5, 0, 0, 0, 0, 0, 0, 0}; /* U64: 5 */
    unsigned char *bytes;
    kd_safetensors *f = parse_ok("foreign dtypes", header, data, sizeof data, &bytes);
    if (!f) {
        free(bytes);
        return;
    }
    kd_scope_begin();
    struct {
        const char *name;
        int index;
        double want;
    } cases[] = {{"b", 2, 1}, {"i8", 0, -1}, {"i8", 1, -128}, {"i16", 0, -32768},
                 {"u16", 0, 65535}, {"u32", 0, 4294967295.0}, {"u64", 0, 5}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char test[64];
        snprintf(test, sizeof test, "foreign dtypes: %s[%d] as i64", cases[k].name,
                 cases[k].index);
        kd_tensor *t = kd_safetensors_load(f, cases[k].name, KD_I64);
        double got = t ? kd_tensor_get(t, cases[k].index) : -1;
        kt_check(t && got == cases[k].want, test, "got %g, want %g (%s)", got,
                 cases[k].want, t ? "" : kd_last_error());
    }
    const kd_safetensors_entry *e = kd_safetensors_find(f, "f8");
    kt_check(e && e->dtype == -1 && strcmp(e->file_dtype, "F8_E4M3") == 0 &&
                 e->nbytes == 2,
             "foreign dtypes: F8 entry", "entry %s", e ? e->file_dtype : "missing");
    const char *refused[] = {"f8", "c", "f4", "f6"};
    for (int k = 0; k < 4; k++) {
        char test[64];
        snprintf(test, sizeof test, "foreign dtypes: %s refused", refused[k]);
        kd_tensor *t = kd_safetensors_load(f, refused[k], KD_F32);
        kt_check(!t && contains(kd_last_error(), "good.safetensors") &&
                     contains(kd_last_error(), "no kdengine dtype"),
                 test, "message \"%s\"", kd_last_error());
    }
    kd_scope_end();
    kd_safetensors_close(f);
    free(bytes);
}

/* ------------------------------------------------------------ layout */

static void test_layout(void)
{
    kd_scope_begin();
    const kd_dtype dtypes[] = {KD_U8, KD_F16, KD_BF16, KD_I32, KD_F32, KD_F32,
                               KD_F64, KD_I64, KD_I64};
    const char *names[] = {"u8.a", "f16.a", "bf16.a", "i32.a", "f32.b", "f32.a",
                           "f64.a", "i64.z", "i64.a"};
    const char *expect[] = {"i64.a", "i64.z", "f64.a", "f32.a", "f32.b",
                            "i32.a", "bf16.a", "f16.a", "u8.a"};
    kd_tensor *tensors[9];
    const int64_t three = 3;
    for (int i = 0; i < 9; i++)
        tensors[i] = kd_tensor_full(dtypes[i], KD_CPU, 1, &three, i + 1);
    const char *meta[] = {"k", "v"};
    char path[256];
    tmp_path("layout.safetensors", path, sizeof path);
    kd_safetensors *f = NULL;
    if (kd_safetensors_save(path, 9, names, tensors, 1, meta) != KD_OK ||
        kd_safetensors_open(path, &f) != KD_OK) {
        kt_fail("layout", "%s", kd_last_error());
        kd_scope_end();
        return;
    }
    bool order_ok = kd_safetensors_count(f) == 9;
    const char *base = kd_safetensors_at(f, 0) ? kd_safetensors_at(f, 0)->data : NULL;
    bool aligned = true;
    for (int i = 0; order_ok && i < 9; i++) {
        const kd_safetensors_entry *e = kd_safetensors_at(f, i);
        order_ok = strcmp(e->name, expect[i]) == 0;
        aligned &= ((const char *)e->data - base) % (long)kd_dtype_size((kd_dtype)e->dtype) == 0;
    }
    kt_check(order_ok, "layout: by alignment, then name", "order differs");
    kt_check(aligned, "layout: every tensor aligned to its element size", "misaligned");
    kt_check(!kd_safetensors_at(f, 9) && !kd_safetensors_at(f, -1),
             "layout: at() out of range", "returned an entry");
    kd_safetensors_close(f);

    size_t len;
    unsigned char *bytes = kt_read_file(path, &len);
    uint64_t n = bytes && len >= 8 ? le64(bytes) : 0;
    kt_check(n > 0 && n % 8 == 0 && 8 + n <= len, "layout: header padded to 8 bytes",
             "header length %llu", (unsigned long long)n);
    if (n > 0 && 8 + n <= len) {
        const char *h = (const char *)bytes + 8;
        size_t end = (size_t)n;
        while (end > 0 && h[end - 1] == ' ')
            end--;
        const char *start = "{\"__metadata__\":{\"k\":\"v\"},\"i64.a\":{\"dtype\":\"I64\","
                            "\"shape\":[3],\"data_offsets\":[0,24]},";
        kt_check(end > 0 && h[end - 1] == '}' && (size_t)n - end < 8 &&
                     strncmp(h, start, strlen(start)) == 0,
                 "layout: compact header, metadata first, dtype/shape/data_offsets",
                 "header \"%.*s\"", (int)n, h);
        uint64_t data_len = 0;
        for (int i = 0; i < 9; i++)
            data_len += 3 * kd_dtype_size(dtypes[i]);
        kt_check(len == 8 + n + data_len, "layout: file length", "%zu bytes", len);
    }
    free(bytes);

    /* No metadata: no __metadata__ key; no tensors: "{}" padded. */
    tmp_path("bare.safetensors", path, sizeof path);
    kd_status st = kd_safetensors_save(path, 1, names, tensors, 0, NULL);
    bytes = st == KD_OK ? kt_read_file(path, &len) : NULL;
    kt_check(bytes && len > 8 && !has_bytes(bytes, len, "__metadata__"),
             "layout: no metadata key without metadata", "%s", kd_last_error());
    free(bytes);
    tmp_path("none.safetensors", path, sizeof path);
    st = kd_safetensors_save(path, 0, NULL, NULL, 0, NULL);
    bytes = st == KD_OK ? kt_read_file(path, &len) : NULL;
    kt_check(bytes && len == 16 && le64(bytes) == 8 && memcmp(bytes + 8, "{}      ", 8) == 0,
             "layout: empty file", "%s", kd_last_error());
    free(bytes);
    f = NULL;
    kt_check(kd_safetensors_open(path, &f) == KD_OK && kd_safetensors_count(f) == 0 &&
                 !kd_safetensors_find(f, "x") && !kd_safetensors_metadata(f, "x"),
             "layout: empty file reads back", "%s", kd_last_error());
    kd_safetensors_close(f);
    kd_scope_end();
}

/* ------------------------------------------------------------ Python files */

static const char *python_script =
    "import json, struct, sys\n"
    "def write(path, tensors, meta, pad):\n"
    "    header = {} if meta is None else {'__metadata__': meta}\n"
    "    blobs = b''\n"
    "    for name, dtype, shape, raw in tensors:\n"
    "        header[name] = {'dtype': dtype, 'shape': shape,\n"
    "                        'data_offsets': [len(blobs), len(blobs) + len(raw)]}\n"
    "        blobs += raw\n"
    "    text = json.dumps(header).encode()\n"
    "    if pad:\n"
    "        text += b' ' * (-len(text) % 8)\n"
    "    elif len(text) % 2 == 0:\n"
    "        text += b' '\n"
    "    with open(path, 'wb') as f:\n"
    "        f.write(struct.pack('<Q', len(text)) + text + blobs)\n"
    "def check(path):\n"
    "    data = open(path, 'rb').read()\n"
    "    (n,) = struct.unpack('<Q', data[:8])\n"
    "    assert n % 8 == 0\n"
    "    header = json.loads(data[8:8 + n])\n"
    "    assert header.pop('__metadata__') == {'who': 'kdengine'}\n"
    "    base = 8 + n\n"
    "    w = header['w']\n"
    "    assert w['dtype'] == 'F32' and w['shape'] == [2, 3]\n"
    "    b, e = w['data_offsets']\n"
    "    assert struct.unpack('<6f', data[base + b:base + e]) == (0, 1, 2, 3, 4, 5)\n"
    "    s = header['s']\n"
    "    assert s['dtype'] == 'I64' and s['shape'] == []\n"
    "    b, e = s['data_offsets']\n"
    "    assert struct.unpack('<q', data[base + b:base + e]) == (-9,)\n"
    "    assert len(data) == base + max(v['data_offsets'][1] for v in header.values())\n"
    "if sys.argv[1] == 'check':\n"
    "    check(sys.argv[2])\n"
    "    sys.exit(0)\n"
    "tensors = [\n"
    "    ('a.weight', 'F32', [2, 2], struct.pack('<4f', 1.5, -2.25, 3.0, 0.125)),\n"
    "    ('b.bytes', 'U8', [3], bytes([1, 2, 250])),\n"
    "    ('c.count', 'I64', [], struct.pack('<q', -(1 << 40))),\n"
    "    ('d.half', 'F16', [2], struct.pack('<2H', 0x3c00, 0xc000)),\n"
    "    ('e.bf', 'BF16', [1], struct.pack('<H', 0x3fc0)),\n"
    "    ('f.empty', 'F64', [0, 4], b''),\n"
    "    ('g.double', 'F64', [1], struct.pack('<d', 0.1)),\n"
    "]\n"
    "write(sys.argv[2] + '/ref_padded.safetensors', tensors, {'format': 'pt'}, True)\n"
    "write(sys.argv[2] + '/ref_unpadded.safetensors', tensors, None, False)\n";

static bool run_python(const char *mode, const char *arg)
{
    char script[256], cmd[1024];
    tmp_path("writer.py", script, sizeof script);
    if (!kt_write_file(script, python_script, strlen(python_script)))
        return false;
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, mode, arg);
    return system(cmd) == 0;
}

static void check_python_file(const char *file, bool padded)
{
    char path[256], test[96];
    tmp_path(file, path, sizeof path);
    kd_safetensors *f = NULL;
    snprintf(test, sizeof test, "python writer: %s opens", file);
    if (!kt_check(kd_safetensors_open(path, &f) == KD_OK, test, "%s", kd_last_error()))
        return;
    kd_scope_begin();
    const kd_safetensors_entry *w = kd_safetensors_find(f, "a.weight");
    kd_tensor *a = kd_safetensors_load(f, "a.weight", KD_F32);
    kd_tensor *c = kd_safetensors_load(f, "c.count", KD_I64);
    kd_tensor *h = kd_safetensors_load(f, "d.half", KD_F32);
    kd_tensor *b = kd_safetensors_load(f, "e.bf", KD_F64);
    kd_tensor *u = kd_safetensors_load(f, "b.bytes", KD_U8);
    kd_tensor *e = kd_safetensors_load(f, "f.empty", KD_F32);
    kd_tensor *g = kd_safetensors_load(f, "g.double", KD_F64);
    snprintf(test, sizeof test, "python writer: %s values", file);
    kt_check(a && c && h && b && u && e && g && kd_tensor_get(a, 0) == 1.5 &&
                 kd_tensor_get(a, 1) == -2.25 && kd_tensor_get(a, 3) == 0.125 &&
                 kd_tensor_get(c, 0) == -1099511627776.0 && kd_tensor_get(h, 0) == 1.0 &&
                 kd_tensor_get(h, 1) == -2.0 && kd_tensor_get(b, 0) == 1.5 &&
                 kd_tensor_get(u, 2) == 250 && kd_tensor_numel(e) == 0 && e->ndim == 2 &&
                 e->shape[1] == 4 && kd_tensor_get(g, 0) == 0.1 && c->ndim == 0,
             test, "%s", kd_last_error());
    snprintf(test, sizeof test, "python writer: %s data %saligned", file,
             padded ? "" : "mis");
    /* The unpadded header has an odd length, so the data starts at an odd
     * address, as in files from before the padding rule. */
    kt_check(w && (((uintptr_t)w->data % 4) != 0) == !padded, test, "address %p",
             w ? w->data : NULL);
    snprintf(test, sizeof test, "python writer: %s metadata", file);
    const char *fmt = kd_safetensors_metadata(f, "format");
    kt_check(padded ? fmt && strcmp(fmt, "pt") == 0 : !fmt, test, "format=%s",
             fmt ? fmt : "(none)");
    kd_scope_end();
    kd_safetensors_close(f);
}

static void test_python_files(void)
{
    if (!kt_check(run_python("write", tmp_dir), "python writer: runs", "%s failed",
                  KD_TORCH_PYTHON))
        return;
    check_python_file("ref_padded.safetensors", true);
    check_python_file("ref_unpadded.safetensors", false);

    kd_scope_begin();
    const float wv[6] = {0, 1, 2, 3, 4, 5};
    const int64_t sv = -9, wshape[2] = {2, 3};
    kd_tensor *w = kd_tensor_from_data(KD_F32, 2, wshape, wv);
    kd_tensor *s = kd_tensor_from_data(KD_I64, 0, NULL, &sv);
    const char *names[] = {"w", "s"}, *meta[] = {"who", "kdengine"};
    kd_tensor *tensors[] = {w, s};
    char path[256];
    tmp_path("for_python.safetensors", path, sizeof path);
    kt_check(kd_safetensors_save(path, 2, names, tensors, 1, meta) == KD_OK &&
                 run_python("check", path),
             "python reads kdengine's file", "%s", kd_last_error());
    kd_scope_end();
}

/* ------------------------------------------------------------ malformed */

#define ENTRY(dt, shape, b, e) \
    "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_header_rules(void)
{
    unsigned char bytes[64] = {0};
    expect_bytes_rejected("reject: empty buffer", bytes, 0, NULL, "too short");
    expect_bytes_rejected("reject: 7 bytes", bytes, 7, NULL, "too short");

    uint64_t sizes[] = {100000001u, UINT64_MAX, (uint64_t)1 << 63};
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 8; k++)
            bytes[k] = (unsigned char)(sizes[i] >> (8 * k));
        const char *test[] = {"reject: header over 100 MB", "reject: header length 2^64-1",
                              "reject: header length 2^63"};
        expect_bytes_rejected(test[i], bytes, 16, NULL, "exceeds the limit");
    }
    /* N = 9 with only 8 header bytes present. */
    memset(bytes, 0, 8);
    bytes[0] = 9;
    memcpy(bytes + 8, "{}      ", 8);
    expect_bytes_rejected("reject: header past the end", bytes, 16, NULL,
                          "runs past the end");
    bytes[0] = 0;
    expect_bytes_rejected("reject: zero-length header", bytes, 8, NULL, "'{'");

    expect_rejected("reject: header not starting with {", " {}", NULL, 0, NULL, "'{'");
    expect_rejected("reject: header is an array", "[]", NULL, 0, NULL, "'{'");
    expect_rejected("reject: truncated JSON", "{\"a\":", NULL, 0, NULL, "not valid JSON");
    expect_rejected("reject: invalid UTF-8", "{\"\xff\xfe\":" ENTRY("U8", "[]", 0, 1) "}",
                    "x", 1, NULL, "not valid JSON");
    expect_rejected("reject: overlong UTF-8", "{\"\xc0\xaf\":" ENTRY("U8", "[]", 0, 1) "}",
                    "x", 1, NULL, "not valid JSON");
    expect_rejected("reject: NUL escape in a name", "{\"a\\u0000b\":" ENTRY("U8", "[]", 0, 1) "}",
                    "x", 1, NULL, "not valid JSON");
    expect_rejected("reject: bytes after the object", "{}x", NULL, 0, NULL,
                    "not valid JSON");
    expect_rejected("reject: second object", "{} {}", NULL, 0, NULL, "not valid JSON");
    {
        size_t len;
        unsigned char *b = build_file("{}\0\0", 4, NULL, 0, &len);
        expect_bytes_rejected("reject: NUL bytes after the object", b, len, NULL,
                              "not valid JSON");
        free(b);
    }
    expect_rejected("reject: duplicate tensor name",
                    "{\"a\":" ENTRY("U8", "[]", 0, 1) ",\"a\":" ENTRY("U8", "[]", 0, 1) "}",
                    "x", 1, NULL, "duplicate");
    expect_rejected("reject: duplicate metadata key",
                    "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", NULL, 0, NULL,
                    "duplicate");

    unsigned char *bytes_ok;
    kd_safetensors *f = parse_ok("accept: trailing JSON whitespace",
                                 "{\"a\":" ENTRY("U8", "[2]", 0, 2) "} \t\r\n  ", "xy", 2,
                                 &bytes_ok);
    kt_check(f && kd_safetensors_count(f) == 1, "accept: trailing JSON whitespace",
             "not accepted");
    kd_safetensors_close(f);
    free(bytes_ok);
}

static void test_entry_rules(void)
{
    expect_rejected("reject: metadata not an object", "{\"__metadata__\":[]}", NULL, 0,
                    NULL, "__metadata__ is not");
    expect_rejected("reject: metadata value not a string",
                    "{\"__metadata__\":{\"epoch\":3}}", NULL, 0, NULL, "'epoch'");
    expect_rejected("reject: nested metadata", "{\"__metadata__\":{\"a\":{}}}", NULL, 0,
                    NULL, "not a string");
    expect_rejected("reject: entry not an object", "{\"w\":[1,2]}", NULL, 0, "w",
                    "not a JSON object");
    expect_rejected("reject: unknown field",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],"
                    "\"extra\":1}}",
                    "x", 1, "w", "unknown field 'extra'");
    expect_rejected("reject: missing dtype", "{\"w\":{\"shape\":[],\"data_offsets\":[0,1]}}",
                    "x", 1, "w", "missing field 'dtype'");
    expect_rejected("reject: missing shape", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}",
                    "x", 1, "w", "missing field 'shape'");
    expect_rejected("reject: missing data_offsets", "{\"w\":{\"dtype\":\"U8\",\"shape\":[]}}",
                    "x", 1, "w", "missing field 'data_offsets'");
    expect_rejected("reject: unknown dtype", "{\"w\":" ENTRY("F128", "[]", 0, 16) "}",
                    "0123456789abcdef", 16, "w", "unknown dtype 'F128'");
    expect_rejected("reject: lowercase dtype", "{\"w\":" ENTRY("f32", "[]", 0, 4) "}", "abcd",
                    4, "w", "unknown dtype");
    expect_rejected("reject: dtype not a string",
                    "{\"w\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", "abcd", 4,
                    "w", "dtype is not a string");
    expect_rejected("reject: shape not an array", "{\"w\":" ENTRY("U8", "4", 0, 4) "}",
                    "abcd", 4, "w", "shape is not an array");
    expect_rejected("reject: negative dim", "{\"w\":" ENTRY("U8", "[-1]", 0, 0) "}", NULL, 0,
                    "w", "shape[0]");
    expect_rejected("reject: fractional dim", "{\"w\":" ENTRY("U8", "[2, 2.0]", 0, 4) "}",
                    "abcd", 4, "w", "shape[1]");
    expect_rejected("reject: dim of 2^48", "{\"w\":" ENTRY("U8", "[0, 281474976710656]", 0, 0) "}",
                    NULL, 0, "w", "shape[1]");
    expect_rejected("reject: dim beyond int64",
                    "{\"w\":" ENTRY("U8", "[0, 99999999999999999999]", 0, 0) "}", NULL, 0,
                    NULL, "not valid JSON");
    expect_rejected("reject: rank 9", "{\"w\":" ENTRY("U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}",
                    "x", 1, "w", "rank 9");
    expect_rejected("reject: data_offsets of one value",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[1]}}", "x", 1,
                    "w", "data_offsets");
    expect_rejected("reject: negative offset", "{\"w\":" ENTRY("U8", "[]", -1, 0) "}", "x", 1,
                    "w", "data_offsets");
    expect_rejected("reject: fractional offset",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1.0]}}", "x",
                    1, "w", "data_offsets");
    expect_rejected("reject: end before begin", "{\"w\":" ENTRY("U8", "[0]", 2, 1) "}", "xy",
                    2, "w", "end before they begin");

    float floats[12] = {0};
    {
        size_t len;
        const char *h = "{\"fc.weight\":" ENTRY("F32", "[3, 4]", 0, 40) "}";
        unsigned char *b = build_file(h, strlen(h), floats, 40, &len);
        kd_safetensors *f = NULL;
        kd_status st = kd_safetensors_parse(b, len, "model.safetensors", &f);
        kt_check(st == KD_ERR_FORMAT &&
                     strcmp(kd_last_error(),
                            "model.safetensors: tensor 'fc.weight': data_offsets [0, 40] "
                            "hold 40 bytes but shape [3, 4] of F32 needs 48") == 0,
                 "reject: byte count message", "message \"%s\"", kd_last_error());
        kd_safetensors_close(f);
        free(b);
    }
    {
        /* A long name is clipped so the rule still fits in the message. */
        char h[6000];
        int used = snprintf(h, sizeof h, "{\"");
        memset(h + used, 'n', 5000);
        snprintf(h + used + 5000, sizeof h - (size_t)used - 5000,
                 "\":" ENTRY("F32", "[3]", 0, 8) "}");
        expect_rejected("reject: long name, rule still reported", h, floats, 8, NULL,
                        "needs 12");
    }
    expect_rejected("reject: elements overflow",
                    "{\"w\":" ENTRY("F32", "[281474976710655, 281474976710655]", 0, 0) "}",
                    NULL, 0, "w", "overflows");
    expect_rejected("reject: bits overflow",
                    "{\"w\":" ENTRY("F64", "[281474976710655, 65536]", 0, 0) "}", NULL, 0,
                    "w", "overflows");
    expect_rejected("reject: strides overflow beside a zero dim",
                    "{\"w\":" ENTRY("F32", "[0, 281474976710655, 281474976710655]", 0, 0) "}",
                    NULL, 0, "w", "overflows");
    expect_rejected("reject: F4 of odd count", "{\"w\":" ENTRY("F4", "[3]", 0, 2) "}", "xy", 2,
                    "w", "not whole bytes");
    expect_rejected("reject: F6 of one element", "{\"w\":" ENTRY("F6_E3M2", "[1]", 0, 1) "}",
                    "x", 1, "w", "not whole bytes");

    const char data[8] = "abcdefgh";
    expect_rejected("reject: first tensor not at 0", "{\"w\":" ENTRY("U8", "[2]", 1, 3) "}",
                    data, 3, "w", "a gap");
    expect_rejected("reject: gap between tensors",
                    "{\"a\":" ENTRY("U8", "[2]", 0, 2) ",\"b\":" ENTRY("U8", "[2]", 3, 5) "}",
                    data, 5, "b", "a gap");
    expect_rejected("reject: overlapping tensors",
                    "{\"a\":" ENTRY("U8", "[3]", 0, 3) ",\"b\":" ENTRY("U8", "[2]", 2, 4) "}",
                    data, 4, "b", "an overlap");
    expect_rejected("reject: aliased tensors",
                    "{\"a\":" ENTRY("U8", "[2]", 0, 2) ",\"b\":" ENTRY("U8", "[2]", 0, 2) "}",
                    data, 2, "b", "an overlap");
    expect_rejected("reject: trailing bytes after the data",
                    "{\"a\":" ENTRY("U8", "[2]", 0, 2) "}", data, 3, NULL,
                    "buffer holds 3 bytes");
    expect_rejected("reject: truncated data", "{\"a\":" ENTRY("U8", "[4]", 0, 4) "}", data, 3,
                    NULL, "buffer holds 3 bytes");
    expect_rejected("reject: data without tensors", "{}", data, 1, NULL,
                    "buffer holds 1 bytes");

    /* Valid edge cases: offsets out of name order, empties sharing an offset. */
    unsigned char *bytes;
    kd_safetensors *f = parse_ok("accept: offsets out of name order",
                                 "{\"z\":" ENTRY("U8", "[1]", 0, 1) ",\"a\":" ENTRY("U8", "[2]", 1, 3)
                                 ",\"m\":" ENTRY("F32", "[0, 5]", 1, 1) ",\"n\":"
                                 ENTRY("I64", "[0]", 3, 3) "}",
                                 data, 3, &bytes);
    kt_check(f && kd_safetensors_count(f) == 4 &&
                 strcmp(kd_safetensors_at(f, 0)->name, "z") == 0 &&
                 strcmp(kd_safetensors_at(f, 2)->name, "a") == 0 &&
                 kd_safetensors_find(f, "a")->data == (const char *)kd_safetensors_at(f, 0)->data + 1,
             "accept: offsets out of name order", "entries out of offset order");
    kd_safetensors_close(f);
    free(bytes);
}

static void test_open_errors(void)
{
    char path[256];
    tmp_path("empty.safetensors", path, sizeof path);
    kd_safetensors *f = NULL;
    kt_check(kt_write_file(path, "", 0) && kd_safetensors_open(path, &f) == KD_ERR_FORMAT &&
                 !f && contains(kd_last_error(), path),
             "open: 0-byte file", "message \"%s\"", kd_last_error());
    tmp_path("tiny.safetensors", path, sizeof path);
    kt_check(kt_write_file(path, "\x02\0\0", 3) &&
                 kd_safetensors_open(path, &f) == KD_ERR_FORMAT && !f &&
                 contains(kd_last_error(), path),
             "open: 3-byte file", "message \"%s\"", kd_last_error());
    tmp_path("missing.safetensors", path, sizeof path);
    kt_check(kd_safetensors_open(path, &f) == KD_ERR_IO && !f &&
                 contains(kd_last_error(), path),
             "open: missing file", "message \"%s\"", kd_last_error());
    kt_check(kd_safetensors_open(tmp_dir, &f) == KD_ERR_IO && !f &&
                 contains(kd_last_error(), tmp_dir),
             "open: a directory", "message \"%s\"", kd_last_error());
    kt_check(kd_safetensors_parse(NULL, 0, NULL, NULL) == KD_ERR_INVALID &&
                 kd_safetensors_count(NULL) == 0 && !kd_safetensors_at(NULL, 0) &&
                 !kd_safetensors_find(NULL, "a") && !kd_safetensors_metadata(NULL, "a") &&
                 !kd_safetensors_load(NULL, "a", KD_F32),
             "NULL arguments", "not refused");
    kd_safetensors_close(NULL);
}

/* ------------------------------------------------------------ corpus */

static kd_status parse_safetensors(const unsigned char *bytes, size_t len, const char *label,
                                   bool *consistent)
{
    (void)consistent; /* loading every entry is the check: ASan watches it */
    kd_safetensors *f = NULL;
    kd_status st = kd_safetensors_parse(bytes, len, label, &f);
    if (st == KD_OK) {
        kd_scope_begin();
        for (int i = 0; i < kd_safetensors_count(f); i++) {
            const kd_safetensors_entry *e = kd_safetensors_at(f, i);
            if (e->dtype >= 0)
                kd_safetensors_load(f, e->name, (kd_dtype)e->dtype);
        }
        kd_scope_end();
    }
    kd_safetensors_close(f);
    return st;
}

static void test_corpus(void)
{
    kt_replay_corpus("tests/fuzz/corpus/safetensors", parse_safetensors);
}

/* ------------------------------------------------------------ saving */

static bool file_has_content(const char *path, const char *name, double value)
{
    kd_safetensors *f = NULL;
    if (kd_safetensors_open(path, &f) != KD_OK)
        return false;
    kd_tensor *t = kd_safetensors_load(f, name, KD_F64);
    bool ok = t && kd_tensor_get(t, 0) == value;
    kd_safetensors_close(f);
    return ok;
}

/* No leftover "<file>.tmp.*" in the directory. */
static bool no_temp_files(const char *dir_path)
{
    DIR *dir = opendir(dir_path);
    if (!dir)
        return false;
    bool clean = true;
    struct dirent *de;
    while ((de = readdir(dir)))
        clean &= strstr(de->d_name, ".tmp.") == NULL;
    closedir(dir);
    return clean;
}

static void test_atomic_save(void)
{
    kd_scope_begin();
    const int64_t two = 2;
    kd_tensor *old_t = kd_tensor_full(KD_F32, KD_CPU, 1, &two, 1.0);
    kd_tensor *new_t = kd_tensor_full(KD_F32, KD_CPU, 1, &two, 2.0);
    const char *names[] = {"w"};
    char path[256];
    tmp_path("atomic.safetensors", path, sizeof path);
    kt_check(kd_safetensors_save(path, 1, names, &old_t, 0, NULL) == KD_OK &&
                 kd_safetensors_save(path, 1, names, &new_t, 0, NULL) == KD_OK &&
                 file_has_content(path, "w", 2.0) && no_temp_files(tmp_dir),
             "save: over an existing file", "%s", kd_last_error());

    /* Failures leave the old file untouched and no temp file behind. */
    const char *twice[] = {"w", "w"};
    kd_tensor *pair[] = {new_t, old_t};
    kd_status st = kd_safetensors_save(path, 2, twice, pair, 0, NULL);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "'w' given twice") &&
                 file_has_content(path, "w", 2.0),
             "save: duplicate names refused", "%s", kd_last_error());
    const char *dup_meta[] = {"k", "1", "k", "2"};
    st = kd_safetensors_save(path, 1, names, &old_t, 2, dup_meta);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "'k'") &&
                 file_has_content(path, "w", 2.0),
             "save: duplicate metadata keys refused", "%s", kd_last_error());

    char long_name[300];
    memset(long_name, 'x', 250);
    memcpy(long_name + 250, ".st", 4);
    char long_path[600];
    snprintf(long_path, sizeof long_path, "%s/%s", tmp_dir, long_name);
    /* The file name fits, but its temp name is over NAME_MAX. */
    bool made = kt_write_file(long_path, "old", 3);
    st = kd_safetensors_save(long_path, 1, names, &new_t, 0, NULL);
    size_t len = 0;
    unsigned char *bytes = kt_read_file(long_path, &len);
    kt_check(made && st == KD_ERR_IO && contains(kd_last_error(), long_path) && bytes &&
                 len == 3 && memcmp(bytes, "old", 3) == 0 && no_temp_files(tmp_dir),
             "save: failed temp file keeps the old content", "%s", kd_last_error());
    free(bytes);
    unlink(long_path);

    char dir_target[256];
    tmp_path("a_directory", dir_target, sizeof dir_target);
    mkdir(dir_target, 0755);
    st = kd_safetensors_save(dir_target, 1, names, &new_t, 0, NULL);
    kt_check(st == KD_ERR_IO && contains(kd_last_error(), dir_target) &&
                 no_temp_files(tmp_dir),
             "save: rename failure removes the temp file", "%s", kd_last_error());
    rmdir(dir_target);

    char missing[256];
    tmp_path("no/such/dir/x.safetensors", missing, sizeof missing);
    st = kd_safetensors_save(missing, 1, names, &new_t, 0, NULL);
    kt_check(st == KD_ERR_IO && contains(kd_last_error(), missing) &&
                 contains(kd_last_error(), "No such file"),
             "save: missing directory", "%s: %s", kd_status_name(st), kd_last_error());

    kd_tensor *null_t = NULL;
    const char *reserved[] = {"__metadata__"}, *bad_utf8[] = {"\xff"};
    kt_check(kd_safetensors_save(path, 1, names, &null_t, 0, NULL) == KD_ERR_INVALID &&
                 kd_safetensors_save(path, 1, reserved, &new_t, 0, NULL) == KD_ERR_INVALID &&
                 kd_safetensors_save(path, 1, bad_utf8, &new_t, 0, NULL) == KD_ERR_INVALID &&
                 kd_safetensors_save(path, -1, NULL, NULL, 0, NULL) == KD_ERR_INVALID &&
                 kd_safetensors_save(NULL, 0, NULL, NULL, 0, NULL) == KD_ERR_INVALID &&
                 file_has_content(path, "w", 2.0) && no_temp_files(tmp_dir),
             "save: bad arguments refused", "%s", kd_last_error());

    /* A relative path syncs the current directory. */
    char cwd[512];
    if (getcwd(cwd, sizeof cwd) && chdir(tmp_dir) == 0) {
        st = kd_safetensors_save("relative.safetensors", 1, names, &new_t, 0, NULL);
        kt_check(st == KD_OK && file_has_content("relative.safetensors", "w", 2.0),
                 "save: relative path", "%s", kd_last_error());
        unlink("relative.safetensors");
        if (chdir(cwd) != 0)
            kt_fail("save: relative path", "cannot return to %s", cwd);
    }
    kd_scope_end();
}

static void remove_tmp_dir(void)
{
    DIR *dir = opendir(tmp_dir);
    if (!dir)
        return;
    struct dirent *de;
    while ((de = readdir(dir))) {
        char path[600];
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", tmp_dir, de->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(tmp_dir);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        kt_fail("setup", "mkdtemp: %s", strerror(errno));
        return kt_finish();
    }
    test_round_trip_dtypes();
    test_load_conversions();
    test_foreign_dtypes();
    test_layout();
    test_python_files();
    test_header_rules();
    test_entry_rules();
    test_open_errors();
    test_corpus();
    test_atomic_save();
    remove_tmp_dir();
    return kt_finish();
}
