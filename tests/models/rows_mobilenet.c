/* timm's MobileNetV2 and V3 at full depth (they are small) on small
 * inputs; every stage's tap. */
#include "../model_rows.h"

#define MAP KD_LAYOUT_NCHW
#define VEC KD_LAYOUT_NC

const kt_model_row kt_model_rows_mobilenet[] = {
    {"mobilenetv2_100", "{\"num_classes\": 10}", "mobilenetv2_100", "{\"num_classes\": 10}",
     2, 64,
     {{"bn1", "bn1", MAP}, {"blocks.0", "blocks.0", MAP}, {"blocks.1", "blocks.1", MAP},
      {"blocks.2", "blocks.2", MAP}, {"blocks.3", "blocks.3", MAP},
      {"blocks.4", "blocks.4", MAP}, {"blocks.5", "blocks.5", MAP},
      {"blocks.6", "blocks.6", MAP}, {"bn2", "bn2", MAP},
      {"pre_logits", "global_pool", VEC}}},
    {"mobilenetv3_large_100", "{}", "mobilenetv3_large_100", "{}", 2, 64,
     {{"bn1", "bn1", MAP}, {"blocks.0", "blocks.0", MAP}, {"blocks.1", "blocks.1", MAP},
      {"blocks.2", "blocks.2", MAP}, {"blocks.3", "blocks.3", MAP},
      {"blocks.4", "blocks.4", MAP}, {"blocks.5", "blocks.5", MAP},
      {"blocks.6", "blocks.6", MAP}, {"pre_logits", "flatten", VEC}}},
    {"mobilenetv3_small_100", "{\"num_classes\": 10, \"in_chans\": 1}",
     "mobilenetv3_small_100", "{\"num_classes\": 10, \"in_chans\": 1}", 3, 64,
     {{"bn1", "bn1", MAP}, {"blocks.0", "blocks.0", MAP}, {"blocks.1", "blocks.1", MAP},
      {"blocks.2", "blocks.2", MAP}, {"blocks.3", "blocks.3", MAP},
      {"blocks.4", "blocks.4", MAP}, {"blocks.5", "blocks.5", MAP},
      {"pre_logits", "flatten", VEC}}},
    {0},
};

const kt_full_keys kt_full_keys_mobilenet[] = {
    {"mobilenetv2_100", "mobilenetv2_100"},
    {"mobilenetv3_large_100", "mobilenetv3_large_100"},
    {"mobilenetv3_small_100", "mobilenetv3_small_100"},
    {0},
};
