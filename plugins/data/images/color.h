/* torchvision 0.14's ColorJitter on PIL images, as plain functions on u8
 * HWC buffers (1 or 3 channels), in place. Each adjustment is Pillow 9's
 * arithmetic written out:
 *   brightness  ImageEnhance.Brightness: blend with black
 *   contrast    ImageEnhance.Contrast: blend with the gray image of the
 *               mean luma, int(mean + 0.5)
 *   saturation  ImageEnhance.Color: blend with the image's own luma
 *   hue         F.adjust_hue: to HSV (Pillow's rgb2hsv), H += uint8(factor
 *               * 255) wrapping, back to RGB (Pillow's hsv2rgb); gray
 *               images are left alone
 * where blend(a, b, f) = a + f (b - a) in float, truncated, clipped to
 * 0..255 (Pillow's ImagingBlend). */
#ifndef KD_COLOR_H
#define KD_COLOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kdengine/rng.h>

void kd_color_brightness(uint8_t *px, size_t pixels, int channels, float factor);
void kd_color_contrast(uint8_t *px, size_t pixels, int channels, float factor);
void kd_color_saturation(uint8_t *px, size_t pixels, int channels, float factor);
void kd_color_hue(uint8_t *px, size_t pixels, int channels, float factor);

/* ColorJitter's ranges, [lo, hi] per adjustment; an adjustment whose
 * range is {1, 1} (hue: {0, 0}) is off, as torchvision's None. */
typedef struct kd_jitter_config {
    float brightness[2], contrast[2], saturation[2], hue[2];
} kd_jitter_config;

/* One sample's draws, in torchvision's get_params order: the order of the
 * four adjustments (a Fisher-Yates permutation of 0..3 from kd_rng_below:
 * i from 3 down to 1 swaps i with kd_rng_below(i + 1)), then one
 * kd_rng_uniformf per enabled adjustment, brightness, contrast,
 * saturation, hue, scaled as torch's uniform_: x * (hi - lo) + lo. */
typedef struct kd_jitter_draw {
    int order[4]; /* 0 brightness, 1 contrast, 2 saturation, 3 hue */
    float factor[4];
    bool enabled[4];
} kd_jitter_draw;

kd_jitter_draw kd_jitter_sample(kd_rng *rng, const kd_jitter_config *cfg);
/* The adjustments in d.order with d.factor, skipping disabled ones. */
void kd_jitter_apply(uint8_t *px, size_t pixels, int channels, const kd_jitter_draw *d);

#endif
