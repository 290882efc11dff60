/* The geometry of torchvision 0.14's Resize, CenterCrop and
 * RandomResizedCrop as plain functions: output sizes, crop windows, and
 * RandomResizedCrop's random window, with the random part split from the
 * arithmetic so a test can feed torch's own draws in. Pixels are moved by
 * geometry_transforms.c (crops are copies, resizes are OpenCV's). */
#ifndef KD_GEOMETRY_H
#define KD_GEOMETRY_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/rng.h>

/* A window of an image: rows top..top+height-1, columns left..left+width-1.
 * top/left may be negative, and the window may reach past the image, where
 * it is zero padding (CenterCrop of a larger size). */
typedef struct kd_geo_window {
    int top, left, height, width;
} kd_geo_window;

/* Resize(size) with one size: the shorter side becomes `size`, the longer
 * int(size * long / short) (truncated, computed in double as Python's
 * true division), then if max_size > 0 and the longer side exceeds it,
 * the longer side becomes max_size and the shorter int(max_size * short /
 * long). Returns false (sizes untouched) when a result would be below 1. */
bool kd_geo_resize_shorter(int height, int width, int size, int max_size, int *out_h,
                           int *out_w);

/* CenterCrop((crop_h, crop_w)) of a height x width image: the window
 * starts at int(round((height - crop_h) / 2.0)) (round half to even, as
 * Python's round), likewise for the left; when the crop is larger than the
 * image, torchvision first zero-pads by (crop - side) // 2 before and the
 * rest after, which puts the window at -((crop - side) // 2). */
kd_geo_window kd_geo_center_crop(int height, int width, int crop_h, int crop_w);

/* RandomResizedCrop's sampling (get_params), for scale [s0, s1] and ratio
 * [r0, r1] (0 < s0 <= s1, 0 < r0 <= r1). */
typedef struct kd_rrc_config {
    double scale[2], ratio[2];
} kd_rrc_config;

/* One of the 10 tries, given torch's two draws for it: the area fraction
 * s (a float32 uniform in [s0, s1)) and the aspect ratio a (exp of a
 * float32 uniform in [log r0, log r1)). target = area * s;
 * w = round(sqrt(target * a)), h = round(sqrt(target / a)) (half to even);
 * true when 0 < w <= width and 0 < h <= height. */
bool kd_rrc_try(int height, int width, float s, float a, int *h, int *w);

/* The window after 10 failed tries: the whole image when its ratio lies in
 * [r0, r1], else the largest centred window of ratio r0 or r1
 * (w = width, h = round(w / r0); or h = height, w = round(h * r1)). */
kd_geo_window kd_rrc_fallback(int height, int width, const kd_rrc_config *cfg);

/* The whole sampler on kd_rng: per try, s = x * (s1 - s0) + s0 and
 * a = expf(y * (log r1 - log r0) + log r0) in float32 as torch computes
 * them, with x and y kd_rng_uniformf draws; on the first try that fits,
 * top = kd_rng_below(height - h + 1) and left = kd_rng_below(width - w + 1)
 * (torch.randint); after 10 failures the fallback, drawing nothing more. */
kd_geo_window kd_rrc_draw(kd_rng *rng, int height, int width, const kd_rrc_config *cfg);

#endif
