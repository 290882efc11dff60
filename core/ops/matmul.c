/* Matrix products: kd_matmul (batched, broadcasting) and kd_linear, on
 * OpenBLAS (CPU) or cuBLAS through kd_cuda_gemm (CUDA).
 *
 * Every product here, forward or backward, is one batched GEMM problem:
 * C[i] = alpha * op(A[i]) op(B[i]) + beta * C[i] over a batch index i, where
 * each operand reads its matrix through its own batch strides (0 where it is
 * broadcast) and may be stored transposed, so transposed views (k^T in
 * attention) reach BLAS without a copy. The kernels are in
 * core/backend/cpu/matmul.c and core/backend/cuda/cuda_gemm.c. */
#include <limits.h>
#include <string.h>

#include "../backend/cpu/cpu.h"
#include "../internal.h"
#ifdef KD_HAVE_CUDA
#include "../backend/cuda/cuda.h"
#endif

typedef struct gemm_operand {
    char *data;   /* matrix 0 */
    bool trans;   /* memory holds the transpose of the logical matrix */
    int64_t ld;   /* leading dimension of the stored (row-major) matrix */
    int64_t bstride[KD_MAX_DIMS]; /* elements per batch step; 0 = broadcast */
} gemm_operand;

typedef struct gemm_problem {
    kd_dtype dtype;
    kd_device device;
    int nbatch;
    int64_t bshape[KD_MAX_DIMS];
    int64_t m, n, k;
    gemm_operand a, b, c; /* c is never transposed */
} gemm_problem;

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Reads the last two dims of t as a BLAS matrix (row-major, or transposed);
 * false when neither of the two strides is unit. */
static bool matrix_layout(const kd_tensor *t, bool *trans, int64_t *ld)
{
    int nd = t->ndim;
    int64_t rows = t->shape[nd - 2], cols = t->shape[nd - 1];
    int64_t sr = t->stride[nd - 2], sc = t->stride[nd - 1];
    if ((sc == 1 || cols == 1) && (rows == 1 || sr >= max64(cols, 1))) {
        *trans = false;
        *ld = rows == 1 ? max64(cols, 1) : sr;
        return true;
    }
    if ((sr == 1 || rows == 1) && (cols == 1 || sc >= max64(rows, 1))) {
        *trans = true;
        *ld = cols == 1 ? max64(rows, 1) : sc;
        return true;
    }
    return false;
}

/* t with BLAS-readable matrices: itself, or a contiguous copy. */
static kd_tensor *blas_ready(kd_tensor *t)
{
    bool trans;
    int64_t ld;
    return matrix_layout(t, &trans, &ld) ? t : kd_contiguous_raw(t);
}

/* An operand over t's matrices, t's batch dims right-aligned to the
 * problem's batch shape. t must be blas_ready. */
static gemm_operand operand_of(const kd_tensor *t, int nbatch, const int64_t *bshape)
{
    gemm_operand op = {0};
    matrix_layout(t, &op.trans, &op.ld);
    op.data = (char *)kd_tensor_data(t);
    int tb = t->ndim - 2;
    for (int i = 0; i < nbatch; i++) {
        int it = i - (nbatch - tb);
        op.bstride[i] = (it < 0 || (t->shape[it] == 1 && bshape[i] != 1)) ? 0 : t->stride[it];
    }
    return op;
}

/* The operand reading the same memory as the transpose of its matrix. */
static gemm_operand transposed(gemm_operand op)
{
    op.trans = !op.trans;
    return op;
}

/* True when t's batch dims and rows merge into one run of rows: a plain
 * (not transposed) layout whose batch strides continue the row stride. */
static bool rows_merge(const kd_tensor *t)
{
    bool trans;
    int64_t ld;
    if (!matrix_layout(t, &trans, &ld) || trans)
        return false;
    int nd = t->ndim;
    int64_t expect = ld * t->shape[nd - 2];
    for (int d = nd - 3; d >= 0; d--) {
        if (t->shape[d] == 1)
            continue;
        if (t->stride[d] != expect)
            return false;
        expect *= t->shape[d];
    }
    return true;
}

