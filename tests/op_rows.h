/* The op test table. One row = one op case: how to call it, its inputs, the
 * PyTorch expression that must agree with it, and tolerances. test_ops runs
 * every row twice: a finite-difference gradient check in f64 and a parity
 * check in f32 against torch (one Python process for the whole table).
 *
 * Adding an op's tests is adding rows to the tests/ops/rows_*.c file of its
 * family. */
#ifndef KD_TEST_OP_ROWS_H
#define KD_TEST_OP_ROWS_H

#include <stdint.h>

#include <kdengine/kdengine.h>

typedef enum kt_input_kind {
    KT_FLOAT = 0,  /* uniform in [-2, 2), differentiable */
    KT_POSITIVE,   /* uniform in [0.5, 2), differentiable */
    KT_CONST,      /* uniform in [-2, 2), not differentiated */
    KT_CONST_POS,  /* uniform in [0.5, 2), not differentiated (a variance) */
    KT_PROB,       /* rows of the last dim sum to 1, not differentiated */
    KT_PROB_GRAD,  /* same, differentiated */
    KT_LABELS,     /* I64 uniform in [0, range) */
    KT_MASK,       /* U8, 0 or 1 with probability 1/2 */
} kt_input_kind;

typedef struct kt_input {
    kt_input_kind kind;
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    int64_t range; /* KT_LABELS */
} kt_input;

/* Calls the op on the row's inputs (already made, f32 or f64). Anything
 * random inside must be seeded by a constant so every call agrees. */
typedef kd_tensor *(*kt_op_fn)(kd_tensor *const *x);

enum {
    KT_NO_GRADCHECK = 1u << 0, /* output not differentiable (argmax) */
    KT_NO_BACKWARD = 1u << 1,  /* parity of values only */
    /* A deliberately wrong backward: the gradient check must fail it (the
     * harness can fail); parity of values only. */
    KT_WRONG_BACKWARD = 1u << 2,
};

typedef struct kt_op_row {
    const char *name; /* unique: "conv2d.3x3_s2_pad1" */
    kt_op_fn fn;
    /* A Python expression over x (the list of inputs as torch tensors; U8
     * masks arrive as bool), F (torch.nn.functional), torch, and ykd (our
     * output, for ops whose randomness torch cannot replay). */
    const char *torch;
    int n_inputs;
    kt_input in[4];
    double parity_tol; /* relative norm error in f32; 0 means 1e-5 */
    double grad_tol;   /* gradcheck tolerance in f64; 0 means 1e-6 */
    unsigned flags;
} kt_op_row;

/* Each family's table ends with a row whose name is NULL. */
extern const kt_op_row kt_rows_elementwise[];
extern const kt_op_row kt_rows_reduce[];
extern const kt_op_row kt_rows_linalg[];
extern const kt_op_row kt_rows_conv[];
extern const kt_op_row kt_rows_norm[];
extern const kt_op_row kt_rows_shape[];
extern const kt_op_row kt_rows_loss[];
extern const kt_op_row kt_rows_custom[];

#endif
