/* Checkpoints and weight files: named tensors in safetensors files.
 *
 * A checkpoint holds groups of named tensors, each under a prefix
 * ("student.", "loss.0.", "optim.") plus the runner's state as a JSON text
 * in the metadata key "kdengine.state". Writing is atomic (the safetensors
 * writer's temp file, fsync, rename), so a crash leaves the previous file
 * whole. Loading is strict: every tensor of every group must be in the file
 * with its shape (KD_TENSOR_OPTIONAL ones may be absent), and a name in the
 * file under a group's prefix that the group lacks is an error too. */
#ifndef KD_CORE_CHECKPOINT_H
#define KD_CORE_CHECKPOINT_H

#include <kdengine/plugin.h>

typedef struct kd_tensor_group {
    const char *prefix; /* "" for bare state_dict names */
    int n;
    const kd_named_tensor *list;
} kd_tensor_group;

/* classes_json (may be NULL): the data set's class names, a JSON array in
 * class order, kept in the metadata key "kdengine.classes" so that a
 * checkpoint, best.safetensors and exported weights say what their logits
 * mean. */
kd_status kd_checkpoint_save(const char *path, int n_groups, const kd_tensor_group *groups,
                             const char *state_json, const char *classes_json);
/* *classes_json: a malloc'd copy of the file's "kdengine.classes", NULL
 * when it has none. */
kd_status kd_checkpoint_classes(const char *path, char **classes_json);
/* Copies the file's tensors into the groups' tensors; *state_json (may be
 * NULL) gets a malloc'd copy of the state text, NULL when the file has
 * none. */
kd_status kd_checkpoint_load(const char *path, int n_groups, const kd_tensor_group *groups,
                             char **state_json);

/* Loads model weights: a plain state_dict file (timm names) or a kdengine
 * checkpoint, whose "student." tensors are taken. `what` names the model
 * in messages ("teacher"). A model's filter_weight callback (may be NULL)
 * sees every tensor of the file first and may rename, replace or drop it;
 * the matching after it is as strict. */
typedef kd_status (*kd_weight_filter_fn)(void *model, kd_weight_fix *fix);
kd_status kd_weights_load(const char *path, const char *what, int n,
                          const kd_named_tensor *list, kd_weight_filter_fn filter, void *model);

#endif
