/* timm's BEiT v1 and v2 (plugins/models/beit): reduced depths and small
 * images with the real key names; each block's relative position bias is
 * sized by the patch grid (2x2 and 3x3 here, with the class-token rows). */
#include "../model_rows.h"

#define TOK KD_LAYOUT_TOKENS
#define VEC KD_LAYOUT_NC

const kt_model_row kt_model_rows_beit[] = {
    {"beit_base_patch16_224", "{\"depth\": 2, \"num_classes\": 10, \"img_size\": 32}",
     "beit_base_patch16_224", "{\"depth\": 2, \"num_classes\": 10, \"img_size\": 32}", 2, 32,
     {{"patch_embed", "patch_embed", TOK}, {"pos_drop", "pos_drop", TOK},
      {"blocks.0", "blocks.0", TOK}, {"blocks.1", "blocks.1", TOK},
      {"pre_logits", "fc_norm", VEC}}},
    {"beitv2_base_patch16_224",
     "{\"depth\": 1, \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 24, \"patch_size\": 8}",
     "beitv2_base_patch16_224",
     "{\"depth\": 1, \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 24, \"patch_size\": 8}",
     2, 24, {{"blocks.0", "blocks.0", TOK}, {"pre_logits", "fc_norm", VEC}}},
    {0},
};

const kt_full_keys kt_full_keys_beit[] = {
    {"beit_base_patch16_224", "beit_base_patch16_224"},
    {"beitv2_base_patch16_224", "beitv2_base_patch16_224"},
    {0},
};
