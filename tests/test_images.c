/* The images plugin: image folders, list files and CIFAR through the real
 * registry, and its parts directly, against PIL, torchvision 0.14 and numpy
 * (tests/parity/pil_images.py writes the fixtures and references in one
 * process):
 *  - decoding: every photo (JPEG, PNG, gray, RGBA, palette, 16-bit, LA,
 *    EXIF-rotated) equals PIL's convert("RGB") and convert("L") exactly,
 *    CMYK within 1 level; the Fashion-MNIST folder's classes, order and
 *    pixels equal torchvision's ImageFolder;
 *  - geometry: center_crop exact; RandomResizedCrop's windows from torch's
 *    own draws exact (tries and fallback), its sampler's statistics against
 *    torchvision's; resize within 1 level of torch's antialias=False path,
 *    and its distance from PIL's measured and bounded;
 *  - CIFAR-10/100 bit-exact against numpy;
 *  - errors: empty folders, unsupported files, bad list lines, bad CIFAR
 *    files, the skip and error policies; the broken-file corpus;
 *  - kdengine forward on image files: equal to forward on the tensor the
 *    same pipeline makes (a model's default, a job's data.val), batches,
 *    class names, broken images named. */
#include "config.h"

#include "harness.h"
#include "plugin_fixture.h"

#include "../plugins/data/images/color.h"
#include "../plugins/data/images/geometry.h"
#include "../plugins/data/images/image_decode.h"
#include "../plugins/data/images/image_header.h"
#include "../plugins/data/images/opencv_shim.h"

#include <jansson.h>
#include <kdengine/safetensors.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char tmp_dir[] = "/tmp/kdimages.XXXXXX";
static json_t *expect;

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static const char *in_tmp(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

/* A raw reference file of exactly `bytes` bytes (malloc'd), or NULL. */
static unsigned char *reference(const char *name, size_t bytes)
{
    char path[512];
    size_t len = 0;
    unsigned char *data = kt_read_file(in_tmp(name, path, sizeof path), &len);
    if (data && len != bytes) {
        fprintf(stderr, "%s: %zu bytes, expected %zu\n", path, len, bytes);
        free(data);
        return NULL;
    }
    return data;
}

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n, double *mean)
{
    int worst = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        worst = d > worst ? d : worst;
        sum += d;
    }
    if (mean)
        *mean = n ? sum / (double)n : 0;
    return worst;
}

/* ------------------------------------------------------------ providers */

typedef struct instance {
    const kd_vtable_header *vt;
    void *self;
} instance;

static kd_status make(kd_plugin_kind kind, const char *name, const char *json, instance *out)
{
    out->self = NULL;
    const kd_registry_entry *e = kt_provider(kind, name, &out->vt);
    if (!e)
        return kd_error(KD_ERR_INVALID, "%s is not in the plugin dir", name);
    kd_params *p = kt_params(e, json);
    if (!p)
        return kd_error(KD_ERR_INVALID, "%s: bad params %s", name, json);
    kd_create_args args = kt_create_args(e, p, 1);
    kd_status st = kind == KD_KIND_DATASET
                       ? ((const kd_dataset_vtable *)out->vt)->create(&args, &out->self)
                       : ((const kd_transform_vtable *)out->vt)->create(&args, &out->self);
    kd_params_free(p);
    return st;
}

static const kd_dataset_vtable *dvt(instance i) { return (const kd_dataset_vtable *)i.vt; }
static const kd_transform_vtable *tvt(instance i) { return (const kd_transform_vtable *)i.vt; }

static void drop(instance i, kd_plugin_kind kind)
{
    if (!i.self)
        return;
    if (kind == KD_KIND_DATASET)
        dvt(i)->destroy(i.self);
    else
        tvt(i)->destroy(i.self);
}

/* ------------------------------------------------------------- decoding */

static kd_status decode_file(const char *path, int channels, kd_sample *s)
{
    unsigned char *bytes;
    size_t len;
    kd_status st = kd_img_read_file(path, &bytes, &len);
    if (st != KD_OK)
        return st;
    st = kd_img_decode(bytes, len, path, channels, INT64_C(1) << 28, s);
    free(bytes);
    return st;
}

static void test_decode_matches_pil(void)
{
    json_t *list = json_object_get(expect, "decode");
    size_t k;
    json_t *e;
    json_array_foreach(list, k, e)
    {
        const char *file = json_string_value(json_object_get(e, "file"));
        int h = (int)json_integer_value(json_object_get(e, "height"));
        int w = (int)json_integer_value(json_object_get(e, "width"));
        /* Pillow and OpenCV turn CMYK into RGB with different rounding */
        int allowed = contains(file, "cmyk") ? 1 : 0;
        for (int channels = 1; channels <= 3; channels += 2) {
            char path[512], name[256];
            kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
            kd_status st = decode_file(in_tmp(file, path, sizeof path), channels, &s);
            const char *ref_name =
                json_string_value(json_object_get(e, channels == 3 ? "rgb" : "gray"));
            unsigned char *ref = reference(ref_name, (size_t)h * (size_t)w * (size_t)channels);
            snprintf(name, sizeof name, "decode: %s to %s (PIL mode %s) %s", file,
                     channels == 3 ? "RGB" : "L",
                     json_string_value(json_object_get(e, "mode")),
                     allowed ? "within 1 level" : "exactly as PIL");
            if (st != KD_OK || !ref) {
                kt_fail(name, "%s", st ? kd_last_error() : "no reference");
            } else if (s.height != h || s.width != w || s.channels != channels) {
                kt_fail(name, "%dx%dx%d, PIL %dx%dx%d", s.height, s.width, s.channels, h, w,
                        channels);
            } else {
                double mean;
                int worst = max_abs_diff(s.data, ref, (size_t)h * (size_t)w * (size_t)channels,
                                         &mean);
                kt_check(worst <= allowed, name, "max difference %d, mean %.4f", worst, mean);
                if (allowed)
                    printf("     %s: max %d, mean %.4f levels from Pillow\n", file, worst, mean);
            }
            free(ref);
            free(s.data);
        }
    }
}

/* ------------------------------------------------------ folder and list */

static void check_samples(instance d, json_t *samples, int stride, const char *what)
{
    char name[256];
    kd_dataset_info info;
    dvt(d)->info(d.self, &info);
    size_t n = json_array_size(samples);
    size_t expected = (n + (size_t)stride - 1) / (size_t)stride;
    snprintf(name, sizeof name, "%s: %zu samples, sizes unknown (0) until decoded", what,
             expected);
    kt_check(info.length == (int64_t)expected && info.height == 0 && info.width == 0 &&
                 info.channels == 3,
             name, "length %lld, %dx%dx%d", (long long)info.length, info.height, info.width,
             info.channels);
    int bad = 0;
    kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
    for (size_t i = 0, k = 0; i < n && (int64_t)k < info.length; i += (size_t)stride, k++) {
        json_t *e = json_array_get(samples, i);
        int h = (int)json_integer_value(json_object_get(e, "height"));
        int w = (int)json_integer_value(json_object_get(e, "width"));
        int64_t label = -1;
        kd_status st = dvt(d)->get(d.self, (int64_t)k, &s, &label);
        unsigned char *ref =
            reference(json_string_value(json_object_get(e, "rgb")), (size_t)h * (size_t)w * 3);
        if (st != KD_OK || !ref || label != json_integer_value(json_object_get(e, "label")) ||
            s.height != h || s.width != w ||
            max_abs_diff(s.data, ref, (size_t)h * (size_t)w * 3, NULL) != 0) {
            if (bad++ < 3)
                fprintf(stderr, "%s: sample %zu (%s) differs: %s\n", what, k,
                        json_string_value(json_object_get(e, "path")),
                        st ? kd_last_error() : "pixels, size or label");
        }
        free(ref);
    }
    free(s.data);
    snprintf(name, sizeof name, "%s: every sample's label and pixels equal torchvision's", what);
    kt_check(bad == 0, name, "%d differ", bad);
}

