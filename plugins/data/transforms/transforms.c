/* Per-sample transform providers on the kernels of image_transforms.h:
 * random_crop, hflip (u8 HWC in, u8 HWC out), to_tensor (u8 HWC to f32
 * CHW) and normalize (u8 HWC or f32 CHW in, f32 CHW out).
 *
 * Randomness: each apply() draws from the rng it is handed, which the
 * loader keys per sample and passes through the list in order, so the
 * draws of a list are those of its transforms one after the other:
 *   random_crop  kd_img_draw_crop: top, then left
 *   hflip        kd_img_draw_flip: one kd_rng_uniform
 *   to_tensor, normalize: none.
 * Instances are read-only after create(), so apply() is thread-safe. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "image_transforms.h"

/* Sizes out for an h x w x c image of dtype (HWC for u8, CHW for f32). */
static kd_status shape_out(kd_sample *out, int h, int w, int c, kd_dtype dtype)
{
    size_t elem = dtype == KD_F32 ? sizeof(float) : 1;
    out->height = h;
    out->width = w;
    out->channels = c;
    out->dtype = dtype;
    return kd_sample_reserve(out, (size_t)h * (size_t)w * (size_t)c * elem);
}

static kd_status need_u8(const char *provider, const kd_sample *in)
{
    if (in->dtype != KD_U8)
        return kd_error(KD_ERR_INVALID,
                        "%s: needs a u8 HWC image but got a %s tensor; put it before "
                        "to_tensor and normalize",
                        provider, kd_dtype_name(in->dtype));
    return KD_OK;
}

static void free_instance(void *self) { free(self); }

/* ------------------------------------------------------------ random_crop */

typedef struct random_crop {
    int height, width, padding;
} random_crop;

static kd_status crop_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    int n = kd_params_array_length(p, "size");
    if (n != 1 && n != 2)
        return kd_error(KD_ERR_INVALID,
                        "random_crop: size must be [side] or [height, width], got %d values",
                        n);
    int64_t h = (int64_t)kd_params_array_number(p, "size", 0);
    int64_t w = (int64_t)kd_params_array_number(p, "size", n - 1);
    int64_t pad = kd_params_integer(p, "padding");
    if (h < 1 || w < 1 || h > INT_MAX / 2 || w > INT_MAX / 2)
        return kd_error(KD_ERR_INVALID,
                        "random_crop: size [%lld, %lld] must be positive and below %d",
                        (long long)h, (long long)w, INT_MAX / 2);
    if (pad > INT_MAX / 4)
        return kd_error(KD_ERR_INVALID, "random_crop: padding %lld is too large",
                        (long long)pad);
    random_crop *c = malloc(sizeof *c);
    if (!c)
        return kd_error(KD_ERR_NOMEM, "random_crop: out of memory");
    c->height = (int)h;
    c->width = (int)w;
    c->padding = (int)pad;
    *self = c;
    return KD_OK;
}

static kd_status crop_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    const random_crop *c = self;
    kd_status st = need_u8("random_crop", in);
    if (st != KD_OK)
        return st;
    int64_t ph = (int64_t)in->height + 2 * (int64_t)c->padding;
    int64_t pw = (int64_t)in->width + 2 * (int64_t)c->padding;
    if (c->height > ph || c->width > pw)
        return kd_error(KD_ERR_INVALID,
                        "random_crop: a %dx%d window is larger than the %dx%d image padded "
                        "by %d (%lldx%lld)",
                        c->height, c->width, in->height, in->width, c->padding,
                        (long long)ph, (long long)pw);
    kd_img_aug aug = {0, 0, false};
    st = kd_img_draw_crop(rng, in->height, in->width, c->padding, c->height, c->width, &aug);
    if (st != KD_OK)
        return st;
    st = shape_out(out, c->height, c->width, in->channels, KD_U8);
    if (st != KD_OK)
        return st;
    return kd_img_apply_aug(in->data, in->height, in->width, in->channels, c->padding,
                            out->data, c->height, c->width, &aug);
}

/* ------------------------------------------------------------------ hflip */

typedef struct hflip {
    double p;
} hflip;

static kd_status flip_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    hflip *f = malloc(sizeof *f);
    if (!f)
        return kd_error(KD_ERR_NOMEM, "hflip: out of memory");
    f->p = kd_params_number(args->params, "p");
    *self = f;
    return KD_OK;
}

static kd_status flip_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    const hflip *f = self;
    kd_status st = need_u8("hflip", in);
    if (st == KD_OK)
        st = shape_out(out, in->height, in->width, in->channels, KD_U8);
    if (st != KD_OK)
        return st;
    kd_img_aug aug = {0, 0, kd_img_draw_flip(rng, f->p)};
    if (!aug.flip) {
        memcpy(out->data, in->data, (size_t)in->height * (size_t)in->width *
                                        (size_t)in->channels);
        return KD_OK;
    }
    return kd_img_apply_aug(in->data, in->height, in->width, in->channels, 0, out->data,
                            in->height, in->width, &aug);
}

/* ------------------------------------------------------- u8 HWC to f32 CHW */

