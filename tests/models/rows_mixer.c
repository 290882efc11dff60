/* timm's MLP-Mixer (plugins/models/mixer): reduced depths and small
 * images with the real key names. timm's mixer_s16_224 and mixer_b16_224
 * entrypoints pin num_blocks and patch_size, so the rows build their
 * class, MlpMixer, with the entrypoints' embed_dim and the rest of their
 * arguments at the class defaults, as the entrypoints leave them. */
#include "../model_rows.h"

#define TOK KD_LAYOUT_TOKENS
#define VEC KD_LAYOUT_NC

const kt_model_row kt_model_rows_mixer[] = {
    {"mixer_s16_224",
     "{\"depth\": 2, \"num_classes\": 10, \"img_size\": 32, \"patch_size\": 8}",
     "timm.models.mlp_mixer:MlpMixer",
     "{\"embed_dim\": 512, \"num_blocks\": 2, \"num_classes\": 10, \"img_size\": 32, "
     "\"patch_size\": 8}", 2, 32,
     {{"stem", "stem", TOK}, {"blocks.0", "blocks.0", TOK}, {"blocks.1", "blocks.1", TOK},
      {"norm", "norm", TOK}, {"pre_logits", "head_drop", VEC}}},
    {"mixer_b16_224", "{\"depth\": 1, \"num_classes\": 10, \"in_chans\": 1, \"img_size\": 28, "
     "\"patch_size\": 7}",
     "timm.models.mlp_mixer:MlpMixer",
     "{\"embed_dim\": 768, \"num_blocks\": 1, \"num_classes\": 10, \"in_chans\": 1, "
     "\"img_size\": 28, \"patch_size\": 7}", 2, 28,
     {{"stem", "stem", TOK}, {"blocks.0", "blocks.0", TOK}, {"pre_logits", "head_drop", VEC}}},
    {0},
};

const kt_full_keys kt_full_keys_mixer[] = {
    {"mixer_s16_224", "mixer_s16_224"},
    {"mixer_b16_224", "mixer_b16_224"},
    {0},
};