static void test_image_folder(void)
{
    json_t *folder = json_object_get(expect, "folder");
    char root[512], json[1024], name[256];
    in_tmp(json_string_value(json_object_get(folder, "root")), root, sizeof root);
    snprintf(json, sizeof json, "{\"root\": \"%s\"}", root);
    instance d;
    kd_status st = make(KD_KIND_DATASET, "image_folder", json, &d);
    if (!kt_check(st == KD_OK, "image_folder: opens the Fashion-MNIST folder", "%s",
                  kd_last_error()))
        return;
    json_t *classes = json_object_get(folder, "classes");
    kd_dataset_info info;
    dvt(d)->info(d.self, &info);
    bool same = info.num_classes == (int)json_array_size(classes);
    for (int c = 0; same && c < info.num_classes; c++)
        same = strcmp(dvt(d)->class_name(d.self, c),
                      json_string_value(json_array_get(classes, (size_t)c))) == 0;
    snprintf(name, sizeof name, "image_folder: %zu classes named and ordered as torchvision's",
             json_array_size(classes));
    kt_check(same, name, "%d classes", info.num_classes);
    check_samples(d, json_object_get(folder, "samples"), 1, "image_folder");
    json_t *samples = json_object_get(folder, "samples");
    int64_t *labels = malloc((size_t)info.length * sizeof *labels);
    bool ok = labels && dvt(d)->labels(d.self, labels) == KD_OK;
    for (int64_t i = 0; ok && i < info.length; i++)
        ok = labels[i] == json_integer_value(
                              json_object_get(json_array_get(samples, (size_t)i), "label"));
    kt_check(ok, "image_folder: labels() without decoding equals get()'s", "differs");
    free(labels);
    kt_check(dvt(d)->skipped(d.self) == 0, "image_folder: nothing skipped on good files", "%lld",
             (long long)dvt(d)->skipped(d.self));
    drop(d, KD_KIND_DATASET);

    snprintf(json, sizeof json,
             "{\"list\": \"%s/list.txt\", \"root\": \"%s\", \"num_classes\": 10}", tmp_dir, root);
    st = make(KD_KIND_DATASET, "image_list", json, &d);
    if (kt_check(st == KD_OK, "image_list: opens a list file with a blank last line", "%s",
                 kd_last_error())) {
        check_samples(d, samples, 2, "image_list");
        kt_check(strcmp(dvt(d)->class_name(d.self, 7), "7") == 0,
                 "image_list: class names default to the labels' numbers", "%s",
                 dvt(d)->class_name(d.self, 7));
    }
    drop(d, KD_KIND_DATASET);
}

static void write_text(const char *path, const char *text)
{
    if (!kt_write_file(path, text, strlen(text)))
        fprintf(stderr, "cannot write %s\n", path);
}

/* create() of provider with json must fail, naming every needle. */
static void expect_refused(const char *provider, const char *json, const char *case_name,
                           const char *needle1, const char *needle2)
{
    instance d;
    kd_status st = make(KD_KIND_DATASET, provider, json, &d);
    const char *msg = st != KD_OK ? kd_last_error() : "";
    kt_check(st != KD_OK && contains(msg, needle1) && contains(msg, needle2), case_name,
             "status %d: %s", (int)st, msg);
    drop(d, KD_KIND_DATASET);
}

static void test_refusals(void)
{
    char dir[512], json[2048], path[600], p2[700];
    in_tmp("bad", dir, sizeof dir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/empty_root", dir);
    mkdir(path, 0755);
    snprintf(json, sizeof json, "{\"root\": \"%s\"}", path);
    expect_refused("image_folder", json, "image_folder: a root without class folders is refused",
                   path, "no class folders");
    snprintf(json, sizeof json, "{\"root\": \"%s/missing\"}", dir);
    expect_refused("image_folder", json, "image_folder: a missing root is refused", "missing",
                   "cannot list");

    snprintf(path, sizeof path, "%s/one_empty", dir);
    mkdir(path, 0755);
    snprintf(p2, sizeof p2, "%s/a", path);
    mkdir(p2, 0755);
    snprintf(p2, sizeof p2, "%s/a/x.png", path);
    char photo[512];
    size_t len;
    unsigned char *png = kt_read_file(in_tmp("photos/coffee.png", photo, sizeof photo), &len);
    kt_write_file(p2, png, len);
    snprintf(p2, sizeof p2, "%s/b", path);
    mkdir(p2, 0755);
    snprintf(p2, sizeof p2, "%s/b/readme.txt", path);
    write_text(p2, "no images here\n");
    snprintf(json, sizeof json, "{\"root\": \"%s\"}", path);
    expect_refused("image_folder", json, "image_folder: an empty class folder is refused by name",
                   "one_empty/b", "holds no .jpg");
    snprintf(p2, sizeof p2, "%s/b/scan.webp", path);
    write_text(p2, "RIFF");
    expect_refused("image_folder", json, "image_folder: a .webp torchvision would read is refused",
                   "scan.webp", "only JPEG and PNG");

    snprintf(path, sizeof path, "%s/labels.txt", dir);
    write_text(path, "a/x.png 1\nb/y.png 12\n");
    snprintf(json, sizeof json, "{\"list\": \"%s\", \"num_classes\": 10}", path);
    expect_refused("image_list", json, "image_list: a label out of range names file and line",
                   "labels.txt:2", "outside 0..9");
    write_text(path, "a/x.png 1\nb/y.png\n");
    expect_refused("image_list", json, "image_list: a line without a label names file and line",
                   "labels.txt:2", "expected 'path label'");
    write_text(path, "a/x.png one\n");
    expect_refused("image_list", json, "image_list: a label that is not a number is refused",
                   "labels.txt:1", "not an integer");
    write_text(path, "\n\n");
    expect_refused("image_list", json, "image_list: a list with no samples is refused",
                   "labels.txt", "no samples");
    snprintf(json, sizeof json, "{\"root\": \"%s\", \"channels\": 2}", in_tmp("fmnist", p2, sizeof p2));
    expect_refused("image_folder", json, "image_folder: channels 2 is refused", "channels 2",
                   "1 (gray) or 3");

    snprintf(path, sizeof path, "%s/short.bin", dir);
    write_text(path, "0123456789");
    snprintf(json, sizeof json, "{\"files\": [\"%s\"]}", path);
    expect_refused("cifar", json, "cifar: a file that is not whole records is refused",
                   "short.bin", "not a whole number of cifar10 records");
    unsigned char rec[3073] = {10};
    kt_write_file(path, rec, sizeof rec);
    expect_refused("cifar", json, "cifar: a CIFAR-10 label of 10 is refused", "record 0",
                   "0..9");
    snprintf(json, sizeof json, "{\"files\": [\"%s\"], \"labels\": \"coarse\"}", path);
    expect_refused("cifar", json, "cifar: coarse labels on CIFAR-10 are refused", "coarse",
                   "CIFAR-10");
    free(png);
}

/* A folder of two classes with a corrupt file: skip counts and replaces,
 * error stops with the path. */
static void test_unreadable_policy(void)
{
    char root[512], path[700], json[1024], photo[512];
    in_tmp("policy", root, sizeof root);
    const char *files[] = {"a/1.png", "a/2_broken.jpg", "b/3.png"};
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/a", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/b", root);
    mkdir(path, 0755);
    size_t len;
    unsigned char *png = kt_read_file(in_tmp("photos/camera_gray.png", photo, sizeof photo), &len);
    unsigned char *jpg_bytes;
    size_t jpg_len;
    jpg_bytes = kt_read_file(in_tmp("photos/chelsea.jpg", photo, sizeof photo), &jpg_len);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        if (i == 1)
            kt_write_file(path, jpg_bytes, jpg_len / 3); /* truncated JPEG */
        else
            kt_write_file(path, png, len);
    }
    free(png);
    free(jpg_bytes);
    for (int policy = 0; policy < 2; policy++) {
        snprintf(json, sizeof json, "{\"root\": \"%s\", \"on_error\": \"%s\"}", root,
                 policy ? "error" : "skip");
        instance d;
        if (!kt_check(make(KD_KIND_DATASET, "image_folder", json, &d) == KD_OK,
                      policy ? "policy error: the folder opens" : "policy skip: the folder opens",
                      "%s", kd_last_error()))
            return;
        kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
        int64_t label = -1;
        kd_status st = dvt(d)->get(d.self, 1, &s, &label);
        if (policy == 0)
            kt_check(st == KD_OK && label == 1 && s.height == 512 &&
                         dvt(d)->skipped(d.self) == 1,
                     "policy skip: a truncated JPEG is replaced by the next sample and counted",
                     "status %d, label %lld, skipped %lld: %s", (int)st, (long long)label,
                     (long long)dvt(d)->skipped(d.self), st ? kd_last_error() : "");
        else
            kt_check(st == KD_ERR_FORMAT && contains(kd_last_error(), "2_broken.jpg") &&
                         contains(kd_last_error(), "sample 1"),
                     "policy error: a truncated JPEG stops with its path and index",
                     "status %d: %s", (int)st, kd_last_error());
        free(s.data);
        drop(d, KD_KIND_DATASET);
    }
}