static kd_status check_channels(const char *provider, const kd_sample *in, int expected)
{
    if (in->channels < 1 || in->channels > KD_IMG_MAX_CHANNELS)
        return kd_error(KD_ERR_INVALID, "%s: an image with %d channels; 1 to %d are supported",
                        provider, in->channels, KD_IMG_MAX_CHANNELS);
    if (expected && in->channels != expected)
        return kd_error(KD_ERR_INVALID,
                        "%s: mean and std have %d values but the image has %d channel%s",
                        provider, expected, in->channels, in->channels == 1 ? "" : "s");
    return KD_OK;
}

/* to_tensor is normalize with mean 0 and std 1 (x / 255, then exact
 * no-ops), one table per channel count. */
typedef struct to_tensor {
    kd_img_norm by_channels[KD_IMG_MAX_CHANNELS];
} to_tensor;

static kd_status to_tensor_create(const kd_create_args *args, void **self)
{
    (void)args;
    *self = NULL;
    to_tensor *t = malloc(sizeof *t);
    if (!t)
        return kd_error(KD_ERR_NOMEM, "to_tensor: out of memory");
    static const float zero[KD_IMG_MAX_CHANNELS] = {0}, one[KD_IMG_MAX_CHANNELS] = {1, 1, 1, 1};
    for (int c = 1; c <= KD_IMG_MAX_CHANNELS; c++)
        kd_img_norm_init(&t->by_channels[c - 1], c, zero, one);
    *self = t;
    return KD_OK;
}

static kd_status to_tensor_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    (void)rng;
    const to_tensor *t = self;
    if (in->dtype != KD_U8)
        return kd_error(KD_ERR_INVALID,
                        "to_tensor: the sample is already a %s tensor; to_tensor takes u8 "
                        "HWC images",
                        kd_dtype_name(in->dtype));
    kd_status st = check_channels("to_tensor", in, 0);
    if (st == KD_OK)
        st = shape_out(out, in->height, in->width, in->channels, KD_F32);
    if (st != KD_OK)
        return st;
    kd_img_normalize(&t->by_channels[in->channels - 1], in->data, in->height, in->width,
                     out->data);
    return KD_OK;
}

/* --------------------------------------------------------------- normalize */

typedef struct normalize {
    float mean[KD_IMG_MAX_CHANNELS], std[KD_IMG_MAX_CHANNELS];
    kd_img_norm table; /* the u8 path: conversion and normalisation at once */
} normalize;

static kd_status normalize_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    int n = kd_params_array_length(p, "mean"), ns = kd_params_array_length(p, "std");
    if (n != ns)
        return kd_error(KD_ERR_INVALID, "normalize: mean has %d values but std has %d", n, ns);
    if (n < 1 || n > KD_IMG_MAX_CHANNELS)
        return kd_error(KD_ERR_INVALID,
                        "normalize: mean and std need one value per channel (1 to %d), got %d",
                        KD_IMG_MAX_CHANNELS, n);
    normalize *z = malloc(sizeof *z);
    if (!z)
        return kd_error(KD_ERR_NOMEM, "normalize: out of memory");
    for (int c = 0; c < n; c++) {
        z->mean[c] = (float)kd_params_array_number(p, "mean", c);
        z->std[c] = (float)kd_params_array_number(p, "std", c);
    }
    kd_status st = kd_img_norm_init(&z->table, n, z->mean, z->std);
    if (st != KD_OK) {
        free(z);
        return st;
    }
    *self = z;
    return KD_OK;
}

static kd_status normalize_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    (void)rng;
    const normalize *z = self;
    if (in->dtype != KD_U8 && in->dtype != KD_F32)
        return kd_error(KD_ERR_INVALID, "normalize: takes u8 HWC or f32 CHW, got %s",
                        kd_dtype_name(in->dtype));
    kd_status st = check_channels("normalize", in, z->table.channels);
    if (st == KD_OK)
        st = shape_out(out, in->height, in->width, in->channels, KD_F32);
    if (st != KD_OK)
        return st;
    if (in->dtype == KD_U8) {
        kd_img_normalize(&z->table, in->data, in->height, in->width, out->data);
        return KD_OK;
    }
    size_t plane = (size_t)in->height * (size_t)in->width;
    const float *src = in->data;
    float *dst = out->data;
    for (int c = 0; c < in->channels; c++) {
        /* Two f32 roundings, subtract then divide, as torch does. */
        float m = z->mean[c], s = z->std[c];
        const float *x = src + (size_t)c * plane;
        float *y = dst + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++)
            y[i] = (x[i] - m) / s;
    }
    return KD_OK;
}

/* ------------------------------------------------------------------ entry */

static const kd_transform_vtable crop_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, crop_create, free_instance, crop_apply};
static const kd_transform_vtable flip_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, flip_create, free_instance, flip_apply};
static const kd_transform_vtable to_tensor_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, to_tensor_create, free_instance,
    to_tensor_apply};
static const kd_transform_vtable normalize_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, normalize_create, free_instance,
    normalize_apply};

static const kd_plugin_provider providers[] = {
    {KD_KIND_TRANSFORM, "random_crop", &crop_vtable.header, NULL},
    {KD_KIND_TRANSFORM, "hflip", &flip_vtable.header, NULL},
    {KD_KIND_TRANSFORM, "to_tensor", &to_tensor_vtable.header, NULL},
    {KD_KIND_TRANSFORM, "normalize", &normalize_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "transforms", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 4);
    return KD_OK;
}
