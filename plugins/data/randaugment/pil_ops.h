/* The image operations timm's RandAugment calls, with Pillow 9.4's
 * arithmetic, on u8 height x width x channels images (1 channel: PIL's "L",
 * 3: "RGB"). Each mirrors the Pillow code path timm reaches:
 *   lookup tables      ImageOps invert/posterize/solarize, timm's
 *                      solarize_add, autocontrast and equalize (their
 *                      integer and float64 table formulas)
 *   blend              Image.blend (float32 alpha; ImageEnhance's
 *                      Brightness, Color, Contrast, Sharpness)
 *   gray               convert("L"): (19595 R + 38470 G + 7471 B + 2^15) >> 16
 *   smooth             ImageFilter.SMOOTH, the 3x3 [1 1 1; 1 5 1; 1 1 1] / 13
 *                      kernel in float32, borders copied
 *   gaussian_blur      ImageFilter.GaussianBlur: Pillow's extended box blur
 *   affine             Image.transform(AFFINE) with a fill colour: the
 *                      inverse map (output pixel centre to input point),
 *                      NEAREST through Pillow's three paths (scale-only,
 *                      16.16 fixed point, float), BILINEAR and BICUBIC
 *                      with their clamped edge taps
 *   rotate             Image.rotate: its 0/90/180/270 shortcuts and its
 *                      matrix rounded to 15 decimals
 * Built with -ffp-contract=off: every product and sum rounds as Pillow's
 * (a baseline x86-64 build, which has no fused multiply-add). */
#ifndef KD_PIL_OPS_H
#define KD_PIL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <kdengine/status.h>

#define KD_PIL_MAX_CHANNELS 3

typedef enum kd_pil_filter {
    KD_PIL_NEAREST = 0,
    KD_PIL_BILINEAR = 2, /* Pillow's Resampling numbers */
    KD_PIL_BICUBIC = 3
} kd_pil_filter;

typedef struct kd_pil_image {
    int height, width, channels;
    uint8_t *data; /* HWC */
} kd_pil_image;

/* One table per channel: dst = lut[c][src]. */
void kd_pil_apply_lut(const kd_pil_image *src, uint8_t lut[][256], uint8_t *dst);

/* ImageOps.autocontrast(cutoff=0): per channel, the darkest value to 0,
 * the lightest to 255, int(i * scale + offset) between. */
void kd_pil_autocontrast_lut(const kd_pil_image *src, uint8_t lut[][256]);
/* ImageOps.equalize: per channel, Pillow's cumulative-histogram table. */
void kd_pil_equalize_lut(const kd_pil_image *src, uint8_t lut[][256]);

/* Image.blend(degenerate, image, alpha): (float)d + alpha * (i - d),
 * truncated, clipped when alpha is outside [0, 1]. n bytes. */
void kd_pil_blend(const uint8_t *degenerate, const uint8_t *image, size_t n, float alpha,
                  uint8_t *dst);

/* gray[h * w]: convert("L") of src. */
void kd_pil_gray(const kd_pil_image *src, uint8_t *gray);
/* int(mean of convert("L") + 0.5), as ImageEnhance.Contrast takes it. */
int kd_pil_gray_mean(const kd_pil_image *src);

/* dst = src filtered with SMOOTH; images under 3 x 3 are copied. */
void kd_pil_smooth(const kd_pil_image *src, uint8_t *dst);

/* dst = src.filter(ImageFilter.GaussianBlur(radius)): Pillow's three box
 * blur passes along rows, then three along columns, with the fractional
 * box radius it derives from the Gaussian's (float32), in its 8.24 fixed
 * point. KD_ERR_NOMEM when a line buffer cannot be had. */
kd_status kd_pil_gaussian_blur(const kd_pil_image *src, float radius, uint8_t *dst);

/* dst (same size) = src.transform(size, AFFINE, a, filter, fillcolor=fill):
 * output pixel (x, y) samples src at (a0 x' + a1 y' + a2, a3 x' + a4 y' +
 * a5), x' = x + 0.5, y' = y + 0.5; outside, fill[c]. KD_ERR_NOMEM when a
 * scratch table cannot be had. */
kd_status kd_pil_affine(const kd_pil_image *src, const double a[6], kd_pil_filter filter,
                        const uint8_t *fill, uint8_t *dst);

/* dst = src.rotate(degrees, filter, fillcolor=fill) (counter-clockwise,
 * about the centre, same size). */
kd_status kd_pil_rotate(const kd_pil_image *src, double degrees, kd_pil_filter filter,
                        const uint8_t *fill, uint8_t *dst);

#endif