/* --------------------------------------------------------------- CIFAR */

static void test_cifar(void)
{
    size_t k;
    json_t *e;
    json_array_foreach(json_object_get(expect, "cifar"), k, e)
    {
        const char *variant = json_string_value(json_object_get(e, "variant"));
        int count = (int)json_integer_value(json_object_get(e, "count"));
        json_t *labels = json_object_get(e, "labels");
        unsigned char *ref = reference(json_string_value(json_object_get(e, "pixels")),
                                       (size_t)count * 3072);
        int views = strcmp(variant, "cifar100") == 0 ? 2 : 1;
        for (int v = 0; v < views; v++) {
            const char *kind = views == 1 ? "fine" : v == 0 ? "coarse" : "fine";
            char json[1800], path[512], names[512], name[256];
            /* names "c0".."cN" with blank lines after, as batches.meta.txt */
            int classes = views == 1 ? 10 : v == 0 ? 20 : 100;
            char text[1024];
            int used = 0;
            for (int c = 0; c < classes; c++)
                used += snprintf(text + used, sizeof text - (size_t)used, "c%d\n", c);
            snprintf(text + used, sizeof text - (size_t)used, "\n\n");
            kt_write_file(in_tmp("names.txt", names, sizeof names), text, strlen(text));
            snprintf(json, sizeof json,
                     "{\"files\": [\"%s\", \"%s\"], \"variant\": \"%s\", \"labels\": \"%s\", "
                     "\"class_names\": \"%s\"}",
                     in_tmp(json_string_value(json_object_get(e, "file")), path, sizeof path),
                     path, variant, kind, names);
            instance d;
            snprintf(name, sizeof name,
                     "cifar: %s %s labels, names and HWC pixels equal numpy's (file given twice)",
                     variant, kind);
            if (make(KD_KIND_DATASET, "cifar", json, &d) != KD_OK || !ref) {
                kt_fail(name, "%s", ref ? kd_last_error() : "no reference");
                continue;
            }
            kd_dataset_info info;
            dvt(d)->info(d.self, &info);
            char last[16];
            snprintf(last, sizeof last, "c%d", classes - 1);
            bool ok = info.length == 2 * count && info.num_classes == classes &&
                      info.height == 32 && info.width == 32 && info.channels == 3 &&
                      strcmp(dvt(d)->class_name(d.self, classes - 1), last) == 0;
            kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
            json_t *row = json_array_get(labels, (size_t)v);
            for (int i = 0; ok && i < 2 * count; i++) {
                int64_t label;
                ok = dvt(d)->get(d.self, i, &s, &label) == KD_OK &&
                     label == json_integer_value(json_array_get(row, (size_t)(i % count))) &&
                     memcmp(s.data, ref + (size_t)(i % count) * 3072, 3072) == 0;
            }
            kt_check(ok, name, "length %lld, classes %d", (long long)info.length,
                     info.num_classes);
            free(s.data);
            drop(d, KD_KIND_DATASET);
        }
        free(ref);
    }
}

/* ------------------------------------------------------------ geometry */

static kd_sample decoded_source(void)
{
    char path[512];
    kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
    json_t *g = json_object_get(expect, "geometry_source");
    if (decode_file(in_tmp(json_string_value(json_object_get(g, "file")), path, sizeof path), 3,
                    &s) != KD_OK)
        fprintf(stderr, "geometry source: %s\n", kd_last_error());
    return s;
}

static void sizes_json(json_t *size, char *buf, size_t n)
{
    if (json_array_size(size) == 1)
        snprintf(buf, n, "[%lld]", (long long)json_integer_value(json_array_get(size, 0)));
    else
        snprintf(buf, n, "[%lld, %lld]", (long long)json_integer_value(json_array_get(size, 0)),
                 (long long)json_integer_value(json_array_get(size, 1)));
}

