/* `kdengine plan --nodes N --gpus-per-node G`: what data parallel on a
 * cluster would cost per step, before paying for the cluster.
 *
 * P = N G processes, one per GPU, each at the per-process batch
 * b = ceil(global batch / P) (the largest share: the step waits for it).
 *
 *  - gradient bytes B: every trainable tensor the optimizer steps (the
 *    student's and the losses' own), numel x dtype size: what one step
 *    all-reduces;
 *  - ring all-reduce volume per process: 2 (P - 1) / P x B sent (and as
 *    much received): reduce-scatter, then all-gather;
 *  - time, hierarchical as NCCL does it on a cluster: within each node a
 *    ring of its G GPUs, 2 (G - 1) / G x B per GPU over the node's link;
 *    between nodes a ring of the N nodes, 2 (N - 1) / N x B through each
 *    node's network adapter (its G GPUs each carry a 1/G slice, sharing
 *    it). Bandwidths (GB = 1e9 bytes, per direction, see kd_link_info):
 *    NVLink 4 450 GB/s per GPU, PCIe 4.0 x16 25 GB/s per GPU, InfiniBand
 *    HDR 25 GB/s per node. Latency is not modelled (large messages);
 *  - compute per step per process at batch b: measured here (one forward
 *    and backward of the student and one teacher forward on zeros at batch
 *    b, on this machine), or with --tflops T, the student's 3 x 2 x MACs
 *    (backward about twice the forward) and the teacher's 2 x MACs per
 *    image over T TFLOP/s;
 *  - efficiency: compute / (compute + comm) with no overlap (the
 *    all-reduce after the backward, as kdengine's CPU path does it) and
 *    compute / (compute + max(0, comm - backward)) when the all-reduce
 *    overlaps the backward (bucketed, as on GPUs). */
#ifndef KD_CORE_PLAN_SCALING_H
#define KD_CORE_PLAN_SCALING_H

#include <stdio.h>

#include "session.h"

typedef enum kd_link { KD_LINK_NVLINK = 0, KD_LINK_PCIE, KD_LINK_IB } kd_link;

typedef struct kd_link_info {
    const char *flag;        /* the --interconnect value */
    const char *name;        /* with its generation */
    double bytes_per_second; /* per direction */
    const char *source;      /* where the figure comes from */
} kd_link_info;

/* The figures of a link. */
const kd_link_info *kd_link_of(kd_link link);
/* The link a --interconnect value names; false when none does. */
bool kd_link_parse(const char *flag, kd_link *out);

typedef struct kd_scaling_options {
    int nodes, gpus_per_node; /* >= 1 */
    kd_link intra_node;       /* the link among a node's GPUs (KD_LINK_IB: none,
                                 they go through the node's adapter) */
    double tflops;            /* > 0: compute from FLOPs at this rate; 0: measured */
} kd_scaling_options;

/* Prints the scaling estimate after kd_session_plan. */
kd_status kd_plan_scaling(kd_session *s, const kd_scaling_options *o, FILE *out);

#endif
