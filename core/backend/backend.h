/* The per-device dispatch. An op's front (core/ops/) checks its inputs,
 * works out shapes and records the op; its kernels are plain functions per
 * device: core/backend/cpu/cpu.h and core/backend/cuda/cuda.h. Here: the
 * problem descriptions every device's kernels take, and the table of which
 * device has which op (the fronts refuse the rest through kd_backend_check,
 * and test_ops runs every row on every device that has the row's op). */
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

/* 2-D pooling over planes [planes, h, w] into [planes, oh, ow]. Kernel,
 * stride and padding are for the windowed pools (max, avg); include_pad is
 * avg_pool2d's count_include_pad. */
typedef enum kd_pool_kind { KD_POOL_MAX, KD_POOL_AVG, KD_POOL_ADAPTIVE } kd_pool_kind;

typedef struct kd_pool_params {
    kd_pool_kind kind;
    int64_t planes, h, w, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw;
    bool include_pad;
} kd_pool_params;

/* Resizing planes [planes, h, w] to [planes, oh, ow] (kd_interpolate). */
typedef struct kd_interp_params {
    kd_interp_mode mode;
    bool antialias;
    int64_t planes, h, w, oh, ow;
} kd_interp_params;

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