static void test_center_crop(const kd_sample *src)
{
    size_t k;
    json_t *e;
    json_array_foreach(json_object_get(expect, "center_crop"), k, e)
    {
        char size[64], json[128], name[256];
        json_t *sz = json_object_get(e, "size");
        sizes_json(sz, size, sizeof size);
        snprintf(json, sizeof json, "{\"size\": %s}", size);
        int h = (int)json_integer_value(json_array_get(sz, 0));
        int w = (int)json_integer_value(json_array_get(sz, 1));
        snprintf(name, sizeof name, "center_crop %s of %dx%d equals torchvision's exactly", size,
                 src->height, src->width);
        instance t;
        kd_sample out = {0, 0, 0, KD_U8, NULL, 0};
        unsigned char *ref = reference(json_string_value(json_object_get(e, "out")),
                                       (size_t)h * (size_t)w * 3);
        kd_status st = make(KD_KIND_TRANSFORM, "center_crop", json, &t);
        if (st == KD_OK)
            st = tvt(t)->apply(t.self, src, &out, NULL);
        if (st != KD_OK || !ref)
            kt_fail(name, "%s", kd_last_error());
        else
            kt_check(out.height == h && out.width == w &&
                         memcmp(out.data, ref, (size_t)h * (size_t)w * 3) == 0,
                     name, "%dx%d, max difference %d", out.height, out.width,
                     out.height == h && out.width == w
                         ? max_abs_diff(out.data, ref, (size_t)h * (size_t)w * 3, NULL)
                         : -1);
        free(ref);
        free(out.data);
        drop(t, KD_KIND_TRANSFORM);
    }
}

/* Resize against torch's antialias=False path (the same sampling as
 * OpenCV's; OpenCV's fixed-point weights round differently: within 1
 * level for bilinear, 2 for bicubic, whose negative lobes add the
 * roundings of 4 taps per axis), and against PIL (measured and bounded:
 * the antialiasing filter differs most when shrinking). */
static void test_resize(const kd_sample *src)
{
    size_t k;
    json_t *e;
    json_array_foreach(json_object_get(expect, "resize"), k, e)
    {
        char size[64], json[256], name[256];
        const char *interp = json_string_value(json_object_get(e, "interpolation"));
        sizes_json(json_object_get(e, "size"), size, sizeof size);
        snprintf(json, sizeof json, "{\"size\": %s, \"interpolation\": \"%s\"}", size, interp);
        int h = (int)json_integer_value(json_object_get(e, "height"));
        int w = (int)json_integer_value(json_object_get(e, "width"));
        size_t n = (size_t)h * (size_t)w * 3;
        instance t;
        kd_sample out = {0, 0, 0, KD_U8, NULL, 0};
        kd_status st = make(KD_KIND_TRANSFORM, "resize", json, &t);
        if (st == KD_OK)
            st = tvt(t)->apply(t.self, src, &out, NULL);
        unsigned char *pil = reference(json_string_value(json_object_get(e, "pil")), n);
        unsigned char *ten = reference(json_string_value(json_object_get(e, "tensor")), n);
        snprintf(name, sizeof name, "resize %s %s: torchvision's output size %dx%d", size, interp,
                 h, w);
        if (kt_check(st == KD_OK && pil && ten && out.height == h && out.width == w, name,
                     "%dx%d: %s", out.height, out.width, st ? kd_last_error() : "")) {
            double mean_t, mean_p;
            int max_t = max_abs_diff(out.data, ten, n, &mean_t);
            int max_p = max_abs_diff(out.data, pil, n, &mean_p);
            bool cubic = strcmp(interp, "bicubic") == 0;
            bool shrinks = h < src->height;
            snprintf(name, sizeof name,
                     "resize %s %s: within %d of torch antialias=False (max %d, mean %.3f)",
                     size, interp, cubic ? 2 : 1, max_t, mean_t);
            kt_check(max_t <= (cubic ? 2 : 1), name, "max %d", max_t);
            /* measured on this data: PIL's mean distance is below 0.6
             * level growing, and a few levels shrinking 3x (its filter
             * then averages 6+ pixels per axis where OpenCV reads 2) */
            double bound = shrinks ? 4.0 : 1.0;
            snprintf(name, sizeof name,
                     "resize %s %s: PIL's antialiased resize, mean %.3f (< %.1f), max %d",
                     size, interp, mean_p, bound, max_p);
            kt_check(mean_p < bound, name, "mean %.3f", mean_p);
        }
        free(pil);
        free(ten);
        free(out.data);
        drop(t, KD_KIND_TRANSFORM);
    }
}

static double number_at(json_t *a, size_t i) { return json_number_value(json_array_get(a, i)); }

/* torchvision's get_params under a seed, against the C geometry fed the
 * float32 draws torch made for each try. */
static void test_rrc_exact(void)
{
    size_t k, tried = 0, fallbacks = 0, bad = 0;
    json_t *e;
    json_array_foreach(json_object_get(expect, "rrc_exact"), k, e)
    {
        int height = (int)json_integer_value(json_object_get(e, "height"));
        int width = (int)json_integer_value(json_object_get(e, "width"));
        json_t *scale = json_object_get(e, "scale"), *ratio = json_object_get(e, "ratio");
        kd_rrc_config cfg = {{number_at(scale, 0), number_at(scale, 1)},
                             {number_at(ratio, 0), number_at(ratio, 1)}};
        json_t *draws = json_object_get(e, "draws"), *window = json_object_get(e, "window");
        int want[4];
        for (int i = 0; i < 4; i++)
            want[i] = (int)json_integer_value(json_array_get(window, (size_t)i));
        kd_geo_window got = {-1, -1, -1, -1};
        bool accepted = false;
        for (size_t t = 0; t < 10 && !accepted; t++) {
            json_t *d = json_array_get(draws, t);
            int h, w;
            if (kd_rrc_try(height, width, (float)number_at(d, 0), (float)number_at(d, 1), &h,
                           &w)) {
                accepted = true;
                /* top and left are torch.randint's: taken from torchvision */
                got = (kd_geo_window){want[0], want[1], h, w};
            }
        }
        if (!accepted) {
            got = kd_rrc_fallback(height, width, &cfg);
            fallbacks++;
        }
        tried++;
        if (got.top != want[0] || got.left != want[1] || got.height != want[2] ||
            got.width != want[3]) {
            if (bad++ < 3)
                fprintf(stderr, "rrc %dx%d: torchvision (%d, %d, %d, %d), here (%d, %d, %d, %d)\n",
                        height, width, want[0], want[1], want[2], want[3], got.top, got.left,
                        got.height, got.width);
        }
    }
    char name[256];
    snprintf(name, sizeof name,
             "random_resized_crop: %zu windows (%zu fallbacks) from torch's draws equal "
             "torchvision's",
             tried, fallbacks);
    kt_check(bad == 0 && tried > 0 && fallbacks > 0, name, "%zu differ", bad);
}

/* kd_rrc_draw's statistics against torchvision's over 20000 windows of a
 * 375x500 image: each mean within 5 standard errors of the difference. */
static void test_rrc_distribution(void)
{
    json_t *stats = json_object_get(expect, "rrc_stats");
    int n = (int)json_integer_value(json_object_get(stats, "n"));
    kd_rrc_config cfg = {{0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0}};
    double sum[5] = {0}, sq[5] = {0};
    for (int i = 0; i < n; i++) {
        kd_rng rng = kd_rng_make(99, 0x52524331ull, (uint64_t)i);
        kd_geo_window w = kd_rrc_draw(&rng, 375, 500, &cfg);
        double v[5] = {(double)w.height * w.width / (375.0 * 500.0),
                       log((double)w.width / w.height), (w.top + w.height / 2.0) / 375.0,
                       w.height, w.width};
        for (int k = 0; k < 5; k++) {
            sum[k] += v[k];
            sq[k] += v[k] * v[k];
        }
    }
    const char *names[5] = {"area", "log_aspect", "centre_y", "height", "width"};
    for (int k = 0; k < 5; k++) {
        json_t *ref = json_object_get(stats, names[k]);
        double mean = sum[k] / n, sd = sqrt(fmax(sq[k] / n - mean * mean, 0));
        double ref_mean = number_at(ref, 0), ref_sd = number_at(ref, 1);
        double se = sqrt((sd * sd + ref_sd * ref_sd) / n);
        char name[256];
        snprintf(name, sizeof name,
                 "random_resized_crop: mean %s %.4f vs torchvision %.4f (5 SE = %.4f), sd %.4f "
                 "vs %.4f",
                 names[k], mean, ref_mean, 5 * se, sd, ref_sd);
        kt_check(fabs(mean - ref_mean) < 5 * se && fabs(sd - ref_sd) < 0.05 * ref_sd, name,
                 "differs");
    }
}