static kd_status gemm_check_int(const char *op, const gemm_problem *p)
{
    if (p->m > INT_MAX || p->n > INT_MAX || p->k > INT_MAX || p->a.ld > INT_MAX ||
        p->b.ld > INT_MAX || p->c.ld > INT_MAX)
        return kd_error(KD_ERR_UNSUPPORTED,
                        "%s: a %lld x %lld x %lld product exceeds BLAS's int sizes", op,
                        (long long)p->m, (long long)p->n, (long long)p->k);
    return KD_OK;
}

/* One GEMM at a, b, c; on CUDA `inner` products along the problem's last
 * batch dim. */
static kd_status gemm_call(const char *op, const gemm_problem *p, double alpha, double beta,
                           const char *a, const char *b, char *c, int64_t inner)
{
    if (p->device != KD_CUDA) {
        kd_cpu_gemm(p->dtype, p->a.trans, p->b.trans, p->m, p->n, p->k, alpha, a, p->a.ld, b,
                    p->b.ld, beta, c, p->c.ld);
        return KD_OK;
    }
#ifdef KD_HAVE_CUDA
    (void)op;
    int last = p->nbatch - 1;
    bool batched = inner > 1;
    return kd_cuda_gemm(p->dtype, p->a.trans, p->b.trans, p->m, p->n, p->k, alpha, a, p->a.ld,
                        batched ? p->a.bstride[last] : 0, b, p->b.ld,
                        batched ? p->b.bstride[last] : 0, beta, c, p->c.ld,
                        batched ? p->c.bstride[last] : 0, inner);
#else
    (void)inner;
    return kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", op);
#endif
}

/* Runs the problem. When c is broadcast over a batch dim (a gradient summed
 * over it), the products accumulate one after another, so beta must be 1
 * and c must start zeroed. With k == 0 the caller zeroes c. */
static kd_status gemm_run(const char *op, const gemm_problem *p, double alpha, double beta)
{
    if (p->m == 0 || p->n == 0 || p->k == 0)
        return KD_OK;
    kd_status st = gemm_check_int(op, p);
    if (st != KD_OK)
        return st;
    size_t es = kd_dtype_size(p->dtype);
    int nb = p->nbatch;
    /* On CUDA the innermost batch dim is one strided-batched call, unless c
     * is broadcast over it (the products must then add up in turn). */
    int64_t inner = 1;
    if (p->device == KD_CUDA && nb > 0 && p->c.bstride[nb - 1] != 0) {
        inner = p->bshape[nb - 1];
        nb--;
    }
    int64_t outer = kd_shape_numel(nb, p->bshape), idx[KD_MAX_DIMS] = {0};
    int64_t oa = 0, ob = 0, oc = 0;
    for (int64_t i = 0; i < outer; i++) {
        const char *a = p->a.data + oa * (int64_t)es, *b = p->b.data + ob * (int64_t)es;
        char *c = p->c.data + oc * (int64_t)es;
        st = gemm_call(op, p, alpha, beta, a, b, c, inner);
        if (st != KD_OK)
            return st;
        for (int d = nb - 1; d >= 0; d--) {
            oa += p->a.bstride[d];
            ob += p->b.bstride[d];
            oc += p->c.bstride[d];
            if (++idx[d] < p->bshape[d])
                break;
            oa -= p->a.bstride[d] * p->bshape[d];
            ob -= p->b.bstride[d] * p->bshape[d];
            oc -= p->c.bstride[d] * p->bshape[d];
            idx[d] = 0;
        }
    }
    return KD_OK;
}

/* ------------------------------------------------------------- matmul */

/* The product a @ b into out (contiguous [batch..., M, N]) or its
 * gradients: a and b are blas_ready. When b has no batch and a's rows merge,
 * the batch folds into M and the whole product is one GEMM. */
typedef struct matmul_shape {
    int nbatch;
    int64_t bshape[KD_MAX_DIMS];
    int64_t m, n, k;
    bool folded;
} matmul_shape;

