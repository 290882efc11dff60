/* The data plugins and the host loader: the idx dataset on Fashion-MNIST
 * and on small synthetic files (corrupt ones included); the transforms
 * through their plugins against the kernels, a padded-array reference and
 * torch; the loader's independence from worker count, its documented rng
 * keys, resume, subset, drop_last, error reporting and shutdown; loader
 * throughput on Fashion-MNIST. */
#include "config.h"

#include "harness.h"
#include "plugin_fixture.h"

#include "../core/loader.h"
#include "../plugins/data/transforms/image_transforms.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmp_dir[] = "/tmp/kddata.XXXXXX";

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

/* ---------------------------------------------------------- plugin helpers */

/* An instance of provider (kind, name) with params from JSON; the status
 * of create() (KD_ERR_INVALID with the message printed when the plugin or
 * its params do not load). */
static kd_status make_instance(kd_plugin_kind kind, const char *name, const char *json,
                               const kd_vtable_header **vtable, void **self)
{
    *self = NULL;
    const kd_registry_entry *e = kt_provider(kind, name, vtable);
    if (!e)
        return kd_error(KD_ERR_INVALID, "%s is not in the plugin dir", name);
    kd_params *p = kt_params(e, json);
    if (!p)
        return kd_error_wrap(KD_ERR_INVALID, "%s", name);
    kd_create_args args = kt_create_args(e, p, 1);
    kd_status st;
    if (kind == KD_KIND_DATASET)
        st = ((const kd_dataset_vtable *)*vtable)->create(&args, self);
    else
        st = ((const kd_transform_vtable *)*vtable)->create(&args, self);
    kd_params_free(p);
    return st;
}

typedef struct transform {
    const kd_transform_vtable *vt;
    void *self;
} transform;

static transform make_transform(const char *name, const char *json)
{
    transform t = {NULL, NULL};
    const kd_vtable_header *h = NULL;
    if (make_instance(KD_KIND_TRANSFORM, name, json, &h, &t.self) != KD_OK)
        fprintf(stderr, "%s %s: %s\n", name, json, kd_last_error());
    t.vt = (const kd_transform_vtable *)h;
    return t;
}

static void free_transform(transform t)
{
    if (t.self)
        t.vt->destroy(t.self);
}

/* A u8 HWC sample with pixel (y, x, k) = f(y, x, k) given as a formula. */
static kd_sample u8_image(int h, int w, int c, int salt)
{
    kd_sample s = {h, w, c, KD_U8, NULL, 0};
    kd_sample_reserve(&s, (size_t)h * (size_t)w * (size_t)c);
    uint8_t *p = s.data;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[(y * w + x) * c + k] = (uint8_t)(1 + salt + 37 * y + 11 * x + 101 * k);
    return s;
}

/* ------------------------------------------------------------ idx dataset */

typedef struct dataset {
    const kd_dataset_vtable *vt;
    void *self;
} dataset;

static kd_status open_idx(const char *images, const char *labels, int classes, dataset *d)
{
    char json[1024];
    snprintf(json, sizeof json, "{\"images\": \"%s\", \"labels\": \"%s\", \"num_classes\": %d}",
             images, labels, classes);
    const kd_vtable_header *h = NULL;
    kd_status st = make_instance(KD_KIND_DATASET, "idx", json, &h, &d->self);
    d->vt = (const kd_dataset_vtable *)h;
    return st;
}

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Reference values computed independently with /usr/bin/python3:
 * x = gzip.open(images).read()[16:], y = gzip.open(labels).read()[8:],
 * then sum(x), sum(x[i*784:(i+1)*784]), list(y[:8]), x[i*784 + r*28 + c],
 * sum(i * v for i, v in enumerate(y)). */
static const uint8_t train0_row14[28] = {0,   0,   1,   4,   6,   7,   2,   0,   0,   0,
                                         0,   0,   237, 226, 217, 223, 222, 219, 222, 221,
                                         216, 223, 229, 215, 218, 255, 77,  0};

static void check_fmnist_split(const char *split, int64_t count, uint64_t pixel_sum,
                               uint64_t weighted_labels, const int64_t *first_labels)
{
    char images[256], labels[256], name[128];
    snprintf(images, sizeof images, FMNIST_DIR "/%s-images-idx3-ubyte.gz", split);
    snprintf(labels, sizeof labels, FMNIST_DIR "/%s-labels-idx1-ubyte.gz", split);
    dataset d;
    double t0 = now();
    kd_status st = open_idx(images, labels, 10, &d);
    double secs = now() - t0;
    snprintf(name, sizeof name, "idx: fashion-mnist %s loads", split);
    if (!kt_check(st == KD_OK, name, "%s", kd_last_error()))
        return;
    printf("info idx: fashion-mnist %s created (gzip decoded) in %.3f s\n", split, secs);
    kd_dataset_info info;
    d.vt->info(d.self, &info);
    snprintf(name, sizeof name, "idx: fashion-mnist %s is %lld x 28x28x1, 10 classes", split,
             (long long)count);
    kt_check(info.length == count && info.height == 28 && info.width == 28 &&
                 info.channels == 1 && info.num_classes == 10,
             name, "%lld x %dx%dx%d, %d classes", (long long)info.length, info.height,
             info.width, info.channels, info.num_classes);
    kd_sample s = {0, 0, 0, KD_F32, NULL, 0};
    uint64_t sum = 0, weighted = 0;
    bool ok = true, first_ok = true;
    for (int64_t i = 0; i < info.length && ok; i++) {
        int64_t label = -1;
        ok = d.vt->get(d.self, i, &s, &label) == KD_OK && s.dtype == KD_U8 &&
             s.height == 28 && s.width == 28 && s.channels == 1;
        for (int p = 0; ok && p < 784; p++)
            sum += ((const uint8_t *)s.data)[p];
        weighted += (uint64_t)i * (uint64_t)label;
        if (i < 8)
            first_ok &= label == first_labels[i];
    }
    snprintf(name, sizeof name, "idx: fashion-mnist %s pixels and labels", split);
    kt_check(ok && sum == pixel_sum && weighted == weighted_labels && first_ok, name,
             "get ok %d, pixel sum %llu (want %llu), sum i*label %llu (want %llu), first "
             "labels %s: %s",
             ok, (unsigned long long)sum, (unsigned long long)pixel_sum,
             (unsigned long long)weighted, (unsigned long long)weighted_labels,
             first_ok ? "ok" : "differ", kd_last_error());
    int64_t label = -1;
    if (!strcmp(split, "train")) {
        d.vt->get(d.self, 0, &s, &label);
        kt_check(memcmp((const uint8_t *)s.data + 14 * 28, train0_row14, 28) == 0 &&
                     label == 9,
                 "idx: fashion-mnist train[0] row 14 and label 9", "label %lld",
                 (long long)label);
        d.vt->get(d.self, 123, &s, &label);
        const uint8_t *p = s.data;
        kt_check(p[237] == 255 && p[236] != 255 && label == 2,
                 "idx: fashion-mnist train[123] pixel (8, 13) is 255, label 2",
                 "pixel %d, label %lld", p[237], (long long)label);
    } else {
        d.vt->get(d.self, count - 1, &s, &label);
        const uint8_t *p = s.data;
        kt_check(p[13 * 28 + 13] == 95 && label == 5,
                 "idx: fashion-mnist t10k[9999] pixel (13, 13) is 95, label 5",
                 "pixel %d, label %lld", p[13 * 28 + 13], (long long)label);
    }
    st = d.vt->get(d.self, count, &s, &label);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), images) &&
                 contains(kd_last_error(), "index"),
             "idx: an index past the end is refused, naming the file", "%s: %s",
             kd_status_name(st), kd_last_error());
    free(s.data);
    d.vt->destroy(d.self);
}

