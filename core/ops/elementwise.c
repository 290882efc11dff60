/* Binary elementwise ops with NumPy broadcasting: add, sub, mul, div. */
#include <string.h>

#include "../internal.h"
#ifdef KD_HAVE_CUDA
#include "../backend/cuda/cuda.h"
#endif

static const char *const binary_names[] = {"add", "sub", "mul", "div"};

/* One kernel per op and dtype, so that no loop decides the op per element
 * and every contiguous run vectorises. */
#define BINARY_OPS(X, T, S)                                                      \
    X(T, S, add, +)                                                            \
    X(T, S, sub, -)                                                            \
    X(T, S, mul, *)                                                            \
    X(T, S, div, /)

typedef void (*binary_same_fn)(void *out, const void *a, const void *b, int64_t n);
typedef void (*binary_bcast_fn)(void *out, const void *a, const int64_t *sa, const void *b,
                                const int64_t *sb, int ndim, const int64_t *shape);

#define DEFINE_BINARY_KERNELS(T, S, NAME, OP)                                    \
    /* Equal shapes: one flat loop. */                                         \
    static void same_##NAME##_##S(void *out_, const void *a_, const void *b_,  \
                                  int64_t n)                                   \
    {                                                                          \
        T *restrict out = out_;                                                \
        const T *restrict a = a_, *restrict b = b_;                            \
        _Pragma("omp parallel for simd if (n > 32768) schedule(static)")        \
        for (int64_t i = 0; i < n; i++)                                        \
            out[i] = a[i] OP b[i];                                             \
    }                                                                          \
    /* out contiguous with shape[ndim]; a and b read through broadcast       \
     * strides. The last dim is the inner loop; outer rows run in parallel. */ \
    static void bcast_##NAME##_##S(void *out_, const void *a_,                 \
                                   const int64_t *sa, const void *b_,          \
                                   const int64_t *sb, int ndim,                \
                                   const int64_t *shape)                       \
    {                                                                          \
        T *out = out_;                                                         \
        const T *a = a_, *b = b_;                                              \
        int64_t inner = ndim ? shape[ndim - 1] : 1;                            \
        int64_t ia = ndim ? sa[ndim - 1] : 0, ib = ndim ? sb[ndim - 1] : 0;    \
        int64_t rows = kd_shape_numel(ndim - 1 > 0 ? ndim - 1 : 0, shape);     \
        _Pragma("omp parallel for if (rows * inner > 32768) schedule(static)") \
        for (int64_t r = 0; r < rows; r++) {                                   \
            int64_t oa = 0, ob = 0, rem = r;                                   \
            for (int d = ndim - 2; d >= 0; d--) {                              \
                int64_t i = rem % shape[d];                                    \
                rem /= shape[d];                                               \
                oa += i * sa[d];                                               \
                ob += i * sb[d];                                               \
            }                                                                  \
            T *restrict o = out + r * inner;                                   \
            const T *restrict pa = a + oa, *restrict pb = b + ob;              \
            if (ia == 1 && ib == 1) {                                          \
                _Pragma("omp simd")                                            \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = pa[j] OP pb[j];                                     \
            } else if (ia == 1 && ib == 0) {                                   \
                T vb = pb[0];                                                  \
                _Pragma("omp simd")                                            \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = pa[j] OP vb;                                        \
            } else if (ia == 0 && ib == 1) {                                   \
                T va = pa[0];                                                  \
                _Pragma("omp simd")                                            \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = va OP pb[j];                                        \
            } else {                                                           \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = pa[j * ia] OP pb[j * ib];                           \
            }                                                                  \
        }                                                                      \
    }

BINARY_OPS(DEFINE_BINARY_KERNELS, float, f32)
BINARY_OPS(DEFINE_BINARY_KERNELS, double, f64)

/* Indexed by kd_binary_op, then f32 / f64. */
static const binary_same_fn binary_same[4][2] = {
    {same_add_f32, same_add_f64},
    {same_sub_f32, same_sub_f64},
    {same_mul_f32, same_mul_f64},
    {same_div_f32, same_div_f64},
};
static const binary_bcast_fn binary_bcast[4][2] = {
    {bcast_add_f32, bcast_add_f64},
    {bcast_sub_f32, bcast_sub_f64},
    {bcast_mul_f32, bcast_mul_f64},
    {bcast_div_f32, bcast_div_f64},
};

