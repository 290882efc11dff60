/* timm's ResNets: the ports test_resnet checks against its own reference,
 * here held to timm itself. */
#include "../model_rows.h"

#define MAP KD_LAYOUT_NCHW
#define VEC KD_LAYOUT_NC

const kt_model_row kt_model_rows_resnet[] = {
    {"resnet18", "{\"num_classes\": 10}", "resnet18", "{\"num_classes\": 10}", 2, 64,
     {{"stem", "maxpool", MAP}, {"stage1", "layer1", MAP}, {"stage2", "layer2", MAP},
      {"stage3", "layer3", MAP}, {"stage4", "layer4", MAP},
      {"pre_logits", "global_pool", VEC}}},
    {"resnet50", "{\"num_classes\": 7, \"in_chans\": 1}", "resnet50",
     "{\"num_classes\": 7, \"in_chans\": 1}", 2, 64,
     {{"stem", "maxpool", MAP}, {"stage2", "layer2", MAP}, {"stage4", "layer4", MAP}}},
    {0},
};

const kt_full_keys kt_full_keys_resnet[] = {
    {"resnet18", "resnet18"},
    {"resnet50", "resnet50"},
    {0},
};
