/* Transform "randaugment": timm's RandAugment on one u8 HWC sample, on the
 * kernels of rand_augment.h. The draws come from the sample's rng, keyed by
 * (seed, epoch, sample index), in the order rand_augment.h documents; the
 * instance is read-only after create(), so apply() is thread-safe. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "rand_augment.h"

typedef struct randaugment {
    kd_ra_config cfg;
    int n_fill; /* 1: img_mean[0] for every channel */
} randaugment;

static kd_status ra_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    randaugment r;
    memset(&r, 0, sizeof r);
    kd_status st = kd_ra_parse(kd_params_string(p, "config"), &r.cfg);
    if (st != KD_OK)
        return st;
    r.cfg.translate_pct = kd_params_number(p, "translate_pct");
    const char *interp = kd_params_string(p, "interpolation");
    r.cfg.filter = strcmp(interp, "nearest") == 0    ? KD_PIL_NEAREST
                   : strcmp(interp, "bilinear") == 0 ? KD_PIL_BILINEAR
                   : strcmp(interp, "bicubic") == 0  ? KD_PIL_BICUBIC
                                                     : KD_RA_RANDOM_FILTER;
    r.n_fill = kd_params_array_length(p, "img_mean");
    if (r.n_fill != 1 && r.n_fill != KD_PIL_MAX_CHANNELS)
        return kd_error(KD_ERR_INVALID,
                        "randaugment: img_mean takes 1 value or %d (one per channel), got %d",
                        KD_PIL_MAX_CHANNELS, r.n_fill);
    for (int c = 0; c < KD_PIL_MAX_CHANNELS; c++) {
        double v = kd_params_array_number(p, "img_mean", r.n_fill == 1 ? 0 : c);
        if (v < 0 || v > 255)
            return kd_error(KD_ERR_INVALID, "randaugment: img_mean value %g is outside [0, 255]",
                            v);
        r.cfg.fill[c] = (uint8_t)v;
    }
    randaugment *out = malloc(sizeof *out);
    if (!out)
        return kd_error(KD_ERR_NOMEM, "randaugment: out of memory");
    *out = r;
    *self = out;
    return KD_OK;
}

static void ra_destroy(void *self) { free(self); }

static kd_status ra_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    const randaugment *r = self;
    if (in->dtype != KD_U8)
        return kd_error(KD_ERR_INVALID,
                        "randaugment: needs a u8 HWC image but got a %s tensor; put it before "
                        "to_tensor and normalize",
                        kd_dtype_name(in->dtype));
    if (in->channels != 1 && in->channels != 3)
        return kd_error(KD_ERR_INVALID,
                        "randaugment: images with 1 or 3 channels (PIL L or RGB), got %d",
                        in->channels);
    if (in->height < 1 || in->width < 1)
        return kd_error(KD_ERR_INVALID, "randaugment: an empty %dx%d image", in->height,
                        in->width);
    if (r->n_fill != 1 && r->n_fill != in->channels)
        return kd_error(KD_ERR_INVALID,
                        "randaugment: img_mean has %d values for a %d-channel image", r->n_fill,
                        in->channels);
    size_t n = (size_t)in->height * (size_t)in->width * (size_t)in->channels;
    out->height = in->height;
    out->width = in->width;
    out->channels = in->channels;
    out->dtype = KD_U8;
    kd_status st = kd_sample_reserve(out, n);
    if (st != KD_OK)
        return st;
    kd_ra_plan plan;
    kd_ra_draw(&r->cfg, rng, &plan);
    uint8_t *buffers = malloc(3 * n);
    if (!buffers)
        return kd_error(KD_ERR_NOMEM, "randaugment: out of memory for a %dx%d image",
                        in->height, in->width);
    /* ping-pong between two buffers; the third is the ops' scratch */
    kd_pil_image cur = {in->height, in->width, in->channels, in->data};
    uint8_t *next = buffers, *spare = buffers + n, *scratch = buffers + 2 * n;
    for (int i = 0; st == KD_OK && i < plan.n; i++) {
        if (!plan.steps[i].applied)
            continue;
        st = kd_ra_apply_step(&r->cfg, &plan.steps[i], &cur, next, scratch);
        uint8_t *done = next;
        next = cur.data == in->data ? spare : cur.data;
        cur.data = done;
    }
    if (st == KD_OK)
        memcpy(out->data, cur.data, n);
    free(buffers);
    return st;
}

static const kd_transform_vtable ra_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, ra_create, ra_destroy, ra_apply};

static const kd_plugin_provider providers[] = {
    {KD_KIND_TRANSFORM, "randaugment", &ra_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "randaugment", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
