#include "geometry.h"

#include <math.h>

bool kd_geo_resize_shorter(int height, int width, int size, int max_size, int *out_h,
                           int *out_w)
{
    if (height < 1 || width < 1 || size < 1)
        return false;
    int64_t shorter = width <= height ? width : height;
    int64_t longer = width <= height ? height : width;
    int64_t new_short = size;
    int64_t new_long = (int64_t)((double)(size * longer) / (double)shorter);
    if (max_size > 0 && new_long > max_size) {
        new_short = (int64_t)((double)((int64_t)max_size * new_short) / (double)new_long);
        new_long = max_size;
    }
    if (new_short < 1 || new_long < 1 || new_long > INT32_MAX)
        return false;
    *out_w = (int)(width <= height ? new_short : new_long);
    *out_h = (int)(width <= height ? new_long : new_short);
    return true;
}

/* int(round(v / 2.0)) for Python ints v: half to even. */
static int half_rounded_even(int v) { return (int)nearbyint((double)v / 2.0); }

kd_geo_window kd_geo_center_crop(int height, int width, int crop_h, int crop_w)
{
    /* torchvision pads a smaller image by (crop - side) // 2 before and
     * (crop - side + 1) // 2 after, then crops the padded image's centre,
     * which then starts at 0. */
    int top = crop_h > height ? -((crop_h - height) / 2) : half_rounded_even(height - crop_h);
    int left = crop_w > width ? -((crop_w - width) / 2) : half_rounded_even(width - crop_w);
    return (kd_geo_window){top, left, crop_h, crop_w};
}

bool kd_rrc_try(int height, int width, float s, float a, int *h, int *w)
{
    double target = (double)height * (double)width * (double)s;
    double wf = nearbyint(sqrt(target * (double)a));
    double hf = nearbyint(sqrt(target / (double)a));
    if (!(wf > 0 && wf <= width && hf > 0 && hf <= height))
        return false;
    *w = (int)wf;
    *h = (int)hf;
    return true;
}

kd_geo_window kd_rrc_fallback(int height, int width, const kd_rrc_config *cfg)
{
    double in_ratio = (double)width / (double)height;
    int w = width, h = height;
    if (in_ratio < cfg->ratio[0])
        h = (int)nearbyint((double)w / cfg->ratio[0]);
    else if (in_ratio > cfg->ratio[1])
        w = (int)nearbyint((double)h * cfg->ratio[1]);
    return (kd_geo_window){(height - h) / 2, (width - w) / 2, h, w};
}

kd_geo_window kd_rrc_draw(kd_rng *rng, int height, int width, const kd_rrc_config *cfg)
{
    float s0 = (float)cfg->scale[0], s1 = (float)cfg->scale[1];
    float l0 = logf((float)cfg->ratio[0]), l1 = logf((float)cfg->ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        float s = kd_rng_uniformf(rng) * (s1 - s0) + s0;
        float a = expf(kd_rng_uniformf(rng) * (l1 - l0) + l0);
        int h, w;
        if (kd_rrc_try(height, width, s, a, &h, &w)) {
            int top = (int)kd_rng_below(rng, (uint64_t)(height - h + 1));
            int left = (int)kd_rng_below(rng, (uint64_t)(width - w + 1));
            return (kd_geo_window){top, left, h, w};
        }
    }
    return kd_rrc_fallback(height, width, cfg);
}