/* The provider's pixels for a given window: OpenCV's bilinear resize of
 * the ROI against torch's resized_crop without antialiasing. */
static void test_resized_crop_pixels(const kd_sample *src)
{
    size_t k;
    json_t *e;
    json_array_foreach(json_object_get(expect, "resized_crop"), k, e)
    {
        json_t *win = json_object_get(e, "window"), *size = json_object_get(e, "size");
        int top = (int)json_integer_value(json_array_get(win, 0));
        int left = (int)json_integer_value(json_array_get(win, 1));
        int h = (int)json_integer_value(json_array_get(win, 2));
        int w = (int)json_integer_value(json_array_get(win, 3));
        int oh = (int)json_integer_value(json_array_get(size, 0));
        int ow = (int)json_integer_value(json_array_get(size, 1));
        size_t n = (size_t)oh * (size_t)ow * 3;
        uint8_t *out = malloc(n);
        unsigned char *ten = reference(json_string_value(json_object_get(e, "tensor")), n);
        char msg[256], name[256];
        size_t row = (size_t)src->width * 3;
        bool ok = out && ten &&
                  kd_cv_resize((const uint8_t *)src->data + (size_t)top * row + (size_t)left * 3,
                               h, w, 3, row, out, oh, ow, KD_CV_BILINEAR, msg, sizeof msg);
        double mean = 0;
        int worst = ok ? max_abs_diff(out, ten, n, &mean) : -1;
        snprintf(name, sizeof name,
                 "resized_crop (%d, %d, %d, %d) to %dx%d: within 1 of torch antialias=False "
                 "(max %d, mean %.3f)",
                 top, left, h, w, oh, ow, worst, mean);
        kt_check(ok && worst <= 1, name, "max %d", worst);
        free(out);
        free(ten);
    }
}

static void test_rrc_provider(const kd_sample *src)
{
    instance t;
    kd_status st = make(KD_KIND_TRANSFORM, "random_resized_crop", "{\"size\": [224]}", &t);
    if (!kt_check(st == KD_OK, "random_resized_crop: default params", "%s", kd_last_error()))
        return;
    kd_sample a = {0, 0, 0, KD_U8, NULL, 0}, b = {0, 0, 0, KD_U8, NULL, 0};
    bool same = true, differs = false;
    for (int i = 0; i < 20 && st == KD_OK; i++) {
        kd_rng r1 = kd_rng_make(5, 1, (uint64_t)i), r2 = kd_rng_make(5, 1, (uint64_t)i);
        kd_rng r3 = kd_rng_make(5, 1, (uint64_t)i + 100);
        st = tvt(t)->apply(t.self, src, &a, &r1);
        if (st == KD_OK)
            st = tvt(t)->apply(t.self, src, &b, &r2);
        same = same && st == KD_OK && memcmp(a.data, b.data, 224 * 224 * 3) == 0;
        if (st == KD_OK)
            st = tvt(t)->apply(t.self, src, &b, &r3);
        differs = differs || memcmp(a.data, b.data, 224 * 224 * 3) != 0;
    }
    kt_check(st == KD_OK && same && differs && a.height == 224 && a.width == 224,
             "random_resized_crop: 224x224, replayed exactly from the same key, differs across "
             "keys",
             "%s", st ? kd_last_error() : "");
    free(a.data);
    free(b.data);
    drop(t, KD_KIND_TRANSFORM);
}

/* ----------------------------------------------------------- ColorJitter */

static void (*const adjusters[4])(uint8_t *, size_t, int, float) = {
    kd_color_brightness, kd_color_contrast, kd_color_saturation, kd_color_hue};
static const char *const adjuster_names[4] = {"brightness", "contrast", "saturation", "hue"};

/* Each adjustment on an RGB photo and a gray one equals torchvision's
 * F.adjust_* on the PIL image exactly, at factors inside and outside
 * [0, 1] and hue shifts of both signs. */
static void test_color(const kd_sample *rgb)
{
    char path[512];
    kd_sample gray = {0, 0, 0, KD_U8, NULL, 0};
    if (decode_file(in_tmp("photos/camera_gray.png", path, sizeof path), 1, &gray) != KD_OK) {
        kt_fail("color: the gray photo decodes", "%s", kd_last_error());
        return;
    }
    size_t k;
    json_t *e;
    json_array_foreach(json_object_get(expect, "color"), k, e)
    {
        const char *op = json_string_value(json_object_get(e, "op"));
        bool is_rgb = strcmp(json_string_value(json_object_get(e, "source")), "chelsea") == 0;
        const kd_sample *src = is_rgb ? rgb : &gray;
        float factor = (float)json_number_value(json_object_get(e, "factor"));
        size_t pixels = (size_t)src->height * (size_t)src->width;
        size_t n = pixels * (size_t)src->channels;
        int which = 0;
        while (which < 4 && strcmp(adjuster_names[which], op) != 0)
            which++;
        uint8_t *px = malloc(n);
        unsigned char *ref = reference(json_string_value(json_object_get(e, "out")), n);
        char name[256];
        snprintf(name, sizeof name, "color: %s %g on the %s photo equals torchvision's (PIL)",
                 op, (double)factor, is_rgb ? "RGB" : "gray");
        if (!px || !ref || which == 4) {
            kt_fail(name, "no reference or buffer");
        } else {
            memcpy(px, src->data, n);
            adjusters[which](px, pixels, src->channels, factor);
            double mean;
            int worst = max_abs_diff(px, ref, n, &mean);
            kt_check(worst == 0, name, "max difference %d, mean %.5f", worst, mean);
        }
        free(px);
        free(ref);
    }
    free(gray.data);
}

/* ColorJitter(0.4, 0.4, 0.4, 0.1) with the order and factors torchvision
 * drew: the composition equals torchvision's output. */
