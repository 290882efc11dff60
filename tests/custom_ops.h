/* Ops defined the way a plugin defines them (kdengine/custom_op.h): the
 * forward computed outside the tape, the backward handed to
 * kd_custom_apply. The op table (tests/ops/rows_custom.c) and the test kit's
 * test run them through their gradient checks. */
#ifndef KD_TEST_CUSTOM_OPS_H
#define KD_TEST_CUSTOM_OPS_H

#include <kdengine/kdengine.h>

/* log(1 + exp(x)), any float dtype and strides. */
kd_tensor *kt_custom_softplus(kd_tensor *x);
/* The same forward with a backward that forgets the output's gradient
 * (returns sigmoid(x)): a gradient check must fail it. */
kd_tensor *kt_custom_softplus_wrong(kd_tensor *x);
/* scale * a * b^2 (same shapes); scale lives in the op's ctx. */
kd_tensor *kt_custom_scaled_mul_square(kd_tensor *a, kd_tensor *b, double scale);

#endif
