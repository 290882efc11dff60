/* timm's ConvNeXts: atto at full depth, the others at reduced depths with
 * the real key names; both MLP layouts (1x1 convs for atto..nano, Linear
 * for tiny..base). */
#include "../model_rows.h"

#define MAP KD_LAYOUT_NCHW
#define VEC KD_LAYOUT_NC
#define TAPS                                                                                   \
    {{"stem", "stem", MAP}, {"stages.0", "stages.0", MAP}, {"stages.1", "stages.1", MAP},     \
     {"stages.2", "stages.2", MAP}, {"stages.3", "stages.3", MAP},                            \
     {"pre_logits", "head.pre_logits", VEC}}

const kt_model_row kt_model_rows_convnext[] = {
    {"convnext_atto", "{\"num_classes\": 10, \"in_chans\": 1}", "convnext_atto",
     "{\"num_classes\": 10, \"in_chans\": 1}", 2, 32, TAPS},
    {"convnext_femto", "{\"depths\": [1, 1, 2, 1]}", "convnext_femto",
     "{\"depths\": [1, 1, 2, 1]}", 2, 32, TAPS},
    {"convnext_pico", "{\"num_classes\": 5, \"depths\": [1, 1, 1, 1]}", "convnext_pico",
     "{\"num_classes\": 5, \"depths\": [1, 1, 1, 1]}", 2, 32, TAPS},
    {"convnext_nano", "{\"num_classes\": 5, \"depths\": [1, 1, 1, 1]}", "convnext_nano",
     "{\"num_classes\": 5, \"depths\": [1, 1, 1, 1], \"drop_path_rate\": 0.2}", 2, 32, TAPS},
    {"convnext_tiny", "{\"num_classes\": 10, \"depths\": [1, 2, 1, 1]}", "convnext_tiny",
     "{\"num_classes\": 10, \"depths\": [1, 2, 1, 1], \"drop_path_rate\": 0.1}", 2, 64,
     TAPS},
    {"convnext_small", "{\"num_classes\": 10, \"depths\": [1, 1, 1, 1]}", "convnext_small",
     "{\"num_classes\": 10, \"depths\": [1, 1, 1, 1]}", 2, 32, TAPS},
    {"convnext_base", "{\"num_classes\": 10, \"depths\": [1, 1, 1, 1]}", "convnext_base",
     "{\"num_classes\": 10, \"depths\": [1, 1, 1, 1]}", 2, 32, TAPS},
    {0},
};

const kt_full_keys kt_full_keys_convnext[] = {
    {"convnext_atto", "convnext_atto"},   {"convnext_femto", "convnext_femto"},
    {"convnext_pico", "convnext_pico"},   {"convnext_nano", "convnext_nano"},
    {"convnext_tiny", "convnext_tiny"},   {"convnext_small", "convnext_small"},
    {"convnext_base", "convnext_base"},   {0},
};
