/* Per-sample image augmentation on plain buffers, for loader threads: no
 * tensors, no scope, no allocation.
 *
 * Images are u8, height x width x channels (HWC), rows contiguous. The
 * random part is split from the pixel work: a draw function turns a kd_rng
 * into parameters, an apply function uses them. A loader keys the rng by
 * (seed, epoch, sample index), so a sample's augmentation does not depend
 * on which thread makes it; keeping the drawn parameters (or the key)
 * replays it exactly.
 *
 * Draw order, for replay from a key: RandomCrop then RandomHorizontalFlip,
 * each taking the draws documented at its function. */
#ifndef KD_IMAGE_TRANSFORMS_H
#define KD_IMAGE_TRANSFORMS_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/rng.h>
#include <kdengine/status.h>

#define KD_IMG_MAX_CHANNELS 4

/* One sample's geometric augmentation. */
typedef struct kd_img_aug {
    int top, left; /* origin of the crop window in the padded image */
    bool flip;     /* mirror the crop left-right */
} kd_img_aug;

/* torchvision RandomCrop((out_h, out_w), padding=pad): the image is
 * zero-padded by pad on every side and the window origin is uniform:
 * top in [0, h + 2 pad - out_h], left in [0, w + 2 pad - out_w].
 * Draws top = kd_rng_below(rng, h + 2 pad - out_h + 1), then left the same
 * way (kd_rng_below takes two u32 per try and none when its range is 1).
 * Sets aug->top, aug->left; KD_ERR_INVALID if the window does not fit. */
kd_status kd_img_draw_crop(kd_rng *rng, int h, int w, int pad, int out_h, int out_w,
                           kd_img_aug *aug);

/* torchvision RandomHorizontalFlip(p): one kd_rng_uniform (two u32 draws),
 * flip when it is below p. */
bool kd_img_draw_flip(kd_rng *rng, double p);

/* dst (out_h x out_w x c) = the window at (aug->top, aug->left) of src
 * (h x w x c) zero-padded by pad, mirrored when aug->flip. With pad 0 and
 * the full size it is a plain copy or flip. src and dst must not overlap.
 * KD_ERR_INVALID if the sizes or the window are out of range. */
kd_status kd_img_apply_aug(const uint8_t *src, int h, int w, int c, int pad, uint8_t *dst,
                           int out_h, int out_w, const kd_img_aug *aug);

/* torchvision ToTensor + Normalize(mean, std): u8 HWC to f32 CHW with
 * (x / 255 - mean[c]) / std[c], each step rounded to f32 as torch does. A
 * prepared table holds all 256 results per channel, so the values are
 * bit-identical to torch's and the conversion is a lookup. */
typedef struct kd_img_norm {
    int channels;
    float table[KD_IMG_MAX_CHANNELS][256];
} kd_img_norm;

/* KD_ERR_INVALID unless 1 <= channels <= KD_IMG_MAX_CHANNELS and every
 * mean and std is finite with std != 0. */
kd_status kd_img_norm_init(kd_img_norm *norm, int channels, const float *mean,
                           const float *std);
/* src: h x w x norm->channels u8; dst: norm->channels x h x w f32. */
void kd_img_normalize(const kd_img_norm *norm, const uint8_t *src, int h, int w, float *dst);

#endif