static void test_idx_fashion_mnist(void)
{
#ifndef KD_HAVE_ZLIB
    kt_skip("idx: fashion-mnist", "built without zlib, the .gz files cannot be read");
    return;
#endif
    if (access(FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", R_OK) != 0) {
        kt_skip("idx: fashion-mnist", "%s is absent (Debian package dataset-fashion-mnist)",
                FMNIST_DIR);
        return;
    }
    static const int64_t train_first[8] = {9, 0, 0, 3, 0, 2, 7, 2};
    static const int64_t test_first[8] = {9, 2, 1, 1, 6, 1, 4, 6};
    check_fmnist_split("train", 60000, 3431114169u, 8087216427u, train_first);
    check_fmnist_split("t10k", 10000, 573469082u, 225732341u, test_first);
}

/* An IDX file at tmp_dir/name: u8 elements, big-endian dims. */
static const char *write_idx(const char *name, int ndims, const uint32_t *dims,
                             const uint8_t *data, size_t len, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", tmp_dir, name);
    size_t header = 4 + 4 * (size_t)ndims;
    uint8_t *buf = malloc(header + len);
    buf[0] = buf[1] = 0;
    buf[2] = 0x08;
    buf[3] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++)
        for (int b = 0; b < 4; b++)
            buf[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
    if (len)
        memcpy(buf + header, data, len);
    if (!kt_write_file(path, buf, header + len))
        fprintf(stderr, "cannot write %s\n", path);
    free(buf);
    return path;
}

static void test_idx_synthetic(void)
{
    /* 3 images of 2x2 pixels with 3 channels, stored N x H x W x C. */
    uint8_t pixels[36], labels[3] = {2, 0, 1};
    for (int i = 0; i < 36; i++)
        pixels[i] = (uint8_t)(i * 5 + 1);
    char images_path[256], labels_path[256], bad_path[256], wide_path[256];
    write_idx("rgb-images", 4, (const uint32_t[]){3, 2, 2, 3}, pixels, 36, images_path,
              sizeof images_path);
    write_idx("rgb-labels", 1, (const uint32_t[]){3}, labels, 3, labels_path,
              sizeof labels_path);
    dataset d;
    kd_status st = open_idx(images_path, labels_path, 3, &d);
    if (kt_check(st == KD_OK, "idx: a 4-D (N x H x W x C) file loads", "%s", kd_last_error())) {
        kd_dataset_info info;
        d.vt->info(d.self, &info);
        kd_sample s = {0, 0, 0, KD_F32, NULL, 0};
        int64_t label = -1;
        st = d.vt->get(d.self, 1, &s, &label);
        kt_check(st == KD_OK && info.length == 3 && info.channels == 3 && s.height == 2 &&
                     s.width == 2 && s.channels == 3 && s.dtype == KD_U8 && label == 0 &&
                     memcmp(s.data, pixels + 12, 12) == 0,
                 "idx: get() writes the item as HWC u8 and its label", "%s",
                 kd_last_error());
        free(s.data);
        d.vt->destroy(d.self);
    }

    /* Truncated: the header announces 3 images but two and a half follow. */
    write_idx("short-images", 4, (const uint32_t[]){3, 2, 2, 3}, pixels, 30, bad_path,
              sizeof bad_path);
    st = open_idx(bad_path, labels_path, 3, &d);
    kt_check(st == KD_ERR_FORMAT && !d.self && contains(kd_last_error(), bad_path) &&
                 contains(kd_last_error(), "idx: images"),
             "idx: a truncated images file is refused, naming it", "%s: %s",
             kd_status_name(st), kd_last_error());

    char missing[256];
    snprintf(missing, sizeof missing, "%s/no-such-labels", tmp_dir);
    st = open_idx(images_path, missing, 3, &d);
    /* the manifest marks it a file, so the parameters are refused first */
    kt_check(st == KD_ERR_INVALID && !d.self && contains(kd_last_error(), missing) &&
                 contains(kd_last_error(), "labels: cannot read file"),
             "idx: a missing labels file is refused, naming it", "%s: %s", kd_status_name(st),
             kd_last_error());

    st = open_idx(images_path, labels_path, 2, &d);
    kt_check(st == KD_ERR_FORMAT && !d.self && contains(kd_last_error(), labels_path) &&
                 contains(kd_last_error(), "num_classes 2"),
             "idx: a label >= num_classes is refused, naming the labels file", "%s: %s",
             kd_status_name(st), kd_last_error());

    write_idx("five-channels", 4, (const uint32_t[]){1, 2, 2, 5}, pixels, 20, wide_path,
              sizeof wide_path);
    char one_label[256];
    write_idx("one-label", 1, (const uint32_t[]){1}, labels, 1, one_label, sizeof one_label);
    st = open_idx(wide_path, one_label, 3, &d);
    kt_check(st == KD_ERR_FORMAT && !d.self && contains(kd_last_error(), wide_path) &&
                 contains(kd_last_error(), "channels"),
             "idx: 5 channels are refused, naming the file", "%s: %s", kd_status_name(st),
             kd_last_error());

    st = open_idx(images_path, one_label, 3, &d);
    kt_check(st == KD_ERR_FORMAT && !d.self && contains(kd_last_error(), one_label) &&
                 contains(kd_last_error(), images_path),
             "idx: a count mismatch names both files", "%s: %s", kd_status_name(st),
             kd_last_error());

    const kd_vtable_header *h;
    const kd_registry_entry *e = kt_provider(KD_KIND_DATASET, "idx", &h);
    kd_params *p = NULL;
    json_t *v = json_pack("{s:s}", "images", images_path);
    st = e ? kd_params_build(e, v, "data.train", 0, NULL, &p) : KD_ERR_INVALID;
    kt_check(st != KD_OK && contains(kd_last_error(), "labels"),
             "idx: the labels parameter is required", "%s", kd_last_error());
    json_decref(v);
    kd_params_free(p);
}

/* ------------------------------------------------------------- transforms */

/* Pixel (y, x, k) of src (h x w x c) zero-padded by pad, at padded
 * coordinates. */
static uint8_t padded_at(const kd_sample *src, int pad, int y, int x, int k)
{
    int sy = y - pad, sx = x - pad;
    if (sy < 0 || sx < 0 || sy >= src->height || sx >= src->width)
        return 0;
    return ((const uint8_t *)src->data)[(sy * src->width + sx) * src->channels + k];
}

static void test_random_crop(void)
{
    transform t = make_transform("random_crop", "{\"size\": [4, 5], \"padding\": 2}");
    if (!kt_check(t.self != NULL, "random_crop: creates", "%s", kd_last_error()))
        return;
    kd_sample in = u8_image(5, 6, 2, 0), out = {0, 0, 0, KD_U8, NULL, 0};
    int wrong = 0, positions[6][6] = {{0}};
    for (uint64_t key = 0; key < 400; key++) {
        kd_rng rng = kd_rng_make(9, 1, key), ref = rng;
        /* The documented draws: top over [0, 5 + 4 - 4], then left over
         * [0, 6 + 4 - 5]. */
        int top = (int)kd_rng_below(&ref, 6), left = (int)kd_rng_below(&ref, 6);
        positions[top][left]++;
        if (t.vt->apply(t.self, &in, &out, &rng) != KD_OK || out.height != 4 ||
            out.width != 5 || out.channels != 2 || out.dtype != KD_U8 ||
            rng.counter != ref.counter) {
            wrong++;
            continue;
        }
        const uint8_t *o = out.data;
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 5; x++)
                for (int k = 0; k < 2; k++)
                    wrong += o[(y * 5 + x) * 2 + k] != padded_at(&in, 2, top + y, left + x, k);
    }
    int unseen = 0;
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 6; x++)
            unseen += positions[y][x] == 0;
    kt_check(wrong == 0 && unseen == 0,
             "random_crop: [4, 5] with padding 2 is the documented window of the padded image",
             "%d wrong, %d of 36 window origins never drawn", wrong, unseen);

    /* Against the kernels directly, on a Fashion-MNIST-sized image. */
    transform sq = make_transform("random_crop", "{\"size\": [28], \"padding\": 4}");
    kd_sample big = u8_image(28, 28, 1, 3);
    wrong = 0;
    for (uint64_t key = 0; key < 50 && sq.self; key++) {
        kd_rng rng = kd_rng_make(4, 2, key), ref = rng;
        kd_img_aug aug = {0, 0, false};
        uint8_t expect[28 * 28];
        kd_img_draw_crop(&ref, 28, 28, 4, 28, 28, &aug);
        kd_img_apply_aug(big.data, 28, 28, 1, 4, expect, 28, 28, &aug);
        wrong += sq.vt->apply(sq.self, &big, &out, &rng) != KD_OK ||
                 memcmp(out.data, expect, sizeof expect) != 0;
    }
    kt_check(sq.self && wrong == 0, "random_crop: [28] pads 4 exactly as the kernels do",
             "%d differ", wrong);

    transform too_big = make_transform("random_crop", "{\"size\": [40], \"padding\": 2}");
    kd_rng rng = kd_rng_make(1, 2, 3);
    kd_status st = too_big.self ? too_big.vt->apply(too_big.self, &big, &out, &rng)
                                : KD_ERR_INVALID;
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "random_crop") &&
                 contains(kd_last_error(), "40x40") && contains(kd_last_error(), "32x32"),
             "random_crop: a window larger than the padded image is refused", "%s: %s",
             kd_status_name(st), kd_last_error());

    kd_sample f = {28, 28, 1, KD_F32, NULL, 0};
    kd_sample_reserve(&f, 28 * 28 * sizeof(float));
    st = sq.self ? sq.vt->apply(sq.self, &f, &out, &rng) : KD_ERR_INVALID;
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "random_crop") &&
                 contains(kd_last_error(), "u8"),
             "random_crop: an f32 tensor is refused", "%s", kd_last_error());

    void *self = NULL;
    const kd_vtable_header *h;
    st = make_instance(KD_KIND_TRANSFORM, "random_crop", "{\"size\": [1, 2, 3]}", &h, &self);
    kt_check(st == KD_ERR_INVALID && !self && contains(kd_last_error(), "size"),
             "random_crop: size with 3 values is refused", "%s", kd_last_error());
    st = make_instance(KD_KIND_TRANSFORM, "random_crop", "{\"size\": [0]}", &h, &self);
    kt_check(st == KD_ERR_INVALID && !self && contains(kd_last_error(), "size"),
             "random_crop: size 0 is refused", "%s", kd_last_error());

    free(in.data);
    free(big.data);
    free(f.data);
    free(out.data);
    free_transform(t);
    free_transform(sq);
    free_transform(too_big);
}

