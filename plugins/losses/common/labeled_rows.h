/* The labeled rows of a batch that mixes in unlabeled samples (label
 * KD_LABEL_NONE, data.train.unlabeled), for the losses that need a label
 * per row (ce, dkd): compiled into each of them. */
#ifndef KD_LOSSES_LABELED_ROWS_H
#define KD_LOSSES_LABELED_ROWS_H

#include <stdint.h>

#include <kdengine/tensor.h>

/* *rows: NULL when every one of labels' N rows has a label; else an I64
 * [n] tensor (scope-owned) of the labeled rows' positions in order, with
 * *n_labeled = n, possibly 0. labels: I64 [N] on any device. */
kd_status kd_labeled_rows(kd_tensor *labels, kd_tensor **rows, int64_t *n_labeled);

#endif
