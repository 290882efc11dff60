/* CRD's scores against a memory bank as one recorded op:
 *
 *   scores[b, k] = <bank[idx[b, k]], v[b]>          [B, K + 1]
 *
 * computed straight from the bank rows, so a step holds B (K + 1) scores
 * instead of the B (K + 1) d gathered rows the reference materialises
 * (0.5 GB a side in f32 at K 16384, batch 64, d 128). The gradient flows to
 * v only. The loss rewrites the batch's own rows of the bank after the
 * forward and before the backward (over several processes, the global
 * batch's), so the op keeps those rows as they were and the backward reads
 * them from there. */
#ifndef KD_PLUGIN_CRD_SCORES_H
#define KD_PLUGIN_CRD_SCORES_H

#include <kdengine/tensor.h>

#include "crd_negatives.h"

/* bank [N, d] (CPU, f32 or f64), idx I64 [B * (K + 1)] rows of bank (alive
 * until the backward: a tensor of the step), v [B, d] of bank's dtype,
 * own [n_own] the rows the caller will overwrite before the backward
 * (distinct).
 * A new tensor of the scope, or NULL with kd_last_error() set. */
CRD_HIDDEN kd_tensor *crd_bank_scores(kd_tensor *bank, kd_tensor *idx, kd_tensor *v,
                                      const int64_t *own, int64_t n_own);

#endif
