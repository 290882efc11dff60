#include "image_transforms.h"

#include <math.h>
#include <string.h>

static bool window_fits(int h, int w, int pad, int out_h, int out_w)
{
    return h > 0 && w > 0 && pad >= 0 && out_h > 0 && out_w > 0 &&
           (int64_t)out_h <= (int64_t)h + 2 * (int64_t)pad &&
           (int64_t)out_w <= (int64_t)w + 2 * (int64_t)pad;
}

kd_status kd_img_draw_crop(kd_rng *rng, int h, int w, int pad, int out_h, int out_w,
                           kd_img_aug *aug)
{
    if (!window_fits(h, w, pad, out_h, out_w))
        return kd_error(KD_ERR_INVALID,
                        "random crop: a %dx%d window does not fit a %dx%d image padded by %d",
                        out_h, out_w, h, w, pad);
    aug->top = (int)kd_rng_below(rng, (uint64_t)((int64_t)h + 2 * (int64_t)pad - out_h + 1));
    aug->left = (int)kd_rng_below(rng, (uint64_t)((int64_t)w + 2 * (int64_t)pad - out_w + 1));
    return KD_OK;
}

bool kd_img_draw_flip(kd_rng *rng, double p)
{
    return kd_rng_uniform(rng) < p;
}

/* dst[x] = src[base - x] pixel-wise, for x in [x0, x1). */
static void copy_mirrored(uint8_t *dst, const uint8_t *src, int c, int64_t base, int64_t x0,
                          int64_t x1)
{
    if (c == 1) {
        for (int64_t x = x0; x < x1; x++)
            dst[x] = src[base - x];
        return;
    }
    for (int64_t x = x0; x < x1; x++)
        memcpy(dst + x * c, src + (base - x) * c, (size_t)c);
}

kd_status kd_img_apply_aug(const uint8_t *src, int h, int w, int c, int pad, uint8_t *dst,
                           int out_h, int out_w, const kd_img_aug *aug)
{
    if (!window_fits(h, w, pad, out_h, out_w) || c <= 0 || aug->top < 0 || aug->left < 0 ||
        (int64_t)aug->top + out_h > (int64_t)h + 2 * (int64_t)pad ||
        (int64_t)aug->left + out_w > (int64_t)w + 2 * (int64_t)pad)
        return kd_error(KD_ERR_INVALID,
                        "crop: a %dx%dx%d window at (%d, %d) does not fit a %dx%d image "
                        "padded by %d",
                        out_h, out_w, c, aug->top, aug->left, h, w, pad);
    size_t row_bytes = (size_t)out_w * (size_t)c;
    /* Output column x reads source column left - pad + x, or
     * left - pad + out_w - 1 - x when mirrored; [x0, x1) is where that
     * column lies inside the image, the rest is padding. */
    int64_t shift = (int64_t)aug->left - pad;
    int64_t x0, x1, base = shift + out_w - 1;
    if (aug->flip) {
        x0 = base - (w - 1) > 0 ? base - (w - 1) : 0;
        x1 = base + 1 < out_w ? base + 1 : out_w;
    } else {
        x0 = -shift > 0 ? -shift : 0;
        x1 = w - shift < out_w ? w - shift : out_w;
    }
    for (int y = 0; y < out_h; y++) {
        uint8_t *drow = dst + (size_t)y * row_bytes;
        int64_t sy = (int64_t)aug->top - pad + y;
        if (sy < 0 || sy >= h || x0 >= x1) {
            memset(drow, 0, row_bytes);
            continue;
        }
        const uint8_t *srow = src + (size_t)sy * (size_t)w * (size_t)c;
        memset(drow, 0, (size_t)x0 * (size_t)c);
        if (aug->flip)
            copy_mirrored(drow, srow, c, base, x0, x1);
        else
            memcpy(drow + x0 * c, srow + (shift + x0) * c, (size_t)(x1 - x0) * (size_t)c);
        memset(drow + x1 * c, 0, (size_t)(out_w - x1) * (size_t)c);
    }
    return KD_OK;
}

kd_status kd_img_norm_init(kd_img_norm *norm, int channels, const float *mean,
                           const float *std)
{
    if (channels < 1 || channels > KD_IMG_MAX_CHANNELS)
        return kd_error(KD_ERR_INVALID, "normalize: %d channels; 1 to %d are supported",
                        channels, KD_IMG_MAX_CHANNELS);
    for (int k = 0; k < channels; k++)
        if (!isfinite(mean[k]) || !isfinite(std[k]) || std[k] == 0.0f)
            return kd_error(KD_ERR_INVALID,
                            "normalize: channel %d has mean %g and std %g; both must be "
                            "finite and std nonzero",
                            k, (double)mean[k], (double)std[k]);
    norm->channels = channels;
    for (int k = 0; k < channels; k++)
        for (int v = 0; v < 256; v++) {
            /* Three f32 roundings in torch's order: div(255), sub_, div_. */
            float x = (float)v / 255.0f;
            x -= mean[k];
            norm->table[k][v] = x / std[k];
        }
    return KD_OK;
}

void kd_img_normalize(const kd_img_norm *norm, const uint8_t *src, int h, int w, float *dst)
{
    int c = norm->channels;
    size_t plane = (size_t)h * (size_t)w;
    if (c == 1) {
        const float *t = norm->table[0];
        for (size_t p = 0; p < plane; p++)
            dst[p] = t[src[p]];
        return;
    }
    for (int k = 0; k < c; k++) {
        const float *t = norm->table[k];
        float *d = dst + (size_t)k * plane;
        const uint8_t *s = src + k;
        for (size_t p = 0; p < plane; p++)
            d[p] = t[s[p * (size_t)c]];
    }
}