static matmul_shape matmul_shape_of(const kd_tensor *a, const kd_tensor *b, int nbatch,
                                    const int64_t *bshape)
{
    matmul_shape s = {.nbatch = nbatch, .m = a->shape[a->ndim - 2],
                      .n = b->shape[b->ndim - 1], .k = a->shape[a->ndim - 1]};
    memcpy(s.bshape, bshape, (size_t)nbatch * sizeof *bshape);
    int64_t bbatch = kd_shape_numel(b->ndim - 2, b->shape);
    if (nbatch > 0 && bbatch == 1 && rows_merge(a)) {
        s.m *= kd_shape_numel(nbatch, bshape);
        s.nbatch = 0;
        s.folded = true;
    }
    return s;
}

/* A contiguous tensor (output or gradient) as an operand of shape s. */
static gemm_operand dense_operand(const kd_tensor *t, int64_t cols, const matmul_shape *s)
{
    gemm_operand op = {.data = kd_tensor_data(t), .trans = false, .ld = max64(cols, 1)};
    if (!s->folded)
        op = operand_of(t, s->nbatch, s->bshape);
    return op;
}

static kd_status matmul_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *a = node->saved[0], *b = node->saved[1];
    kd_tensor *ta = node->inputs[0], *tb = node->inputs[1];
    int nbatch = (int)node->iarg[0];
    int64_t bshape[KD_MAX_DIMS];
    memcpy(bshape, node->iarg + 1, (size_t)nbatch * sizeof *bshape);
    matmul_shape s = matmul_shape_of(a, b, nbatch, bshape);
    gemm_operand oa = operand_of(a, s.nbatch, s.bshape), ob = operand_of(b, s.nbatch, s.bshape);
    gemm_operand og = dense_operand(g, s.n, &s);
    if (ta->requires_grad) {
        /* dA = dC B^T, summed over the batch dims a was broadcast on. */
        bool bcast = !s.folded && kd_shape_numel(a->ndim - 2, a->shape) !=
                                      kd_shape_numel(s.nbatch, s.bshape);
        kd_tensor *ga = (bcast || s.n == 0 ? kd_tensor_zeros : kd_tensor_empty)(
            a->dtype, a->device, a->ndim, a->shape);
        if (!ga)
            return KD_ERR_NOMEM;
        gemm_problem p = {a->dtype, a->device, s.nbatch, {0}, s.m, s.k, s.n,
                          og, transposed(ob), dense_operand(ga, s.k, &s)};
        memcpy(p.bshape, s.bshape, sizeof p.bshape);
        kd_status st = gemm_run("matmul backward", &p, 1.0, bcast ? 1.0 : 0.0);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(ta, ga);
        if (st != KD_OK)
            return st;
    }
    if (tb->requires_grad) {
        /* dB = A^T dC, summed over the batch dims b was broadcast on; a
         * folded product sums over the merged rows inside its one GEMM. */
        bool bcast = !s.folded && kd_shape_numel(b->ndim - 2, b->shape) !=
                                      kd_shape_numel(s.nbatch, s.bshape);
        kd_tensor *gb = (bcast || s.m == 0 ? kd_tensor_zeros : kd_tensor_empty)(
            b->dtype, b->device, b->ndim, b->shape);
        if (!gb)
            return KD_ERR_NOMEM;
        gemm_problem p = {b->dtype, b->device, s.nbatch, {0}, s.k, s.n, s.m,
                          transposed(oa), og, dense_operand(gb, s.n, &s)};
        memcpy(p.bshape, s.bshape, sizeof p.bshape);
        kd_status st = gemm_run("matmul backward", &p, 1.0, bcast ? 1.0 : 0.0);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tb, gb);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