static void test_jitter(const kd_sample *rgb)
{
    size_t k, bad = 0, count = 0;
    json_t *e;
    size_t pixels = (size_t)rgb->height * (size_t)rgb->width, n = pixels * 3;
    json_array_foreach(json_object_get(expect, "jitter"), k, e)
    {
        kd_jitter_draw d;
        json_t *order = json_object_get(e, "order"), *factors = json_object_get(e, "factors");
        for (int i = 0; i < 4; i++) {
            d.order[i] = (int)json_integer_value(json_array_get(order, (size_t)i));
            d.factor[i] = (float)json_number_value(json_array_get(factors, (size_t)i));
            d.enabled[i] = true;
        }
        uint8_t *px = malloc(n);
        unsigned char *ref = reference(json_string_value(json_object_get(e, "out")), n);
        if (px && ref) {
            memcpy(px, rgb->data, n);
            kd_jitter_apply(px, pixels, 3, &d);
            bad += max_abs_diff(px, ref, n, NULL) != 0;
        } else {
            bad++;
        }
        count++;
        free(px);
        free(ref);
    }
    char name[256];
    snprintf(name, sizeof name,
             "color_jitter: %zu ColorJitter(0.4, 0.4, 0.4, 0.1) draws of torchvision replayed "
             "exactly", count);
    kt_check(count > 0 && bad == 0, name, "%zu differ", bad);

    instance t;
    kd_status st = make(KD_KIND_TRANSFORM, "color_jitter",
                        "{\"brightness\": 0.4, \"contrast\": 0.4, \"saturation\": 0.4, "
                        "\"hue\": 0.1}",
                        &t);
    kd_sample a = {0, 0, 0, KD_U8, NULL, 0}, b = {0, 0, 0, KD_U8, NULL, 0};
    kd_rng r1 = kd_rng_make(3, 4, 5), r2 = kd_rng_make(3, 4, 5), r3 = kd_rng_make(3, 4, 6);
    if (st == KD_OK)
        st = tvt(t)->apply(t.self, rgb, &a, &r1);
    if (st == KD_OK)
        st = tvt(t)->apply(t.self, rgb, &b, &r2);
    bool same = st == KD_OK && memcmp(a.data, b.data, n) == 0;
    if (st == KD_OK)
        st = tvt(t)->apply(t.self, rgb, &b, &r3);
    kt_check(st == KD_OK && same && memcmp(a.data, b.data, n) != 0,
             "color_jitter: the provider replays from its key and differs across keys", "%s",
             st ? kd_last_error() : "");
    free(a.data);
    free(b.data);
    drop(t, KD_KIND_TRANSFORM);
}

/* --------------------------------------------------------------- corpus */

static kd_status parse_image(const unsigned char *bytes, size_t len, const char *label,
                             bool *consistent)
{
    kd_sample s = {0, 0, 0, KD_U8, NULL, 0};
    kd_status st = kd_img_decode(bytes, len, label, 3, INT64_C(1) << 26, &s);
    if (st == KD_OK) {
        kd_img_header h;
        *consistent = kd_img_read_header(bytes, len, label, &h) == KD_OK &&
                      h.height == s.height && h.width == s.width && s.channels == 3;
    }
    free(s.data);
    return st;
}

static void test_corpus(void) { kt_replay_corpus("tests/fuzz/corpus/images", parse_image); }

/* ------------------------------------------------------------- a KD run */

