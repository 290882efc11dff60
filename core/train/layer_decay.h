/* Layer-wise learning-rate decay (job "optim.layer_decay"), as timm's
 * param_groups_layer_decay: the student model places each parameter in a
 * layer (kd_model_vtable.layer_id, timm's group_matcher numbering) and the
 * parameter steps at lr * decay^(num_layers - 1 - layer), so the head
 * keeps the base lr and every layer below it takes one more factor. */
#ifndef KD_CORE_LAYER_DECAY_H
#define KD_CORE_LAYER_DECAY_H

#include <kdengine/plugin.h>

/* scales[i] for every tensor i of the model's list `tensors` (its
 * tensors() in order; entries that are not KD_TENSOR_PARAM get 1). decay
 * in (0, 1]. A model without layer_id, an id outside [0, num_layers), or
 * num_layers changing between tensors is an error naming the model
 * (`model`) and the tensor. */
kd_status kd_layer_decay_scales(const kd_model_vtable *vt, void *self, const char *model,
                                int n, const kd_named_tensor *tensors, double decay,
                                double *scales);

#endif
