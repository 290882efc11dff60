/* timm's ViT and DeiT (plugins/models/vit): reduced depths and small
 * images with the real key names. Distilled rows train with
 * distilled_training false, timm's default (the two heads averaged); the
 * separate heads are test_vit's. */
#include "../model_rows.h"

#define TOK KD_LAYOUT_TOKENS
#define VEC KD_LAYOUT_NC

const kt_model_row kt_model_rows_vit[] = {
    {"deit_tiny_patch16_224",
     "{\"depth\": 2, \"num_classes\": 10, \"img_size\": 32, \"patch_size\": 8}",
     "deit_tiny_patch16_224",
     "{\"depth\": 2, \"num_classes\": 10, \"img_size\": 32, \"patch_size\": 8}", 2, 32,
     {{"patch_embed", "patch_embed", TOK}, {"pos_drop", "pos_drop", TOK},
      {"blocks.0", "blocks.0", TOK}, {"blocks.1", "blocks.1", TOK}, {"norm", "norm", TOK},
      {"pre_logits", "head_drop", VEC}}},
    {"deit_tiny_distilled_patch16_224",
     "{\"depth\": 2, \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 28, \"patch_size\": 7, "
     "\"distilled_training\": false}",
     "deit_tiny_distilled_patch16_224",
     "{\"depth\": 2, \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 28, \"patch_size\": 7}",
     2, 28,
     {{"patch_embed", "patch_embed", TOK}, {"pos_drop", "pos_drop", TOK},
      {"blocks.1", "blocks.1", TOK}, {"norm", "norm", TOK},
      {"logits_dist", "head_dist", VEC}}},
    {"deit_small_patch16_224", "{\"depth\": 1, \"num_classes\": 7, \"img_size\": 48}",
     "deit_small_patch16_224", "{\"depth\": 1, \"num_classes\": 7, \"img_size\": 48}", 2, 48,
     {{"pos_drop", "pos_drop", TOK}, {"blocks.0", "blocks.0", TOK},
      {"pre_logits", "head_drop", VEC}}},
    {"vit_base_patch16_224", "{\"depth\": 1, \"num_classes\": 5, \"img_size\": 32}",
     "vit_base_patch16_224", "{\"depth\": 1, \"num_classes\": 5, \"img_size\": 32}", 2, 32,
     {{"blocks.0", "blocks.0", TOK}, {"norm", "norm", TOK}}},
    {"deit_base_distilled_patch16_224",
     "{\"depth\": 1, \"num_classes\": 5, \"img_size\": 32, \"distilled_training\": false}",
     "deit_base_distilled_patch16_224", "{\"depth\": 1, \"num_classes\": 5, \"img_size\": 32}",
     1, 32, {{"blocks.0", "blocks.0", TOK}, {"logits_dist", "head_dist", VEC}}},
    {0},
};

const kt_full_keys kt_full_keys_vit[] = {
    {"vit_base_patch16_224", "vit_base_patch16_224"},
    {"deit_tiny_patch16_224", "deit_tiny_patch16_224"},
    {"deit_small_patch16_224", "deit_small_patch16_224"},
    {"deit_base_patch16_224", "deit_base_patch16_224"},
    {"deit_tiny_distilled_patch16_224", "deit_tiny_distilled_patch16_224"},
    {"deit_small_distilled_patch16_224", "deit_small_distilled_patch16_224"},
    {"deit_base_distilled_patch16_224", "deit_base_distilled_patch16_224"},
    {0},
};

const kt_refused_start kt_refused_starts_vit[] = {
    {"deit_tiny_distilled_patch16_224", "pre_logits"},
    {"deit_tiny_distilled_patch16_224", "logits_dist"},
    {"deit_base_distilled_patch16_224", "pre_logits"},
    {"deit_base_distilled_patch16_224", "logits_dist"},
    {0},
};