static void test_hflip(void)
{
    transform always = make_transform("hflip", "{\"p\": 1}");
    transform never = make_transform("hflip", "{\"p\": 0}");
    transform half = make_transform("hflip", "{}");
    if (!kt_check(always.self && never.self && half.self, "hflip: creates", "%s",
                  kd_last_error()))
        return;
    kd_sample in = u8_image(3, 4, 3, 5), out = {0, 0, 0, KD_U8, NULL, 0};
    kd_rng rng = kd_rng_make(2, 3, 4);
    bool ok = always.vt->apply(always.self, &in, &out, &rng) == KD_OK && rng.counter == 2;
    const uint8_t *s = in.data, *o = out.data;
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 4; x++)
            for (int k = 0; k < 3; k++)
                ok &= o[(y * 4 + x) * 3 + k] == s[(y * 4 + 3 - x) * 3 + k];
    kt_check(ok, "hflip: p 1 mirrors every row, one uniform drawn", "counter %llu",
             (unsigned long long)rng.counter);
    rng = kd_rng_make(2, 3, 4);
    ok = never.vt->apply(never.self, &in, &out, &rng) == KD_OK && rng.counter == 2 &&
         memcmp(out.data, in.data, 36) == 0;
    kt_check(ok, "hflip: p 0 copies, one uniform drawn", "counter %llu",
             (unsigned long long)rng.counter);
    int flips = 0, wrong = 0;
    for (uint64_t key = 0; key < 2000; key++) {
        kd_rng r = kd_rng_make(5, 6, key), ref = r;
        bool flip = kd_img_draw_flip(&ref, 0.5);
        half.vt->apply(half.self, &in, &out, &r);
        flips += flip;
        wrong += ((const uint8_t *)out.data)[0] != s[flip ? 9 : 0];
    }
    kt_check(wrong == 0 && flips > 900 && flips < 1100,
             "hflip: default p 0.5 flips when kd_img_draw_flip says so", "%d wrong, %d flips",
             wrong, flips);
    kd_sample f = {3, 4, 3, KD_F32, NULL, 0};
    kd_sample_reserve(&f, 36 * sizeof(float));
    kd_status st = half.vt->apply(half.self, &f, &out, &rng);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "hflip") &&
                 contains(kd_last_error(), "u8"),
             "hflip: an f32 tensor is refused", "%s", kd_last_error());
    void *self = NULL;
    const kd_vtable_header *h;
    st = make_instance(KD_KIND_TRANSFORM, "hflip", "{\"p\": 1.5}", &h, &self);
    kt_check(st != KD_OK && !self && contains(kd_last_error(), "p"),
             "hflip: p 1.5 is refused by the schema", "%s", kd_last_error());
    free(in.data);
    free(f.data);
    free(out.data);
    free_transform(always);
    free_transform(never);
    free_transform(half);
}

