/* The per-device dispatch. An op's front (core/ops/) checks its inputs,
 * works out shapes and records the op; its kernels are plain functions per
 * device: core/backend/cpu/cpu.h and core/backend/cuda/cuda.h. This table
 * says which device has which op: the fronts refuse the rest through
 * kd_backend_check, and test_ops runs every row on every device that has
 * the row's op. */
#ifndef KD_BACKEND_H
#define KD_BACKEND_H

#include <stdbool.h>

#include "../internal.h"

/* Every size of one convolution problem. All fields are int64 so the
 * struct has no padding and compares with memcmp (oneDNN's cache key). */
typedef struct kd_conv2d_geom {
    int64_t n, cin, h, w;
    int64_t cout, kh, kw;
    int64_t oh, ow;
    int64_t stride[2], pad[2], dil[2];
    int64_t groups;
} kd_conv2d_geom;

/* Scaled dot-product attention: q [..., L, D], k [..., S, D], v [..., S,
 * Dv] with `nbatch` equal batch dims. */
typedef struct kd_attn_dims {
    int nbatch;                 /* batch dims before [L, D] */
    int64_t batch[KD_MAX_DIMS]; /* their sizes */
    int64_t b, l, s, d, dv;     /* b = product of batch sizes */
} kd_attn_dims;

/* Ops are named as in ops.h without the kd_ prefix ("conv2d",
 * "pow_scalar"). The CPU has every op. */
bool kd_backend_has_op(kd_device device, const char *op);
/* KD_OK when x's device has op; else KD_ERR_UNSUPPORTED naming both. */
kd_status kd_backend_check(const char *op, const kd_tensor *x);

#endif
