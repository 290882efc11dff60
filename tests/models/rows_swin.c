/* timm's Swin Transformer v1 (plugins/models/swin): reduced depths with
 * the real key names, at input sizes that exercise what timm derives from
 * img_size: padding to whole windows (64 -> a 16x16 map in 7x7 windows),
 * windows clamped to small maps without a shift (stages 2 and 3 at 64),
 * shift masks, a one-channel 32x32 student, and the Fashion-MNIST
 * example's half-width teacher with 4x4 windows. */
#include "../model_rows.h"

#define HWC KD_LAYOUT_NHWC
#define VEC KD_LAYOUT_NC

const kt_model_row kt_model_rows_swin[] = {
    {"swin_tiny_patch4_window7_224",
     "{\"depths\": [2, 2, 2, 2], \"num_classes\": 10, \"img_size\": 64, \"drop_path_rate\": 0}",
     "swin_tiny_patch4_window7_224",
     "{\"depths\": [2, 2, 2, 2], \"num_classes\": 10, \"img_size\": 64}", 2, 64,
     {{"patch_embed", "patch_embed", HWC}, {"layers.0.blocks.1", "layers.0.blocks.1", HWC},
      {"layers.1", "layers.1", HWC}, {"layers.2.blocks.0", "layers.2.blocks.0", HWC},
      {"layers.3", "layers.3", HWC}, {"norm", "norm", HWC},
      {"pre_logits", "head.global_pool", VEC}}},
    {"swin_tiny_patch4_window7_224",
     "{\"depths\": [2, 1, 1, 1], \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 32, "
     "\"drop_path_rate\": 0}",
     "swin_tiny_patch4_window7_224",
     "{\"depths\": [2, 1, 1, 1], \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 32}", 2, 32,
     {{"layers.0.blocks.1", "layers.0.blocks.1", HWC}, {"layers.3", "layers.3", HWC},
      {"pre_logits", "head.global_pool", VEC}}},
    /* examples/fashion-mnist/swin-teacher.json's model: half width, 4x4
     * windows tiling the 8x8 map, shifted in every second block */
    {"swin_tiny_patch4_window7_224",
     "{\"depths\": [2, 2, 2, 2], \"embed_dim\": 48, \"window_size\": 4, \"num_classes\": 10, "
     "\"in_chans\": 1, \"img_size\": 32, \"drop_path_rate\": 0}",
     "swin_tiny_patch4_window7_224",
     "{\"depths\": [2, 2, 2, 2], \"embed_dim\": 48, \"window_size\": 4, \"num_classes\": 10, "
     "\"in_chans\": 1, \"img_size\": 32}", 2, 32,
     {{"layers.0.blocks.1", "layers.0.blocks.1", HWC}, {"layers.1", "layers.1", HWC},
      {"layers.3", "layers.3", HWC}, {"pre_logits", "head.global_pool", VEC}}},
    {"swin_base_patch4_window7_224",
     "{\"depths\": [1, 1, 2, 1], \"num_classes\": 5, \"img_size\": 224, \"drop_path_rate\": 0}",
     "swin_base_patch4_window7_224",
     "{\"depths\": [1, 1, 2, 1], \"num_classes\": 5, \"img_size\": 224}", 1, 224,
     {{"layers.0", "layers.0", HWC}, {"layers.2.blocks.1", "layers.2.blocks.1", HWC},
      {"layers.3", "layers.3", HWC}}},
    {0},
};

const kt_full_keys kt_full_keys_swin[] = {
    {"swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224"},
    {"swin_small_patch4_window7_224", "swin_small_patch4_window7_224"},
    {"swin_base_patch4_window7_224", "swin_base_patch4_window7_224"},
    {"swin_large_patch4_window7_224", "swin_large_patch4_window7_224"},
    {0},
};