/* out = a op b without recording; a and b same dtype and device. */
static kd_tensor *binary_raw(kd_binary_op op, kd_tensor *a, kd_tensor *b)
{
    const char *name = binary_names[op];
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    if (kd_check_float(name, a) != KD_OK || kd_check_float(name, b) != KD_OK ||
        kd_check_same(name, a, b) != KD_OK ||
        kd_broadcast_shape(name, a, b, &ndim, shape) != KD_OK)
        return NULL;
    kd_tensor *ac = kd_contiguous_raw(a), *bc = kd_contiguous_raw(b);
    kd_tensor *out = ac && bc ? kd_tensor_empty(a->dtype, a->device, ndim, shape) : NULL;
    if (!out)
        return NULL;
    if (a->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        return kd_cuda_binary(op, out, ac, bc) == KD_OK ? out : NULL;
#else
        kd_error(KD_ERR_UNSUPPORTED, "%s: this build has no CUDA", name);
        return NULL;
#endif
    }
    int f64 = a->dtype == KD_F64;
    if (kd_tensor_same_shape(ac, bc)) {
        binary_same[op][f64](kd_tensor_data(out), kd_tensor_data(ac), kd_tensor_data(bc),
                             kd_tensor_numel(out));
        return out;
    }
    int64_t sa[KD_MAX_DIMS], sb[KD_MAX_DIMS];
    kd_broadcast_strides(ac, ndim, shape, sa);
    kd_broadcast_strides(bc, ndim, shape, sb);
    binary_bcast[op][f64](kd_tensor_data(out), kd_tensor_data(ac), sa, kd_tensor_data(bc), sb,
                          ndim, shape);
    return out;
}

/* Backward passes are written with the forward ops: grad mode is off while
 * they run, so nothing is recorded. */
static kd_status binary_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *a = node->inputs[0], *b = node->inputs[1];
    kd_binary_op op = (kd_binary_op)node->iarg[0];
    kd_tensor *ga = NULL, *gb = NULL;
    switch (op) {
    case KD_BIN_ADD:
        ga = g;
        gb = g;
        break;
    case KD_BIN_SUB:
        ga = g;
        gb = b->requires_grad ? kd_neg(g) : NULL;
        break;
    case KD_BIN_MUL:
        ga = a->requires_grad ? binary_raw(KD_BIN_MUL, g, b) : NULL;
        gb = b->requires_grad ? binary_raw(KD_BIN_MUL, g, a) : NULL;
        break;
    case KD_BIN_DIV:
        ga = binary_raw(KD_BIN_DIV, g, b); /* g / b, also used for gb */
        if (b->requires_grad) /* -g a / b^2 = -(g / b) * (a / b) */
            gb = kd_neg(binary_raw(KD_BIN_MUL, ga, binary_raw(KD_BIN_DIV, a, b)));
        break;
    }
    if (a->requires_grad) {
        kd_tensor *r = kd_sum_to_shape(ga, a->ndim, a->shape);
        kd_status st = r ? kd_grad_accumulate(a, r) : KD_ERR_NOMEM;
        if (st != KD_OK)
            return st;
    }
    if (b->requires_grad) {
        kd_tensor *r = kd_sum_to_shape(gb, b->ndim, b->shape);
        return r ? kd_grad_accumulate(b, r) : KD_ERR_NOMEM;
    }
    return KD_OK;
}

static kd_tensor *binary(kd_binary_op op, kd_tensor *a, kd_tensor *b)
{
    if (!a || !b)
        return NULL;
    kd_tensor *out = binary_raw(op, a, b);
    if (!out)
        return NULL;
    kd_tensor *inputs[2] = {a, b};
    kd_node *node;
    if (kd_record(binary_names[op], binary_backward, out, 2, inputs, &node) != KD_OK)
        return NULL;
    if (node)
        node->iarg[0] = op;
    return out;
}

kd_tensor *kd_add(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_ADD, a, b); }
kd_tensor *kd_sub(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_SUB, a, b); }
kd_tensor *kd_mul(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_MUL, a, b); }
kd_tensor *kd_div(kd_tensor *a, kd_tensor *b) { return binary(KD_BIN_DIV, a, b); }
