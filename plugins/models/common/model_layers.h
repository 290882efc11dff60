/* Layer ids for layer-wise LR decay (kd_model_vtable.layer_id) from
 * timm's parameter names, as timm's param_groups_layer_decay numbers them
 * through each family's group_matcher(coarse=False): the stem is layer 0,
 * each block one layer in forward order (a stage's downsample joins its
 * first block), the head the last layer. Compiled into vit, beit, swin and
 * convnext; nothing here is part of the SDK. */
#ifndef KD_MODELS_MODEL_LAYERS_H
#define KD_MODELS_MODEL_LAYERS_H

#include <kdengine/plugin.h>

/* A name matches an entry when it is the entry or starts with it and a
 * dot ("norm" matches "norm.weight", not "norm_pre.weight"). Lists end
 * with NULL. */
typedef struct ml_layers {
    const char *owner;      /* the model's name, for messages */
    const char *stage;      /* "layers" (swin), "stages" (convnext): blocks
                               are "<stage>.<s>.blocks.<b>"; NULL: "blocks.<b>" */
    int n_stages;           /* 1 when stage is NULL */
    const int *depths;      /* [n_stages] blocks per stage */
    const char *const *stem;       /* layer 0 */
    const char *const *last_block; /* the last block's layer (ViT's and
                                      Swin's final norm, as timm's matcher
                                      groups it) */
    const char *const *head;       /* the last layer */
} ml_layers;

/* The layer of parameter `name` among *num_layers (blocks + 2). A name in
 * none of the groups is an error naming it and the model. */
kd_status ml_layer_id(const ml_layers *l, const char *name, int *id, int *num_layers);

#endif