/* Runs `kdengine ARGS` in the temporary folder, stderr folded in. */
static int kdengine(char **out, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine %s 2>&1", tmp_dir, KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

/* A KD job on the Fashion-MNIST image folder: random_resized_crop and
 * hflip for training, resize for evaluation, the shipped ResNet-20 teacher. */
static const char *const kd_job =
    "{\n"
    "  \"seed\": 5, \"threads\": 1, \"output\": \"%s/%s\", \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"image_folder\", \"root\": \"%s/fmnist\",\n"
    "                            \"channels\": 1},\n"
    "              \"transforms\": [{\"name\": \"random_resized_crop\", \"size\": [28],\n"
    "                              \"scale\": [0.5, 1.0]},\n"
    "                             {\"name\": \"hflip\"},\n"
    "                             {\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "              \"batch_size\": 16, \"workers\": %d},\n"
    "    \"val\": {\"dataset\": {\"name\": \"image_folder\", \"root\": \"%s/fmnist\",\n"
    "                          \"channels\": 1},\n"
    "            \"transforms\": [{\"name\": \"resize\", \"size\": [28, 28]},\n"
    "                           {\"name\": \"normalize\", \"mean\": [0.286], \"std\": [0.353]}],\n"
    "            \"batch_size\": 30, \"workers\": 0}\n"
    "  },\n"
    "  \"teacher\": {\"model\": \"resnet20\", \"num_classes\": 10, \"in_chans\": 1,\n"
    "              \"weights\": \"%s/examples/fashion-mnist/teacher.safetensors\"},\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 10, \"in_chans\": 1},\n"
    "  \"losses\": [{\"name\": \"ce\", \"weight\": 0.5},\n"
    "             {\"name\": \"kd\", \"weight\": 0.5, \"temperature\": 4}],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 2},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 2},\n"
    "  \"log\": {\"every_steps\": 2}\n"
    "}\n";

static bool write_kd_job(const char *file, const char *output, int workers)
{
    char text[8192], path[512];
    snprintf(text, sizeof text, kd_job, tmp_dir, output, kt_plugin_dir(), tmp_dir, workers,
             tmp_dir, KD_SRCDIR);
    return kt_write_file(in_tmp(file, path, sizeof path), text, strlen(text));
}

/* The file's "kdengine.classes" equals the classes torchvision found. */
static bool has_classes(const char *file, const char *expected_json)
{
    char path[512];
    kd_safetensors *f;
    if (kd_safetensors_open(in_tmp(file, path, sizeof path), &f) != KD_OK)
        return false;
    const char *classes = kd_safetensors_metadata(f, "kdengine.classes");
    bool same = classes && strcmp(classes, expected_json) == 0;
    kd_safetensors_close(f);
    return same;
}

static void test_kd_run(void)
{
    json_t *classes = json_object_get(json_object_get(expect, "folder"), "classes");
    char *expected = json_dumps(classes, JSON_COMPACT);
    char *out = NULL;
    bool ok = write_kd_job("kd.json", "kd", 2) && write_kd_job("kd0.json", "kd0", 0);
    int rc = ok ? kdengine(&out, "run kd.json") : -1;
    if (!kt_check(rc == 0, "kd run: 2 epochs of KD from the image folder", "rc %d: %s", rc,
                  out ? out : "")) {
        free(out);
        free(expected);
        return;
    }
    free(out);
    out = NULL;
    char path[512];
    json_error_t err;
    json_t *written = json_load_file(in_tmp("kd/classes.json", path, sizeof path), 0, &err);
    json_t *to_index = json_object_get(written, "class_to_idx");
    bool same = json_equal(json_object_get(written, "classes"), classes) &&
                json_object_size(to_index) == json_array_size(classes);
    for (size_t c = 0; same && c < json_array_size(classes); c++)
        same = json_integer_value(json_object_get(
                   to_index, json_string_value(json_array_get(classes, c)))) == (json_int_t)c;
    kt_check(same, "kd run: classes.json holds torchvision's classes and class_to_idx", "%s",
             written ? "differs" : err.text);
    json_decref(written);
    kt_check(has_classes("kd/best.safetensors", expected) &&
                 has_classes("kd/checkpoints/step-000000006.safetensors", expected),
             "kd run: checkpoints and best.safetensors carry kdengine.classes", "missing");
    rc = kdengine(&out, "export kd.json --weights kd/best.safetensors --out kd-export.safetensors");
    kt_check(rc == 0 && has_classes("kd-export.safetensors", expected),
             "kd run: exported weights carry the class names", "rc %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;
    /* the same run built on the training thread: every batch, so every
     * weight, is the same (transforms keyed by seed, epoch and index); the
     * exports of the last checkpoints hold the weights without the state's
     * timings */
    rc = kdengine(&out, "run kd0.json");
    free(out);
    out = NULL;
    if (rc == 0)
        rc = kdengine(&out, "export kd.json --weights kd/checkpoints/step-000000006.safetensors "
                            "--out kd2.safetensors");
    free(out);
    out = NULL;
    if (rc == 0)
        rc = kdengine(&out, "export kd.json --weights kd0/checkpoints/step-000000006.safetensors "
                            "--out kd0.safetensors");
    free(out);
    out = NULL;
    unsigned char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    if (rc == 0) {
        a = kt_read_file(in_tmp("kd2.safetensors", path, sizeof path), &la);
        b = kt_read_file(in_tmp("kd0.safetensors", path, sizeof path), &lb);
    }
    kt_check(a && b && la == lb && memcmp(a, b, la) == 0,
             "kd run: 2 workers and 0 workers train byte-identical weights", "rc %d", rc);
    free(b);
    b = NULL;
    /* the run's folder as it was after epoch 1, resumed: the second epoch
     * trains the same weights */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp -r %s/kd0 %s/kdr && rm %s/kdr/checkpoints/step-000000006.safetensors",
             tmp_dir, tmp_dir, tmp_dir);
    rc = kt_run_command(cmd, NULL);
    if (rc == 0)
        rc = kdengine(&out, "run kd0.json --set output=kdr --resume");
    bool resumed = rc == 0 && out && contains(out, "resuming from") && contains(out, "step 3\n");
    free(out);
    out = NULL;
    if (rc == 0)
        rc = kdengine(&out, "export kd.json --weights kdr/checkpoints/step-000000006.safetensors "
                            "--out kdr.safetensors");
    free(out);
    out = NULL;
    if (rc == 0)
        b = kt_read_file(in_tmp("kdr.safetensors", path, sizeof path), &lb);
    kt_check(resumed && a && b && la == lb && memcmp(a, b, la) == 0,
             "kd run: resumed after epoch 1, it trains byte-identical weights", "rc %d%s", rc,
             resumed ? "" : ", not resumed from step 3");
    free(a);
    free(b);
    free(expected);
}

/* The unreadable-file policy through a run: skip reports the count at the
 * epoch's end, error stops the run naming the file. */
static void test_skip_in_run(void)
{
    static const char *const job =
        "{\"seed\": 1, \"threads\": 1, \"output\": \"%s/%s\", \"plugin_dirs\": [\"%s\"],\n"
        " \"data\": {\"train\": {\"dataset\": {\"name\": \"image_folder\", \"root\": \"%s/policy\",\n"
        "                                   \"channels\": 1, \"on_error\": \"%s\"},\n"
        "                      \"transforms\": [{\"name\": \"resize\", \"size\": [16, 16]},\n"
        "                                     {\"name\": \"to_tensor\"}],\n"
        "                      \"batch_size\": 3, \"workers\": 1}},\n"
        " \"student\": {\"model\": \"resnet8\", \"num_classes\": 2, \"in_chans\": 1},\n"
        " \"losses\": [{\"name\": \"ce\"}], \"optim\": {\"name\": \"sgd\", \"lr\": 0.01},\n"
        " \"schedule\": {\"name\": \"constant\", \"epochs\": 2}, \"eval\": {\"every_epochs\": 0}}\n";
    for (int policy = 0; policy < 2; policy++) {
        char text[4096], path[512], *out = NULL;
        const char *name = policy ? "error" : "skip";
        snprintf(text, sizeof text, job, tmp_dir, name, kt_plugin_dir(), tmp_dir, name);
        snprintf(path, sizeof path, "%s/%s.json", tmp_dir, name);
        kt_write_file(path, text, strlen(text));
        snprintf(text, sizeof text, "run %s.json", name);
        int rc = kdengine(&out, text);
        const char *o = out ? out : "";
        if (policy == 0)
            kt_check(rc == 0 && contains(o, "epoch 1: data.train: 1 unreadable sample skipped") &&
                         contains(o, "epoch 2: data.train: 1 unreadable sample skipped") &&
                         contains(o, "2_broken.jpg"),
                     "kd run: on_error skip trains on and reports 1 skip per epoch", "rc %d: %s",
                     rc, o);
        else
            kt_check(rc != 0 && contains(o, "2_broken.jpg") && contains(o, "truncated"),
                     "kd run: on_error error stops the run naming the file", "rc %d: %s", rc, o);
        free(out);
    }
}

/* ------------------------------------------------- kdengine forward */

/* What a pipeline makes of `photo`: decoded at `channels`, then each
 * transform in order, written as the safetensors tensor "input"
 * [1, C, H, W] to `file`, for forward to read the same numbers. */
static bool write_preprocessed(const char *photo, int channels, int n,
                               const char *const *names, const char *const *params,
                               const char *file)
{
    char path[512];
    kd_sample a = {0, 0, 0, KD_U8, NULL, 0}, b = {0, 0, 0, KD_U8, NULL, 0};
    kd_status st = decode_file(in_tmp(photo, path, sizeof path), channels, &a);
    for (int i = 0; st == KD_OK && i < n; i++) {
        instance t;
        st = make(KD_KIND_TRANSFORM, names[i], params[i], &t);
        if (st == KD_OK)
            st = tvt(t)->apply(t.self, &a, &b, NULL);
        drop(t, KD_KIND_TRANSFORM);
        kd_sample swap = a;
        a = b;
        b = swap;
    }
    bool ok = st == KD_OK && a.dtype == KD_F32;
    if (ok) {
        int64_t shape[4] = {1, a.channels, a.height, a.width};
        kd_tensor *x = kd_tensor_from_data(KD_F32, 4, shape, a.data);
        const char *key = "input";
        ok = x && kd_safetensors_save(in_tmp(file, path, sizeof path), 1, &key, &x, 0, NULL) ==
                      KD_OK;
        kd_tensor_free(x);
    }
    if (!ok)
        fprintf(stderr, "preprocessing %s: %s\n", photo, kd_last_error());
    free(a.data);
    free(b.data);
    return ok;
}

/* The "logits" of two forward outputs hold the same bytes (and shape). */
static bool same_logits(const char *file_a, const char *file_b)
{
    char pa[512], pb[512];
    kd_safetensors *a = NULL, *b = NULL;
    bool same = kd_safetensors_open(in_tmp(file_a, pa, sizeof pa), &a) == KD_OK &&
                kd_safetensors_open(in_tmp(file_b, pb, sizeof pb), &b) == KD_OK;
    const kd_safetensors_entry *ea = same ? kd_safetensors_find(a, "logits") : NULL;
    const kd_safetensors_entry *eb = same ? kd_safetensors_find(b, "logits") : NULL;
    same = ea && eb && ea->ndim == eb->ndim && ea->nbytes == eb->nbytes &&
           memcmp(ea->shape, eb->shape, (size_t)ea->ndim * sizeof *ea->shape) == 0 &&
           memcmp(ea->data, eb->data, ea->nbytes) == 0;
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return same;
}

/* How many of the class names (a JSON array) the text holds. */
static int names_found(const char *text, const json_t *classes)
{
    int n = 0;
    for (size_t c = 0; text && c < json_array_size(classes); c++)
        n += contains(text, json_string_value(json_array_get(classes, c)));
    return n;
}

/* forward on an image equals forward on the tensor the same pipeline
 * makes of it: a model's default (resize to floor(size / 0.875), center
 * crop, ImageNet's normalization) and a job's data.val transforms. */
static void test_forward_images(void)
{
    char model[512];
    snprintf(model, sizeof model, "forward --plugin-dir %s resnet18 --params "
             "'{\"num_classes\": 7}' --size 64", kt_plugin_dir());
    const char *names[] = {"resize", "center_crop", "normalize"};
    const char *params[] = {"{\"size\": [73]}", "{\"size\": [64]}",
                            "{\"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]}"};
    char args[1024], *out = NULL;
    bool ok = write_preprocessed("photos/coffee.png", 3, 3, names, params, "coffee.safetensors");
    snprintf(args, sizeof args, "%s --input photos/coffee.png --out f-png.safetensors", model);
    int rc = ok ? kdengine(&out, args) : -1;
    bool printed = out && contains(out, "top-5 of photos/coffee.png:");
    free(out);
    out = NULL;
    snprintf(args, sizeof args, "%s --input coffee.safetensors --out f-tensor.safetensors", model);
    if (rc == 0)
        rc = kdengine(&out, args);
    kt_check(rc == 0 && printed && same_logits("f-png.safetensors", "f-tensor.safetensors"),
             "forward MODEL on a PNG equals forward on its preprocessed tensor (resize 73, crop "
             "64, ImageNet mean/std), and prints its top-5", "rc %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;

    snprintf(args, sizeof args, "%s --input photos/coffee.png --input photos/chelsea.jpg "
             "--out f-two.safetensors", model);
    rc = kdengine(&out, args);
    char path[512];
    kd_safetensors *f = NULL;
    const kd_safetensors_entry *e = NULL;
    if (rc == 0 && kd_safetensors_open(in_tmp("f-two.safetensors", path, sizeof path), &f) ==
                       KD_OK)
        e = kd_safetensors_find(f, "logits");
    kt_check(e && e->ndim == 2 && e->shape[0] == 2 && e->shape[1] == 7 &&
                 contains(out, "top-5 of photos/chelsea.jpg:"),
             "forward: two --input images make a batch of 2", "rc %d: %s", rc, out ? out : "");
    kd_safetensors_close(f);
    free(out);
    out = NULL;

    /* kd.json's data.val: gray, resize [28, 28], normalize; class names
     * from its image folder */
    const char *job_names[] = {"resize", "normalize"};
    const char *job_params[] = {"{\"size\": [28, 28]}", "{\"mean\": [0.286], \"std\": [0.353]}"};
    ok = write_preprocessed("photos/chelsea.jpg", 1, 2, job_names, job_params,
                            "chelsea.safetensors");
    rc = ok ? kdengine(&out, "forward kd.json --input photos/chelsea.jpg --out j-jpg.safetensors")
            : -1;
    json_t *classes = json_object_get(json_object_get(expect, "folder"), "classes");
    printed = out && contains(out, "top-5 of photos/chelsea.jpg:") &&
              names_found(out, classes) >= 5;
    free(out);
    out = NULL;
    if (rc == 0)
        rc = kdengine(&out, "forward kd.json --input chelsea.safetensors --out j-tensor.safetensors");
    kt_check(rc == 0 && printed && same_logits("j-jpg.safetensors", "j-tensor.safetensors"),
             "forward JOB on a JPEG equals forward on its data.val tensor, top-5 named by the "
             "image folder's classes", "rc %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;

    /* the exported student's kdengine.classes name a MODEL's top-5 */
    snprintf(args, sizeof args, "forward --plugin-dir %s resnet8 --params '{\"num_classes\": "
             "10, \"in_chans\": 1}' --weights kd-export.safetensors --size 28 --crop-pct 1 "
             "--mean 0.286 --std 0.353 --input photos/chelsea.jpg --out w.safetensors",
             kt_plugin_dir());
    rc = kdengine(&out, args);
    kt_check(rc == 0 && names_found(out, classes) >= 5,
             "forward MODEL --weights: the top-5 named by the weights' kdengine.classes",
             "rc %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;

    /* unreadable images: the message names the file */
    size_t len = 0;
    unsigned char *png = kt_read_file(in_tmp("photos/coffee.png", path, sizeof path), &len);
    ok = png && kt_write_file(in_tmp("cut.png", path, sizeof path), png, len / 3) &&
         kt_write_file(in_tmp("text.jpg", path, sizeof path), "not a JPEG\n", 11);
    free(png);
    const char *bad[] = {"cut.png", "text.jpg"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "%s --input photos/coffee.png --input %s --out x.safetensors",
                 model, bad[i]);
        rc = ok ? kdengine(&out, args) : -1;
        char name[128];
        snprintf(name, sizeof name, "forward: a broken image (%s) is refused by name", bad[i]);
        kt_check(rc == 1 && out && contains(out, bad[i]), name, "rc %d: %s", rc,
                 out ? out : "");
        free(out);
        out = NULL;
    }
    rc = kdengine(&out, "forward kd.json --input photos/coffee.png --size 64 --out x.safetensors");
    kt_check(rc == 2 && out && contains(out, "goes with a MODEL"),
             "forward: a job's images take its data.val transforms, not --size", "rc %d: %s", rc,
             out ? out : "");
    free(out);
}

/* --------------------------------------------------------------- main */

static bool write_fixtures(void)
{
    char cmd[2048], script[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torchvision, skimage' >/dev/null 2>&1",
             KD_TORCH_PYTHON);
    if (kt_run_command(cmd, NULL) != 0) {
        kt_skip("images: PIL/torchvision references",
                "torchvision or skimage is not importable by %s (run scripts/setup)",
                KD_TORCH_PYTHON);
        return false;
    }
    kt_source_path("tests/parity/pil_images.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s", KD_TORCH_PYTHON, script, tmp_dir);
    if (!kt_check(kt_run_command(cmd, NULL) == 0, "images: pil_images.py writes the fixtures",
                  "%s failed", cmd))
        return false;
    char path[512];
    json_error_t err;
    expect = json_load_file(in_tmp("expect.json", path, sizeof path), 0, &err);
    return kt_check(expect != NULL, "images: expect.json loads", "%s", err.text);
}

int main(void)
{
    test_corpus();
    if (!mkdtemp(tmp_dir)) {
        kt_fail("images: temporary folder", "mkdtemp failed");
        return kt_finish();
    }
    if (write_fixtures()) {
        test_decode_matches_pil();
        test_image_folder();
        test_refusals();
        test_unreadable_policy();
        test_cifar();
        kd_sample src = decoded_source();
        if (kt_check(src.data != NULL, "geometry: the source photo decodes", "%s",
                     kd_last_error())) {
            test_center_crop(&src);
            test_resize(&src);
            test_resized_crop_pixels(&src);
            test_rrc_provider(&src);
            test_color(&src);
            test_jitter(&src);
        }
        free(src.data);
        test_rrc_exact();
        test_rrc_distribution();
        test_kd_run();
        test_forward_images();
        test_skip_in_run();
    }
    json_decref(expect);
    kt_plugins_close();
    kt_remove_tree(tmp_dir);
    return kt_finish();
}
