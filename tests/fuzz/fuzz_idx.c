/* libFuzzer target for the IDX reader: parse arbitrary bytes (plain or
 * gzip), and when they validate, touch every item, run the image/label
 * pair check, and crop/flip/normalise u8 images with parameters taken from
 * the input. Built and run by scripts/fuzz-idx. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../plugins/data/idx/idx_reader.h"
#include "../../plugins/data/transforms/image_transforms.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void transform_items(const kd_idx *idx, const uint8_t *data, size_t size)
{
    int h = (int)kd_idx_dim(idx, 1), w = (int)kd_idx_dim(idx, 2);
    int c = kd_idx_ndims(idx) == 4 ? (int)kd_idx_dim(idx, 3) : 1;
    if (h < 1 || w < 1 || c < 1 || h > 64 || w > 64 || c > KD_IMG_MAX_CHANNELS)
        return;
    uint8_t knobs[4] = {0};
    memcpy(knobs, data + size - (size < 4 ? size : 4), size < 4 ? size : 4);
    int pad = knobs[0] % 8;
    int out_h = 1 + knobs[1] % (h + 2 * pad), out_w = 1 + knobs[2] % (w + 2 * pad);
    static uint8_t crop[(64 + 16) * (64 + 16) * KD_IMG_MAX_CHANNELS];
    static float out[(64 + 16) * (64 + 16) * KD_IMG_MAX_CHANNELS];
    const float mean[KD_IMG_MAX_CHANNELS] = {0.5f, 0.25f, 0.0f, 1.0f};
    const float std[KD_IMG_MAX_CHANNELS] = {0.5f, 2.0f, 1.0f, 0.125f};
    kd_img_norm norm;
    if (kd_img_norm_init(&norm, c, mean, std) != KD_OK)
        __builtin_trap();
    int64_t n = kd_idx_count(idx);
    for (int64_t i = 0; i < n && i < 4; i++) {
        kd_rng rng = kd_rng_make(knobs[3], 0, (uint64_t)i);
        kd_img_aug aug;
        if (kd_img_draw_crop(&rng, h, w, pad, out_h, out_w, &aug) != KD_OK)
            __builtin_trap();
        aug.flip = kd_img_draw_flip(&rng, 0.5);
        if (kd_img_apply_aug(kd_idx_item(idx, i), h, w, c, pad, crop, out_h, out_w, &aug) !=
            KD_OK)
            __builtin_trap();
        kd_img_normalize(&norm, crop, out_h, out_w, out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kd_idx *idx;
    if (kd_idx_parse(data, size, "fuzz", &idx) != KD_OK)
        return 0;
    volatile uint8_t sink = 0;
    int64_t n = kd_idx_count(idx);
    size_t item = kd_idx_item_bytes(idx);
    if (n > 0 && item > 0) {
        /* Touch the first and last byte so ASan sees any bad pointer. */
        sink ^= kd_idx_item(idx, 0)[0] ^ kd_idx_item(idx, n - 1)[item - 1];
        if (kd_idx_item(idx, n) || kd_idx_item(idx, n - 1) + item !=
                                       kd_idx_data(idx) + (size_t)n * item)
            __builtin_trap();
    }
    kd_idx_check_pair(idx, idx, 1 + (size ? data[size - 1] : 0));
    if (kd_idx_type_of(idx) == KD_IDX_U8 && kd_idx_ndims(idx) >= 3)
        transform_items(idx, data, size);
    kd_idx_close(idx);
    (void)sink;
    return 0;
}
