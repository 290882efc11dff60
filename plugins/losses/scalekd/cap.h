/* The cross-attention projector (CAP) of ScaleKD: a student NCHW map
 * [B, Cs, H, W] becomes tokens [B, qh * qw, Ct] in the teacher's space.
 *
 *   kv   = ReLU(BN(conv3x3_pad1_bias(x))) + pos_embed[1, Cs, H, W]
 *   q_in = ReLU(linear(queries))   a learned table [qh * qw, Ct] shared by
 *                                  the batch, or input tokens [B, qh * qw, Ct]
 *   A    = softmax(q kᵀ (Ct / heads)^-½ · softmax_scale) per head
 *   o    = LayerNorm(linear(concat_heads(A v)))
 *   out  = o + fc2(ReLU(fc1(o)))          fc1: Ct -> 4 Ct
 *
 * with q, k, v linear maps (bias) onto Ct. */
#ifndef SCALEKD_CAP_H
#define SCALEKD_CAP_H

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#define SCALEKD_HIDDEN __attribute__((visibility("hidden")))

/* The tensors of one projector, in its state_dict order. */
enum { CAP_CONV_W, CAP_CONV_B, CAP_BN_W, CAP_BN_B, CAP_BN_MEAN, CAP_BN_VAR, CAP_POS,
       CAP_QUERY, CAP_QPROJ_W, CAP_QPROJ_B, CAP_Q_W, CAP_Q_B, CAP_K_W, CAP_K_B, CAP_V_W,
       CAP_V_B, CAP_PROJ_W, CAP_PROJ_B, CAP_NORM_W, CAP_NORM_B, CAP_FC1_W, CAP_FC1_B,
       CAP_FC2_W, CAP_FC2_B, CAP_TENSORS };

SCALEKD_HIDDEN extern const char *const scalekd_cap_part_names[CAP_TENSORS];

typedef struct scalekd_cap_shape {
    int64_t cs, h, w;   /* the student map */
    int64_t ct, qh, qw; /* the teacher's token space */
    int heads;
    double softmax_scale;
    bool input_queries; /* no table: forward() takes the queries */
} scalekd_cap_shape;

typedef struct scalekd_cap {
    scalekd_cap_shape shape;
    kd_tensor *t[CAP_TENSORS]; /* t[CAP_QUERY] NULL with input queries */
} scalekd_cap;

/* Makes the tensors: linear layers and convolutions torch's default
 * (uniform, bound 1 / sqrt(fan_in)), the query table and positional
 * embedding uniform in ±0.02, norms at 1 and 0. Random streams start at
 * `stream`. */
SCALEKD_HIDDEN kd_status scalekd_cap_init(scalekd_cap *cap, const scalekd_cap_shape *shape,
                                         kd_dtype dtype, kd_device device, uint64_t seed,
                                         uint64_t stream);
SCALEKD_HIDDEN void scalekd_cap_free(scalekd_cap *cap);
/* x [B, Cs, H, W] -> [B, qh * qw, Ct]; queries [B, qh * qw, Ct] with
 * input queries, else NULL. NULL with the op's error set. */
SCALEKD_HIDDEN kd_tensor *scalekd_cap_forward(const scalekd_cap *cap, kd_tensor *x,
                                              kd_tensor *queries, bool training);

#endif