/* torch's ToTensor + Normalize for the values 0..255 (f32 bit patterns), as
 * torchvision computes them: float(), div(255), sub_(mean), div_(std) with
 * mean and std as f32 tensors. */
static bool torch_normalize(int channels, const double *mean, const double *std,
                            uint32_t *bits /* [channels][256] */)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s -c 'import torch, struct\n"
             "x = torch.arange(256, dtype=torch.uint8).repeat(%d, 1).float().div(255)\n"
             "m = torch.tensor([%.17g, %.17g, %.17g][:%d], dtype=torch.float32).view(-1, 1)\n"
             "s = torch.tensor([%.17g, %.17g, %.17g][:%d], dtype=torch.float32).view(-1, 1)\n"
             "y = x.sub_(m).div_(s)\n"
             "print(\" \".join(\"%%08x\" %% struct.unpack(\"<I\", struct.pack(\"<f\", v))[0] "
             "for v in y.flatten().tolist()))' 2>/dev/null",
             KD_TORCH_PYTHON, channels, mean[0], mean[1], mean[2], channels, std[0], std[1],
             std[2], channels);
    FILE *p = popen(cmd, "r");
    if (!p)
        return false;
    int got = 0;
    while (got < 256 * channels && fscanf(p, "%8" SCNx32, &bits[got]) == 1)
        got++;
    return pclose(p) == 0 && got == 256 * channels;
}

static bool torch_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

static void test_to_tensor_normalize(void)
{
    transform to_tensor = make_transform("to_tensor", "{}");
    transform gray = make_transform("normalize", "{\"mean\": [0.2860], \"std\": [0.3530]}");
    transform rgb = make_transform("normalize", "{\"mean\": [0.4914, 0.4822, 0.4465], "
                                                "\"std\": [0.2470, 0.2435, 0.2616]}");
    if (!kt_check(to_tensor.self && gray.self && rgb.self, "to_tensor, normalize: create",
                  "%s", kd_last_error()))
        return;
    /* Every u8 value in each channel: a 16x16 image per channel. */
    kd_sample in = {16, 16, 3, KD_U8, NULL, 0}, mid = {0, 0, 0, KD_U8, NULL, 0},
              out = {0, 0, 0, KD_U8, NULL, 0};
    kd_sample_reserve(&in, 768);
    for (int p = 0; p < 256; p++)
        for (int k = 0; k < 3; k++)
            ((uint8_t *)in.data)[p * 3 + k] = (uint8_t)(p * 7 + k * 85);
    kd_rng rng = kd_rng_make(1, 1, 1);
    bool ok = to_tensor.vt->apply(to_tensor.self, &in, &out, &rng) == KD_OK &&
              out.dtype == KD_F32 && out.channels == 3 && out.height == 16 && rng.counter == 0;
    for (int k = 0; ok && k < 3; k++)
        for (int p = 0; p < 256; p++)
            ok &= ((float *)out.data)[k * 256 + p] ==
                  (float)((uint8_t *)in.data)[p * 3 + k] / 255.0f;
    kt_check(ok, "to_tensor: u8 HWC to f32 CHW, x / 255 in f32, no draws", "%s",
             kd_last_error());

    static const double mean3[3] = {0.4914, 0.4822, 0.4465}, std3[3] = {0.2470, 0.2435, 0.2616};
    kd_img_norm table;
    const float m3[3] = {0.4914f, 0.4822f, 0.4465f}, s3[3] = {0.2470f, 0.2435f, 0.2616f};
    kd_img_norm_init(&table, 3, m3, s3);
    float expect[768];
    kd_img_normalize(&table, in.data, 16, 16, expect);
    ok = rgb.vt->apply(rgb.self, &in, &out, &rng) == KD_OK && out.dtype == KD_F32 &&
         out.channels == 3 && memcmp(out.data, expect, sizeof expect) == 0;
    kt_check(ok, "normalize: u8 in one pass equals the kd_img_norm table", "%s",
             kd_last_error());
    ok = to_tensor.vt->apply(to_tensor.self, &in, &mid, &rng) == KD_OK &&
         rgb.vt->apply(rgb.self, &mid, &out, &rng) == KD_OK &&
         memcmp(out.data, expect, sizeof expect) == 0;
    kt_check(ok, "normalize: to_tensor then normalize on f32 is bit-identical", "%s",
             kd_last_error());

    if (!torch_available()) {
        kt_skip("normalize: bit-identical to torch", "torch is not importable by %s",
                KD_TORCH_PYTHON);
    } else {
        static const double mean1[3] = {0.2860, 0, 0}, std1[3] = {0.3530, 1, 1};
        uint32_t bits3[768], bits1[256];
        kd_sample ramp = {16, 16, 1, KD_U8, NULL, 0};
        kd_sample_reserve(&ramp, 256);
        for (int p = 0; p < 256; p++)
            ((uint8_t *)ramp.data)[p] = (uint8_t)p;
        int wrong = 0;
        bool ran = torch_normalize(3, mean3, std3, bits3) && torch_normalize(1, mean1, std1, bits1);
        if (ran && gray.vt->apply(gray.self, &ramp, &out, &rng) == KD_OK)
            for (int p = 0; p < 256; p++) {
                uint32_t b;
                memcpy(&b, (float *)out.data + p, 4);
                wrong += b != bits1[p];
            }
        for (int k = 0; ran && k < 3; k++)
            for (int p = 0; p < 256; p++) {
                uint8_t v = ((uint8_t *)in.data)[p * 3 + k];
                uint32_t b;
                memcpy(&b, &expect[k * 256 + p], 4);
                wrong += b != bits3[k * 256 + v];
            }
        kt_check(ran && wrong == 0,
                 "normalize: bit-identical to torch ToTensor + Normalize (1 and 3 channels)",
                 "torch ran %d, %d values differ", ran, wrong);
        free(ramp.data);
    }

    kd_status st = gray.vt->apply(gray.self, &in, &out, &rng);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "normalize") &&
                 contains(kd_last_error(), "1 values but the image has 3 channels"),
             "normalize: a channel count other than len(mean) is refused", "%s",
             kd_last_error());
    st = to_tensor.vt->apply(to_tensor.self, &mid, &out, &rng);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "to_tensor") &&
                 contains(kd_last_error(), "f32"),
             "to_tensor: an f32 tensor is refused", "%s", kd_last_error());
    void *self = NULL;
    const kd_vtable_header *h;
    st = make_instance(KD_KIND_TRANSFORM, "normalize", "{\"mean\": [0.5, 0.5], \"std\": [0.5]}",
                       &h, &self);
    kt_check(st == KD_ERR_INVALID && !self && contains(kd_last_error(), "mean has 2 values"),
             "normalize: mean and std of different lengths are refused", "%s",
             kd_last_error());
    st = make_instance(KD_KIND_TRANSFORM, "normalize", "{\"mean\": [0.5], \"std\": [0]}", &h,
                       &self);
    kt_check(st == KD_ERR_INVALID && !self && contains(kd_last_error(), "std"),
             "normalize: std 0 is refused", "%s", kd_last_error());
    free(in.data);
    free(mid.data);
    free(out.data);
    free_transform(to_tensor);
    free_transform(gray);
    free_transform(rgb);
}

