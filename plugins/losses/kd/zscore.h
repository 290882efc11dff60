/* Row-wise Z-score of logits (Sun et al., CVPR 2024, "Logit Standardization
 * in Knowledge Distillation"), shared by the kd and logit_stand losses. */
#ifndef KD_PLUGIN_ZSCORE_H
#define KD_PLUGIN_ZSCORE_H

#include <kdengine/tensor.h>

/* Added to the standard deviation, not the variance, as the paper's code. */
#define ZSCORE_EPS 1e-7

/* (x - mean) / (std + ZSCORE_EPS) / temperature over dim 1 of x [N, C]:
 * the Z-score at a base temperature, what the paper feeds the softmax. std
 * is unbiased (C - 1); C >= 2. With gradient; a constant row gives zeros
 * and a finite gradient. NULL with kd_last_error() set on failure. */
__attribute__((visibility("hidden"))) kd_tensor *zscore_rows(kd_tensor *x,
                                                             double temperature);

#endif
