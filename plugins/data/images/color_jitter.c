/* Transform provider color_jitter: torchvision's ColorJitter(brightness,
 * contrast, saturation, hue) with Pillow's arithmetic (color.h), on u8 HWC
 * images with 1 or 3 channels. Draws as kd_jitter_sample documents. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

#include "color.h"
#include "images_plugin.h"

static kd_status jitter_create(const kd_create_args *args, void **self)
{
    *self = NULL;
    const kd_params *p = args->params;
    kd_jitter_config *c = malloc(sizeof *c);
    if (!c)
        return kd_error(KD_ERR_NOMEM, "color_jitter: out of memory");
    /* torchvision's _check_input: v gives [max(0, 1 - v), 1 + v]; hue h
     * gives [-h, h] */
    float *ranges[3] = {c->brightness, c->contrast, c->saturation};
    const char *keys[3] = {"brightness", "contrast", "saturation"};
    for (int k = 0; k < 3; k++) {
        double v = kd_params_number(p, keys[k]);
        ranges[k][0] = (float)(v < 1 ? 1 - v : 0);
        ranges[k][1] = (float)(1 + v);
    }
    double h = kd_params_number(p, "hue");
    c->hue[0] = (float)-h;
    c->hue[1] = (float)h;
    *self = c;
    return KD_OK;
}

static void jitter_destroy(void *self) { free(self); }

static kd_status jitter_apply(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng)
{
    const kd_jitter_config *c = self;
    if (in->dtype != KD_U8 || (in->channels != 1 && in->channels != 3))
        return kd_error(KD_ERR_INVALID,
                        "color_jitter: needs a u8 HWC image with 1 or 3 channels, got %s with "
                        "%d; put it before to_tensor and normalize",
                        kd_dtype_name(in->dtype), in->channels);
    size_t pixels = (size_t)in->height * (size_t)in->width;
    kd_status st = kd_sample_reserve(out, pixels * (size_t)in->channels);
    if (st != KD_OK)
        return kd_error_wrap(st, "color_jitter");
    out->height = in->height;
    out->width = in->width;
    out->channels = in->channels;
    out->dtype = KD_U8;
    memcpy(out->data, in->data, pixels * (size_t)in->channels);
    kd_jitter_draw d = kd_jitter_sample(rng, c);
    kd_jitter_apply(out->data, pixels, in->channels, &d);
    return KD_OK;
}

const kd_transform_vtable kd_images_color_jitter_vtable = {
    {sizeof(kd_transform_vtable), KD_KIND_TRANSFORM}, jitter_create, jitter_destroy,
    jitter_apply};