/* ------------------------------------------------------------------ loader */

/* A dataset made up in the test: sample i is h x w x 1 with pixel (y, x) =
 * i * 7 + y * 5 + x * 3 (mod 256), label i % 10. fail_at makes that sample
 * an error; with vary, odd samples are one row taller. */
typedef struct synth {
    int64_t n;
    int h, w;
    int64_t fail_at;
    bool vary;
} synth;

static kd_status synth_info(void *self, kd_dataset_info *out)
{
    const synth *d = self;
    *out = (kd_dataset_info){d->n, d->vary ? 0 : d->h, d->vary ? 0 : d->w, 1, 10};
    return KD_OK;
}

static kd_status synth_get(void *self, int64_t i, kd_sample *s, int64_t *label)
{
    const synth *d = self;
    if (i == d->fail_at)
        return kd_error(KD_ERR_FORMAT, "synthetic: sample %" PRId64 " is corrupt", i);
    int h = d->h + (d->vary && i % 2);
    kd_status st = kd_sample_reserve(s, (size_t)h * (size_t)d->w);
    if (st != KD_OK)
        return st;
    s->height = h;
    s->width = d->w;
    s->channels = 1;
    s->dtype = KD_U8;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < d->w; x++)
            ((uint8_t *)s->data)[y * d->w + x] = (uint8_t)(i * 7 + y * 5 + x * 3);
    *label = i % 10;
    return KD_OK;
}

static const kd_dataset_vtable synth_vtable = {
    .header = {sizeof(kd_dataset_vtable), KD_KIND_DATASET},
    .info = synth_info,
    .get = synth_get,
};

/* The test pipeline: random_crop([4], padding 1) on 6x5 images, hflip,
 * normalize. */
static transform pipeline[3];
static const kd_transform_vtable *pipeline_vt[3];
static void *pipeline_self[3];

static bool make_pipeline(void)
{
    pipeline[0] = make_transform("random_crop", "{\"size\": [4], \"padding\": 1}");
    pipeline[1] = make_transform("hflip", "{}");
    pipeline[2] = make_transform("normalize", "{\"mean\": [0.5], \"std\": [0.25]}");
    for (int t = 0; t < 3; t++) {
        pipeline_vt[t] = pipeline[t].vt;
        pipeline_self[t] = pipeline[t].self;
        if (!pipeline[t].self)
            return false;
    }
    return true;
}

static kd_loader_config loader_config(synth *d, int64_t batch, int workers)
{
    kd_loader_config c;
    memset(&c, 0, sizeof c);
    c.dataset = &synth_vtable;
    c.dataset_self = d;
    c.label = "data.train";
    c.n_transforms = 3;
    c.transforms = pipeline_vt;
    c.transform_selves = pipeline_self;
    c.batch_size = batch;
    c.shuffle = true;
    c.workers = workers;
    c.prefetch = 2;
    c.seed = 1234;
    return c;
}

/* Everything one epoch delivered, batches concatenated. */
typedef struct epoch_run {
    int64_t n_batches, n_samples;
    int64_t sizes[256], numbers[256];
    float *images;
    int64_t *labels, *indices;
    kd_status st;
    char error[1024];
} epoch_run;

static void free_run(epoch_run *r)
{
    free(r->images);
    free(r->labels);
    free(r->indices);
    memset(r, 0, sizeof *r);
}

/* Runs epoch `epoch` from batch `first` through loader l (stopping at the
 * first error). */
static void run_epoch(kd_loader *l, int64_t epoch, int64_t first, epoch_run *r)
{
    memset(r, 0, sizeof *r);
    int64_t cap = kd_loader_samples_per_epoch(l);
    r->images = malloc((size_t)cap * 16 * sizeof(float));
    r->labels = malloc((size_t)cap * sizeof(int64_t));
    r->indices = malloc((size_t)cap * sizeof(int64_t));
    r->st = kd_loader_start(l, epoch, first);
    bool done = false;
    while (r->st == KD_OK && r->n_batches < 256) {
        kd_batch b;
        r->st = kd_loader_next(l, &b, &done);
        if (r->st != KD_OK || done)
            break;
        int64_t n = b.images->shape[0], per = kd_tensor_numel(b.images) / n;
        if (per != 16 || b.labels->shape[0] != n || b.indices->shape[0] != n ||
            r->n_samples + n > cap || b.images->scope || b.labels->scope) {
            r->st = kd_error(KD_ERR_INVALID, "batch %lld: %lld samples of %lld floats",
                             (long long)b.index, (long long)n, (long long)per);
            break;
        }
        memcpy(r->images + r->n_samples * 16, kd_tensor_data(b.images),
               (size_t)n * 16 * sizeof(float));
        memcpy(r->labels + r->n_samples, kd_tensor_data(b.labels), (size_t)n * sizeof(int64_t));
        memcpy(r->indices + r->n_samples, kd_tensor_data(b.indices),
               (size_t)n * sizeof(int64_t));
        r->sizes[r->n_batches] = n;
        r->numbers[r->n_batches++] = b.index;
        r->n_samples += n;
    }
    if (r->st != KD_OK)
        snprintf(r->error, sizeof r->error, "%s", kd_last_error());
}

