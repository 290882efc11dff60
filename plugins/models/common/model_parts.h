/* What the token-based model plugins (vit, mixer, beit) share on top of
 * model_tensors.h: timm's weight initialisations as one call per tensor,
 * and the layers these families are made of (linear, LayerNorm, the
 * two-layer GELU MLP, the patch embedding), written with SDK ops.
 *
 * Ownership: the model_tensors list owns the tensors and names. */
#ifndef KD_MODEL_PARTS_H
#define KD_MODEL_PARTS_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "model_tensors.h"

/* How a new tensor starts. Draws are float32 whatever the model's dtype,
 * so a float64 model starts from the float32 model's weights. */
typedef enum mp_init {
    MP_ZEROS,
    MP_ONES,
    MP_NORMAL,       /* N(0, scale) */
    MP_TRUNC_NORMAL, /* N(0, scale) redrawn outside +-2 scale (timm's lecun_normal_) */
    MP_UNIFORM,      /* U(-scale, scale) */
} mp_init;

/* A new tensor of the list's dtype, named by fmt, initialised from its
 * own random stream (its position in the list, as mt_init_* key it).
 * NULL on failure (message set). PARAM tensors require grad. */
kd_tensor *mp_add(model_tensors *l, uint32_t flags, mp_init init, double scale, int ndim,
                  const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

typedef struct mp_linear {
    kd_tensor *weight, *bias; /* [out, in], [out] */
} mp_linear;

typedef struct mp_norm {
    kd_tensor *weight, *bias;
} mp_norm;

/* Fully connected feed-forward: fc1, exact GELU, fc2 (timm's Mlp with
 * dropout 0). */
typedef struct mp_mlp {
    mp_linear fc1, fc2;
} mp_mlp;

/* "<prefix>.weight" [out, in] and "<prefix>.bias" [out]. */
kd_status mp_add_linear(model_tensors *l, mp_linear *lin, const char *prefix, int in, int out,
                        mp_init w_init, double w_scale, mp_init b_init, double b_scale);
/* A LayerNorm's weight (ones) and bias (zeros). */
kd_status mp_add_norm(model_tensors *l, mp_norm *norm, const char *prefix, int dim);

kd_tensor *mp_linear_forward(const mp_linear *lin, kd_tensor *x);
kd_tensor *mp_norm_forward(const mp_norm *norm, kd_tensor *x, double eps);
kd_tensor *mp_mlp_forward(const mp_mlp *mlp, kd_tensor *x);

/* A patch embedding: a convolution of kernel and stride `patch` (weight
 * [dim, in_chans, patch, patch], bias [dim]), its map flattened to tokens
 * [N, grid_h * grid_w, dim] in row-major patch order. */
typedef struct mp_patch_embed {
    kd_tensor *weight, *bias;
    int patch;
} mp_patch_embed;

kd_tensor *mp_patch_embed_forward(const mp_patch_embed *pe, kd_tensor *x);

/* The parameters every token model reads, checked. */
typedef struct mp_config {
    int num_classes, in_chans, img_size, patch_size, depth;
    double drop_rate, drop_path_rate;
    int grid; /* img_size / patch_size: patches per side */
} mp_config;

kd_status mp_read_config(const char *model, const kd_create_args *args, mp_config *out);

/* Checks images [N, in_chans, img_size, img_size]. */
kd_status mp_check_images(const char *model, const mp_config *c, const kd_tensor *x);
/* Checks a forward_from input shaped like a tap: [N, tokens, channels]
 * (tokens > 0) or [N, channels] (tokens 0). */
kd_status mp_check_tap_input(const char *model, const kd_tap_info *tap, int64_t tokens,
                             const kd_tensor *x);

/* Checkpoints saved from DataParallel name every tensor "module.<name>". */
void mp_strip_module_prefix(kd_weight_fix *fix);

#endif
