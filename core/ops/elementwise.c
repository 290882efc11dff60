/* Binary elementwise ops with NumPy broadcasting: add, sub, mul, div. */
#include <string.h>

#include "../internal.h"
#ifdef KD_HAVE_CUDA
#include "../backend/cuda/cuda.h"
#endif

static const char *const binary_names[] = {"add", "sub", "mul", "div"};

/* Equal shapes: one flat loop the compiler vectorises. */
#define BINARY_FLAT_LOOP(EXPR)                                                  \
    _Pragma("omp parallel for if (n > 32768) schedule(static)")                 \
    for (int64_t i = 0; i < n; i++)                                             \
        out[i] = EXPR

#define DEFINE_BINARY_KERNEL(T, SUFFIX)                                          \
    static inline T apply_##SUFFIX(kd_binary_op op, T a, T b)                  \
    {                                                                          \
        switch (op) {                                                          \
        case KD_BIN_ADD: return a + b;                                         \
        case KD_BIN_SUB: return a - b;                                         \
        case KD_BIN_MUL: return a * b;                                         \
        default: return a / b;                                                 \
        }                                                                      \
    }                                                                          \
    /* out contiguous with shape[ndim]; a and b read through broadcast       \
     * strides. The last dim is the inner loop; outer rows run in parallel. */ \
    static void binary_same_##SUFFIX(kd_binary_op op, T *out, const T *a,      \
                                     const T *b, int64_t n)                    \
    {                                                                          \
        switch (op) {                                                          \
        case KD_BIN_ADD: BINARY_FLAT_LOOP(a[i] + b[i]); break;                 \
        case KD_BIN_SUB: BINARY_FLAT_LOOP(a[i] - b[i]); break;                 \
        case KD_BIN_MUL: BINARY_FLAT_LOOP(a[i] * b[i]); break;                 \
        default: BINARY_FLAT_LOOP(a[i] / b[i]); break;                         \
        }                                                                      \
    }                                                                          \
    static void binary_##SUFFIX(kd_binary_op op, T *out, const T *a,           \
                                const int64_t *sa, const T *b,                 \
                                const int64_t *sb, int ndim,                   \
                                const int64_t *shape)                          \
    {                                                                          \
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
            T *o = out + r * inner;                                            \
            const T *pa = a + oa, *pb = b + ob;                                \
            if (ia == 1 && ib == 1) {                                          \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = apply_##SUFFIX(op, pa[j], pb[j]);                   \
            } else if (ia == 1 && ib == 0) {                                   \
                T vb = pb[0];                                                  \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = apply_##SUFFIX(op, pa[j], vb);                      \
            } else {                                                           \
                for (int64_t j = 0; j < inner; j++)                            \
                    o[j] = apply_##SUFFIX(op, pa[j * ia], pb[j * ib]);         \
            }                                                                  \
        }                                                                      \
    }

DEFINE_BINARY_KERNEL(float, f32)
DEFINE_BINARY_KERNEL(double, f64)

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
    if (kd_tensor_same_shape(ac, bc)) {
        int64_t n = kd_tensor_numel(out);
        if (a->dtype == KD_F32)
            binary_same_f32(op, kd_tensor_data(out), kd_tensor_data(ac), kd_tensor_data(bc), n);
        else
            binary_same_f64(op, kd_tensor_data(out), kd_tensor_data(ac), kd_tensor_data(bc), n);
        return out;
    }
    int64_t sa[KD_MAX_DIMS], sb[KD_MAX_DIMS];
    kd_broadcast_strides(ac, ndim, shape, sa);
    kd_broadcast_strides(bc, ndim, shape, sb);
    if (a->dtype == KD_F32)
        binary_f32(op, kd_tensor_data(out), kd_tensor_data(ac), sa,
                   kd_tensor_data(bc), sb, ndim, shape);
    else
        binary_f64(op, kd_tensor_data(out), kd_tensor_data(ac), sa,
                   kd_tensor_data(bc), sb, ndim, shape);
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