static bool same_runs(const epoch_run *a, const epoch_run *b)
{
    return a->st == KD_OK && b->st == KD_OK && a->n_batches == b->n_batches &&
           a->n_samples == b->n_samples &&
           !memcmp(a->sizes, b->sizes, sizeof a->sizes) &&
           !memcmp(a->numbers, b->numbers, sizeof a->numbers) &&
           !memcmp(a->images, b->images, (size_t)a->n_samples * 16 * sizeof(float)) &&
           !memcmp(a->labels, b->labels, (size_t)a->n_samples * sizeof(int64_t)) &&
           !memcmp(a->indices, b->indices, (size_t)a->n_samples * sizeof(int64_t));
}

/* Epoch `epoch` of the config, on a fresh loader. */
static void run_config(const kd_loader_config *c, int64_t epoch, int64_t first, epoch_run *r)
{
    kd_loader *l = NULL;
    kd_status st = kd_loader_new(c, &l);
    if (st != KD_OK) {
        memset(r, 0, sizeof *r);
        r->st = st;
        snprintf(r->error, sizeof r->error, "%s", kd_last_error());
        return;
    }
    run_epoch(l, epoch, first, r);
    kd_loader_free(l);
}

/* Sample idx of epoch e, transformed as loader.h documents. */
static bool expected_sample(synth *d, uint64_t seed, int64_t epoch, int64_t idx, float *out)
{
    kd_sample a = {0, 0, 0, KD_U8, NULL, 0}, b = {0, 0, 0, KD_U8, NULL, 0};
    int64_t label;
    kd_rng rng = kd_rng_make(seed, KD_LOADER_STREAM_AUGMENT << 32 | (uint64_t)epoch,
                             (uint64_t)idx);
    bool ok = synth_get(d, idx, &a, &label) == KD_OK &&
              pipeline_vt[0]->apply(pipeline_self[0], &a, &b, &rng) == KD_OK &&
              pipeline_vt[1]->apply(pipeline_self[1], &b, &a, &rng) == KD_OK &&
              pipeline_vt[2]->apply(pipeline_self[2], &a, &b, &rng) == KD_OK;
    if (ok)
        memcpy(out, b.data, 16 * sizeof(float));
    free(a.data);
    free(b.data);
    return ok;
}

static void test_loader_determinism(void)
{
    synth d = {103, 6, 5, -1, false};
    kd_loader_config c = loader_config(&d, 10, 0);
    epoch_run runs[3];
    const int workers[3] = {0, 1, 3};
    for (int i = 0; i < 3; i++) {
        c.workers = workers[i];
        c.prefetch = 1 + i;
        run_config(&c, 2, 0, &runs[i]);
    }
    kt_check(runs[0].st == KD_OK && runs[0].n_batches == 11 && runs[0].sizes[10] == 3,
             "loader: 103 samples in batches of 10 make 11, the last of 3", "%s; %lld batches",
             runs[0].error, (long long)runs[0].n_batches);
    kt_check(same_runs(&runs[0], &runs[1]) && same_runs(&runs[0], &runs[2]),
             "loader: batches are identical with 0, 1 and 3 workers", "%s %s", runs[1].error,
             runs[2].error);

    /* The documented keys: Fisher-Yates from the shuffle stream, each
     * sample's transforms from its augment stream. */
    int64_t order[103];
    kd_rng rng = kd_rng_make(1234, KD_LOADER_STREAM_SHUFFLE << 32 | 2, 0);
    for (int64_t i = 0; i < 103; i++)
        order[i] = i;
    for (int64_t i = 102; i > 0; i--) {
        int64_t j = (int64_t)kd_rng_below(&rng, (uint64_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    bool order_ok = runs[0].n_samples == 103 && !memcmp(order, runs[0].indices, sizeof order);
    int wrong = 0;
    for (int64_t i = 0; order_ok && i < 103; i++) {
        float expect[16];
        int64_t idx = runs[0].indices[i];
        wrong += !expected_sample(&d, 1234, 2, idx, expect) ||
                 memcmp(expect, runs[0].images + i * 16, sizeof expect) != 0 ||
                 runs[0].labels[i] != idx % 10;
    }
    kt_check(order_ok && wrong == 0,
             "loader: order and augmentation follow the documented rng keys",
             "order %s, %d samples differ", order_ok ? "ok" : "differs", wrong);

    /* Each epoch a permutation of its own. */
    epoch_run next;
    c.workers = 2;
    run_config(&c, 3, 0, &next);
    bool seen[103] = {false}, once = next.n_samples == 103;
    for (int64_t i = 0; once && i < 103; i++) {
        int64_t idx = next.indices[i];
        once = idx >= 0 && idx < 103 && !seen[idx];
        if (once)
            seen[idx] = true;
    }
    kt_check(once && memcmp(next.indices, runs[0].indices, sizeof order) != 0,
             "loader: another epoch is another permutation, each sample once", "%s",
             next.error);

    /* Resume: batches 4.. of the same epoch on a new loader. */
    epoch_run resumed;
    run_config(&c, 2, 4, &resumed);
    bool same = resumed.st == KD_OK && resumed.n_batches == 7 && resumed.numbers[0] == 4 &&
                resumed.n_samples == 63 &&
                !memcmp(resumed.indices, runs[0].indices + 40, 63 * sizeof(int64_t)) &&
                !memcmp(resumed.images, runs[0].images + 40 * 16, 63 * 16 * sizeof(float));
    kt_check(same, "loader: start(epoch, 4) yields exactly batches 4.. of the epoch",
             "%s; %lld batches", resumed.error, (long long)resumed.n_batches);

    /* The same loader restarted mid-epoch, then from the start. */
    kd_loader *l = NULL;
    epoch_run again;
    bool restart_ok = kd_loader_new(&c, &l) == KD_OK;
    if (restart_ok) {
        kd_batch b;
        bool done;
        restart_ok = kd_loader_start(l, 7, 0) == KD_OK && kd_loader_next(l, &b, &done) == KD_OK;
        run_epoch(l, 2, 0, &again);
        restart_ok &= same_runs(&again, &runs[0]);
        free_run(&again);
        run_epoch(l, 2, 11, &again);
        restart_ok &= again.st == KD_OK && again.n_batches == 0;
        free_run(&again);
    }
    kd_loader_free(l);
    kt_check(restart_ok, "loader: a restart abandons the old epoch; first batch = end is empty",
             "%s", kd_last_error());

    for (int i = 0; i < 3; i++)
        free_run(&runs[i]);
    free_run(&next);
    free_run(&resumed);
}

static void test_loader_sizes(void)
{
    synth d = {103, 6, 5, -1, false};
    kd_loader_config c = loader_config(&d, 10, 2);
    c.shuffle = false;
    epoch_run r;
    c.drop_last = true;
    run_config(&c, 0, 0, &r);
    bool ok = r.st == KD_OK && r.n_batches == 10 && r.n_samples == 100;
    for (int64_t i = 0; ok && i < 100; i++)
        ok = r.indices[i] == i;
    kt_check(ok, "loader: drop_last skips the ragged last batch (10 of 10, in order)",
             "%s; %lld batches", r.error, (long long)r.n_batches);
    free_run(&r);
    c.drop_last = false;
    run_config(&c, 0, 0, &r);
    kt_check(r.st == KD_OK && r.n_batches == 11 && r.sizes[10] == 3 &&
                 r.indices[102] == 102,
             "loader: without drop_last the last batch has the 3 left", "%s", r.error);
    free_run(&r);

    c.shuffle = true;
    c.subset = 25;
    run_config(&c, 1, 0, &r);
    ok = r.st == KD_OK && r.n_batches == 3 && r.n_samples == 25 && r.sizes[2] == 5;
    int64_t seen = 0;
    for (int64_t i = 0; ok && i < 25; i++) {
        ok = r.indices[i] >= 0 && r.indices[i] < 25 && !(seen & (1ll << r.indices[i]));
        seen |= 1ll << r.indices[i];
    }
    kt_check(ok, "loader: subset 25 shuffles the first 25 samples only", "%s", r.error);
    free_run(&r);

    kd_loader *l = NULL;
    c.subset = 200;
    kd_status st = kd_loader_new(&c, &l);
    kt_check(st == KD_ERR_INVALID && !l && contains(kd_last_error(), "data.train: subset 200"),
             "loader: a subset larger than the dataset is refused", "%s", kd_last_error());
    c.subset = 0;
    c.batch_size = 0;
    st = kd_loader_new(&c, &l);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "batch_size"),
             "loader: batch_size 0 is refused", "%s", kd_last_error());
    c.batch_size = 200;
    c.drop_last = true;
    st = kd_loader_new(&c, &l);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "drop_last"),
             "loader: drop_last with no full batch is refused", "%s", kd_last_error());
    c.drop_last = false;
    c.prefetch = 0;
    st = kd_loader_new(&c, &l);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "prefetch"),
             "loader: prefetch 0 is refused", "%s", kd_last_error());
    c.prefetch = 2;
    st = kd_loader_new(&c, &l);
    kd_batch b;
    bool done;
    kt_check(st == KD_OK && kd_loader_next(l, &b, &done) == KD_ERR_STATE &&
                 kd_loader_start(l, 0, 2) == KD_ERR_INVALID &&
                 kd_loader_batches_per_epoch(l) == 1,
             "loader: next before start, and a first batch past the end, are refused", "%s",
             kd_last_error());
    kd_loader_free(l);
}