kd_tensor *kd_matmul(kd_tensor *a, kd_tensor *b)
{
    if (!a || !b)
        return NULL;
    if (kd_check_float("matmul", a) != KD_OK || kd_check_float("matmul", b) != KD_OK ||
        kd_check_same("matmul", a, b) != KD_OK)
        return NULL;
    char sa[96], sb[96];
    if (a->ndim < 2 || b->ndim < 2) {
        kd_error(KD_ERR_INVALID, "matmul: operands %s and %s must have at least 2 dims",
                 kd_shape_str(a, sa, sizeof sa), kd_shape_str(b, sb, sizeof sb));
        return NULL;
    }
    int64_t m = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1];
    int64_t n = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != k) {
        kd_error(KD_ERR_INVALID, "matmul: %s @ %s: inner dims %lld and %lld differ",
                 kd_shape_str(a, sa, sizeof sa), kd_shape_str(b, sb, sizeof sb),
                 (long long)k, (long long)b->shape[b->ndim - 2]);
        return NULL;
    }
    int nbatch = (a->ndim > b->ndim ? a->ndim : b->ndim) - 2;
    int64_t shape[KD_MAX_DIMS];
    for (int i = 0; i < nbatch; i++) {
        int ia = i - (nbatch - (a->ndim - 2)), ib = i - (nbatch - (b->ndim - 2));
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            kd_error(KD_ERR_INVALID, "matmul: batch dims of %s and %s do not broadcast",
                     kd_shape_str(a, sa, sizeof sa), kd_shape_str(b, sb, sizeof sb));
            return NULL;
        }
        shape[i] = da == 1 ? db : da;
    }
    shape[nbatch] = m;
    shape[nbatch + 1] = n;
    kd_tensor *ar = blas_ready(a), *br = blas_ready(b);
    kd_tensor *out = ar && br ? (k == 0 ? kd_tensor_zeros : kd_tensor_empty)(
                                    a->dtype, a->device, nbatch + 2, shape)
                              : NULL;
    if (!out)
        return NULL;
    matmul_shape s = matmul_shape_of(ar, br, nbatch, shape);
    gemm_problem p = {a->dtype, a->device, s.nbatch, {0}, s.m, s.n, s.k,
                      operand_of(ar, s.nbatch, s.bshape), operand_of(br, s.nbatch, s.bshape),
                      dense_operand(out, n, &s)};
    memcpy(p.bshape, s.bshape, sizeof p.bshape);
    if (gemm_run("matmul", &p, 1.0, 0.0) != KD_OK)
        return NULL;
    kd_macs_add(kd_tensor_numel(out) * k);
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record("matmul", matmul_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = ar;
        node->saved[1] = br;
        node->iarg[0] = nbatch;
        memcpy(node->iarg + 1, shape, (size_t)nbatch * sizeof *shape);
    }
    return out;
}

/* ------------------------------------------------------------- linear */

/* Row sums of g viewed as [rows, cols]: the bias gradient. */
static kd_tensor *column_sums(kd_tensor *g, int64_t rows, int64_t cols)
{
    int64_t shape[1] = {cols};
    kd_tensor *out = kd_tensor_zeros(g->dtype, g->device, 1, shape);
    if (!out)
        return NULL;
    if (g->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        return kd_cuda_reduce_sum(out, g, 1, rows, cols, 1.0) == KD_OK ? out : NULL;
#else
        kd_error(KD_ERR_UNSUPPORTED, "linear: this build has no CUDA");
        return NULL;
#endif
    }
    kd_cpu_column_sums(g->dtype, kd_tensor_data(out), kd_tensor_data(g), rows, cols);
    return out;
}

/* A contiguous [rows, cols] buffer as a 2-D operand. */
static gemm_operand rows_operand(const kd_tensor *t, int64_t cols)
{
    return (gemm_operand){.data = kd_tensor_data(t), .trans = false, .ld = max64(cols, 1)};
}

static kd_status linear_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->saved[0], *w = node->saved[1];
    kd_tensor *tx = node->inputs[0], *tw = node->inputs[1], *tbias = node->inputs[2];
    int64_t in = w->shape[1], out = w->shape[0], rows = kd_shape_numel(x->ndim - 1, x->shape);
    gemm_operand ow = operand_of(w, 0, NULL);
    if (tx->requires_grad) { /* dX = dY W */
        kd_tensor *gx = (out == 0 ? kd_tensor_zeros : kd_tensor_empty)(x->dtype, x->device,
                                                                        x->ndim, x->shape);
        if (!gx)
            return KD_ERR_NOMEM;
        gemm_problem p = {x->dtype, x->device, 0, {0}, rows, in, out,
                          rows_operand(g, out), ow, rows_operand(gx, in)};
        kd_status st = gemm_run("linear backward", &p, 1.0, 0.0);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tx, gx);
        if (st != KD_OK)
            return st;
    }
    if (tw->requires_grad) { /* dW = dY^T X */
        kd_tensor *gw = (rows == 0 ? kd_tensor_zeros : kd_tensor_empty)(w->dtype, w->device,
                                                                         2, w->shape);
        if (!gw)
            return KD_ERR_NOMEM;
        gemm_problem p = {x->dtype, x->device, 0, {0}, out, in, rows,
                          transposed(rows_operand(g, out)), rows_operand(x, in),
                          rows_operand(gw, in)};
        kd_status st = gemm_run("linear backward", &p, 1.0, 0.0);
        if (st == KD_OK)
            st = kd_grad_accumulate_take(tw, gw);
        if (st != KD_OK)
            return st;
    }
    if (tbias && tbias->requires_grad) {
        kd_tensor *gb = column_sums(g, rows, out);
        return gb ? kd_grad_accumulate_take(tbias, gb) : KD_ERR_NOMEM;
    }
    return KD_OK;
}