static void test_loader_errors(void)
{
    /* A corrupt sample 37: batch 3 of an unshuffled epoch fails. */
    synth bad = {103, 6, 5, 37, false};
    kd_loader_config c = loader_config(&bad, 10, 2);
    c.shuffle = false;
    for (int workers = 0; workers <= 2; workers += 2) {
        c.workers = workers;
        kd_loader *l = NULL;
        kd_status st = kd_loader_new(&c, &l);
        epoch_run r = {0};
        if (st == KD_OK)
            run_epoch(l, 0, 0, &r);
        kd_batch b;
        bool done = false, sticky = false;
        if (st == KD_OK) {
            sticky = kd_loader_next(l, &b, &done) == KD_ERR_FORMAT &&
                     contains(kd_last_error(), "sample 37 is corrupt");
            /* Past the broken batch the epoch goes on. */
            sticky &= kd_loader_start(l, 0, 4) == KD_OK &&
                      kd_loader_next(l, &b, &done) == KD_OK && b.index == 4;
        }
        char name[128];
        snprintf(name, sizeof name,
                 "loader: a dataset error reaches next() with %d workers, after 3 batches",
                 workers);
        kt_check(st == KD_OK && r.st == KD_ERR_FORMAT && r.n_batches == 3 &&
                     contains(r.error, "data.train: synthetic: sample 37 is corrupt") &&
                     sticky,
                 name, "%s / %s", r.error, kd_last_error());
        free_run(&r);
        kd_loader_free(l);
    }

    synth d = {30, 6, 5, -1, false};
    c = loader_config(&d, 8, 2);
    c.n_transforms = 2; /* random_crop and hflip: still u8 */
    epoch_run r;
    run_config(&c, 0, 0, &r);
    kt_check(r.st == KD_ERR_INVALID &&
                 contains(r.error, "data.train.transforms: the last transform must produce "
                                   "a tensor (to_tensor or normalize)"),
             "loader: a list ending on u8 is refused", "%s", r.error);
    free_run(&r);

    synth vary = {30, 6, 5, -1, true};
    transform to_tensor = make_transform("to_tensor", "{}");
    c = loader_config(&vary, 8, 1);
    c.n_transforms = 1;
    c.transforms = (const kd_transform_vtable *const[]){to_tensor.vt};
    c.transform_selves = (void *const[]){to_tensor.self};
    run_config(&c, 0, 0, &r);
    kt_check(r.st == KD_ERR_INVALID && contains(r.error, "data.train.transforms") &&
                 contains(r.error, "same shape"),
             "loader: samples of different shapes in a batch are refused", "%s", r.error);
    free_run(&r);

    transform wide = make_transform("normalize", "{\"mean\": [0, 0, 0], \"std\": [1, 1, 1]}");
    c.transforms = (const kd_transform_vtable *const[]){wide.vt};
    c.transform_selves = (void *const[]){wide.self};
    c.workers = 0;
    run_config(&c, 0, 0, &r);
    kt_check(r.st == KD_ERR_INVALID && contains(r.error, "data.train.transforms[0] on sample") &&
                 contains(r.error, "normalize: mean and std have 3 values"),
             "loader: a transform error names its place in the list", "%s", r.error);
    free_run(&r);
    free_transform(to_tensor);
    free_transform(wide);
}

static void test_loader_shutdown(void)
{
    synth d = {5000, 6, 5, -1, false};
    kd_loader_config c = loader_config(&d, 16, 3);
    c.prefetch = 4;
    bool ok = true;
    for (int round = 0; round < 20 && ok; round++) {
        kd_loader *l = NULL;
        ok = kd_loader_new(&c, &l) == KD_OK && kd_loader_start(l, (int64_t)round, 0) == KD_OK;
        kd_batch b;
        bool done;
        for (int i = 0; ok && i < round % 4; i++)
            ok = kd_loader_next(l, &b, &done) == KD_OK && !done;
        kd_loader_free(l);
    }
    kt_check(ok, "loader: freed mid-epoch with 3 workers building, 20 times", "%s",
             kd_last_error());

    /* Built on the calling thread inside a step scope: still the loader's. */
    c.workers = 0;
    kd_loader *l = NULL;
    kd_batch b;
    bool done;
    ok = kd_loader_new(&c, &l) == KD_OK && kd_loader_start(l, 0, 0) == KD_OK &&
         kd_scope_begin() == KD_OK;
    ok = ok && kd_loader_next(l, &b, &done) == KD_OK;
    kd_scope_end();
    ok = ok && !b.images->scope && b.images->shape[0] == 16 && b.labels->shape[0] == 16;
    kd_loader_free(l);
    kt_check(ok, "loader: a batch built under a step scope is not freed by it", "%s",
             kd_last_error());
}

/* ------------------------------------------------------------- throughput */

static void test_throughput(void)
{
#ifndef KD_HAVE_ZLIB
    kt_skip("loader: fashion-mnist throughput", "built without zlib");
    return;
#endif
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_skip("loader: fashion-mnist throughput", "%s is absent", FMNIST_DIR);
        return;
    }
    dataset d;
    if (!kt_check(open_idx(FMNIST_DIR "/train-images-idx3-ubyte.gz",
                           FMNIST_DIR "/train-labels-idx1-ubyte.gz", 10, &d) == KD_OK,
                  "loader: fashion-mnist train loads", "%s", kd_last_error()))
        return;
    transform t[3] = {make_transform("random_crop", "{\"size\": [28], \"padding\": 2}"),
                      make_transform("hflip", "{}"),
                      make_transform("normalize", "{\"mean\": [0.2860], \"std\": [0.3530]}")};
    const kd_transform_vtable *vt[3] = {t[0].vt, t[1].vt, t[2].vt};
    void *selves[3] = {t[0].self, t[1].self, t[2].self};
    kd_loader_config c;
    memset(&c, 0, sizeof c);
    c.dataset = d.vt;
    c.dataset_self = d.self;
    c.label = "data.train";
    c.n_transforms = 3;
    c.transforms = vt;
    c.transform_selves = selves;
    c.batch_size = 128;
    c.shuffle = true;
    c.prefetch = 4;
    c.seed = 7;
    const int workers[2] = {2, 0};
    for (int k = 0; k < 2; k++) {
        c.workers = workers[k];
        kd_loader *l = NULL;
        kd_status st = kd_loader_new(&c, &l);
        int64_t samples = 0, batches = 0;
        double t0 = now();
        if (st == KD_OK)
            st = kd_loader_start(l, 0, 0);
        bool done = false;
        while (st == KD_OK) {
            kd_batch b;
            st = kd_loader_next(l, &b, &done);
            if (st != KD_OK || done)
                break;
            samples += b.images->shape[0];
            batches++;
        }
        double secs = now() - t0;
        kd_loader_free(l);
        char name[128];
        snprintf(name, sizeof name,
                 "loader: a fashion-mnist epoch with %d workers: 469 batches, 60000 samples",
                 workers[k]);
        if (kt_check(st == KD_OK && batches == 469 && samples == 60000, name, "%s",
                     kd_last_error()))
            printf("info loader: fashion-mnist random_crop(28, padding 2) + hflip + "
                   "normalize, batch 128, %d workers: %.0f images/s (%.3f s per epoch)\n",
                   workers[k], (double)samples / secs, secs);
    }
    for (int i = 0; i < 3; i++)
        free_transform(t[i]);
    d.vt->destroy(d.self);
}

/* Data parallel: shards k of 3 of each global batch, concatenated in
 * rank order, are the unsharded batch (samples, transforms and all), in
 * parts differing by one sample at most; a last batch smaller than the
 * world is dropped; batch_size below the world is refused. */
static void test_loader_shards(void)
{
    const int64_t lengths[2] = {25, 21}; /* last batch 5 (kept), 1 (dropped) */
    for (int k = 0; k < 2; k++) {
        synth d = {lengths[k], 6, 5, -1, false};
        kd_loader_config c = loader_config(&d, 10, k); /* 0 and 1 workers */
        epoch_run whole, parts[3];
        run_config(&c, 1, 0, &whole);
        bool ok = whole.st == KD_OK;
        int64_t batches = lengths[k] == 25 ? 3 : 2;
        for (int r = 0; r < 3; r++) {
            c.shard = r;
            c.shards = 3;
            run_config(&c, 1, 0, &parts[r]);
            ok &= parts[r].st == KD_OK && parts[r].n_batches == batches;
        }
        int64_t at = 0, worst_spread = 0;
        for (int64_t b = 0; ok && b < batches; b++) {
            int64_t lo = INT64_MAX, hi = 0, before[3] = {0, 0, 0};
            for (int r = 0; r < 3; r++) {
                for (int64_t j = 0; j < b; j++)
                    before[r] += parts[r].sizes[j];
                int64_t n = parts[r].sizes[b];
                lo = n < lo ? n : lo;
                hi = n > hi ? n : hi;
                ok &= !memcmp(parts[r].indices + before[r], whole.indices + at,
                              (size_t)n * sizeof(int64_t)) &&
                      !memcmp(parts[r].images + before[r] * 16, whole.images + at * 16,
                              (size_t)n * 16 * sizeof(float));
                at += n;
            }
            worst_spread = hi - lo > worst_spread ? hi - lo : worst_spread;
        }
        kt_check(ok && worst_spread <= 1 && at == (lengths[k] == 25 ? 25 : 20),
                 lengths[k] == 25 ? "loader: 3 shards of 25 in batches of 10 are the batches"
                                  : "loader: 3 shards of 21 drop the last batch of 1",
                 "%s %s; %lld samples, parts differ by %lld", whole.error, parts[0].error,
                 (long long)at, (long long)worst_spread);
        free_run(&whole);
        for (int r = 0; r < 3; r++)
            free_run(&parts[r]);
    }
    synth d = {25, 6, 5, -1, false};
    kd_loader_config c = loader_config(&d, 2, 0);
    c.shards = 3;
    kd_loader *l = NULL;
    kd_status st = kd_loader_new(&c, &l);
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), "batch_size 2 is the global batch"),
             "loader: a global batch smaller than the world is refused", "%s",
             kd_last_error());
    kd_loader_free(l);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        kt_fail("setup", "mkdtemp: %s", strerror(errno));
        return kt_finish();
    }
    test_idx_fashion_mnist();
    test_idx_synthetic();
    test_random_crop();
    test_hflip();
    test_to_tensor_normalize();
    if (kt_check(make_pipeline(), "loader: the test pipeline creates", "%s", kd_last_error())) {
        test_loader_determinism();
        test_loader_sizes();
        test_loader_errors();
        test_loader_shutdown();
        test_loader_shards();
    }
    for (int t = 0; t < 3; t++)
        free_transform(pipeline[t]);
    test_throughput();
    kt_plugins_close();
    kt_remove_tree(tmp_dir);
    return kt_finish();
}