/* y = x W^T + bias for the problem p (y contiguous [rows, out]): on the
 * CPU the rows start as copies of the bias and the GEMM adds into them. */
static kd_status add_bias(const gemm_problem *p, kd_tensor *y, kd_tensor *bias)
{
    if (!bias)
        return gemm_run("linear", p, 1.0, 0.0);
    if (y->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        kd_status st = gemm_run("linear", p, 1.0, 0.0);
        return st == KD_OK ? kd_cuda_binary(KD_BIN_ADD, y, y, bias) : st;
#else
        return kd_error(KD_ERR_UNSUPPORTED, "linear: this build has no CUDA");
#endif
    }
    kd_cpu_repeat_row(kd_tensor_data(y), kd_tensor_data(bias), p->m,
                      (size_t)p->n * kd_dtype_size(y->dtype));
    return gemm_run("linear", p, 1.0, 1.0);
}

kd_tensor *kd_linear(kd_tensor *x, kd_tensor *weight, kd_tensor *bias)
{
    if (!x || !weight)
        return NULL;
    if (kd_check_float("linear", x) != KD_OK || kd_check_float("linear", weight) != KD_OK ||
        kd_check_same("linear", x, weight) != KD_OK ||
        (bias && (kd_check_float("linear", bias) != KD_OK ||
                  kd_check_same("linear", x, bias) != KD_OK)))
        return NULL;
    char sx[96], sw[96], sb[96];
    if (x->ndim < 1 || weight->ndim != 2 || x->shape[x->ndim - 1] != weight->shape[1]) {
        kd_error(KD_ERR_INVALID, "linear: input %s and weight %s ([out, in] expected)",
                 kd_shape_str(x, sx, sizeof sx), kd_shape_str(weight, sw, sizeof sw));
        return NULL;
    }
    int64_t in = weight->shape[1], nout = weight->shape[0];
    if (bias && (bias->ndim != 1 || bias->shape[0] != nout)) {
        kd_error(KD_ERR_INVALID, "linear: bias %s for weight %s ([%lld] expected)",
                 kd_shape_str(bias, sb, sizeof sb), kd_shape_str(weight, sw, sizeof sw),
                 (long long)nout);
        return NULL;
    }
    int64_t shape[KD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = nout;
    kd_tensor *xc = kd_contiguous_raw(x), *wr = blas_ready(weight);
    kd_tensor *bc = bias ? kd_contiguous_raw(bias) : NULL;
    kd_tensor *y = xc && wr && (bc || !bias)
                       ? (in == 0 ? kd_tensor_zeros : kd_tensor_empty)(
                             x->dtype, x->device, x->ndim, shape)
                       : NULL;
    if (!y)
        return NULL;
    int64_t rows = kd_shape_numel(x->ndim - 1, x->shape);
    gemm_problem p = {x->dtype, x->device, 0, {0}, rows, nout, in, rows_operand(xc, in),
                      transposed(operand_of(wr, 0, NULL)), rows_operand(y, nout)};
    if (add_bias(&p, y, bc) != KD_OK)
        return NULL;
    kd_macs_add(rows * nout * in);
    kd_tensor *inputs[3] = {x, weight, bias};
    kd_node *node;
    if (kd_record("linear", linear_backward, y, bias ? 3 : 2, inputs, &node) != KD_OK)
        return NULL;
    if (node) {
        node->saved[0] = xc;
        node->saved[1] = wr;
    }
    return y;
}
