/* Elementwise kernels: binary ops with broadcasting, every unary op and its
 * derivative. The formulas are those of core/ops/unary.c, so both devices
 * compute the same function. */
#include "cuda_kernel.h"

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794
#define GELU_K 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_C 0.044715

/* --- one map kernel for every same-shape elementwise job ---
 * out[i] = f(in[0][i], ..., in[N-1][i]). When every pointer is 16-byte
 * aligned the body moves 128 bits per access and a scalar loop does the
 * tail. out may be one of the inputs: each element is read before it is
 * written, by the same thread. */
template <typename T, int N> struct map_inputs {
    const T *p[N];
};

template <typename T, int N, typename F>
__device__ __forceinline__ T call(const F &f, const T (&v)[N])
{
    if constexpr (N == 1)
        return f(v[0]);
    else
        return f(v[0], v[1]);
}

template <typename T, int N, typename F>
__global__ void map_kernel(T *out, map_inputs<T, N> in, int64_t n, bool vectorized, F f)
{
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    int64_t start = 0;
    if (vectorized) {
        constexpr int V = vec16<T>::n;
        int64_t nvec = n / V;
        for (int64_t i = tid; i < nvec; i += step) {
            vec16<T> src[N], dst;
            for (int k = 0; k < N; k++)
                src[k] = ((const vec16<T> *)in.p[k])[i];
            for (int j = 0; j < V; j++) {
                T v[N];
                for (int k = 0; k < N; k++)
                    v[k] = src[k].v[j];
                dst.v[j] = call<T, N>(f, v);
            }
            ((vec16<T> *)out)[i] = dst;
        }
        start = nvec * V;
    }
    for (int64_t i = start + tid; i < n; i += step) {
        T v[N];
        for (int k = 0; k < N; k++)
            v[k] = in.p[k][i];
        out[i] = call<T, N>(f, v);
    }
}

template <typename T, int N, typename F>
static kd_status launch_map(T *out, map_inputs<T, N> in, int64_t n, F f, const char *what)
{
    if (n == 0)
        return KD_OK;
    bool vectorized = aligned16(out);
    for (int k = 0; k < N; k++)
        vectorized = vectorized && aligned16(in.p[k]);
    int64_t work = vectorized ? n / vec16<T>::n + n % vec16<T>::n : n;
    map_kernel<T, N, F><<<grid_for(work, KD_BLOCK), KD_BLOCK>>>(out, in, n, vectorized, f);
    return launch_status(what);
}

/* --- binary ops --- */
template <typename T, int OP> struct binary_fn {
    __device__ __forceinline__ T operator()(T a, T b) const
    {
        if constexpr (OP == KD_BIN_ADD)
            return a + b;
        else if constexpr (OP == KD_BIN_SUB)
            return a - b;
        else if constexpr (OP == KD_BIN_MUL)
            return a * b;
        else
            return a / b;
    }
};

/* Out's shape with a's and b's broadcast strides (0 on broadcast dims). */
struct broadcast_layout {
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    int64_t sa[KD_MAX_DIMS];
    int64_t sb[KD_MAX_DIMS];
};

template <typename T, int OP>
__global__ void binary_broadcast(T *out, const T *a, const T *b, broadcast_layout l,
                                 int64_t n)
{
    binary_fn<T, OP> f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t oa, ob;
        if (l.ndim == 1) {
            oa = i * l.sa[0];
            ob = i * l.sb[0];
        } else {
            int64_t rem = i;
            oa = ob = 0;
            for (int d = l.ndim - 1; d >= 0; d--) {
                int64_t q = rem / l.shape[d], r = rem - q * l.shape[d];
                oa += r * l.sa[d];
                ob += r * l.sb[d];
                rem = q;
            }
        }
        out[i] = f(a[oa], b[ob]);
    }
}

/* Drops size-1 dims and merges neighbours that are contiguous for both
 * inputs, so a bias add [N, C] + [C] walks two dims, not eight. */
static broadcast_layout collapse_broadcast(const kd_tensor *out, const kd_tensor *a,
                                           const kd_tensor *b)
{
    int64_t sa[KD_MAX_DIMS], sb[KD_MAX_DIMS];
    kd_broadcast_strides(a, out->ndim, out->shape, sa);
    kd_broadcast_strides(b, out->ndim, out->shape, sb);
    broadcast_layout l;
    l.ndim = 0;
    for (int d = 0; d < out->ndim; d++) {
        int64_t size = out->shape[d];
        if (size == 1)
            continue;
        int last = l.ndim - 1;
        if (last >= 0 && l.sa[last] == sa[d] * size && l.sb[last] == sb[d] * size) {
            l.shape[last] *= size;
            l.sa[last] = sa[d];
            l.sb[last] = sb[d];
        } else {
            l.shape[l.ndim] = size;
            l.sa[l.ndim] = sa[d];
            l.sb[l.ndim] = sb[d];
            l.ndim++;
        }
    }
    return l;
}

template <typename T, int OP>
static kd_status binary_typed(kd_tensor *out, const kd_tensor *a, const kd_tensor *b)
{
    int64_t n = kd_tensor_numel(out);
    T *o = (T *)kd_tensor_data(out);
    const T *pa = (const T *)kd_tensor_data(a), *pb = (const T *)kd_tensor_data(b);
    broadcast_layout l = collapse_broadcast(out, a, b);
    if (l.ndim == 0 || (l.ndim == 1 && l.sa[0] == 1 && l.sb[0] == 1))
        return launch_map<T, 2>(o, map_inputs<T, 2>{{pa, pb}}, n, binary_fn<T, OP>(),
                                "a binary op");
    if (n == 0)
        return KD_OK;
    binary_broadcast<T, OP><<<grid_for(n, KD_BLOCK), KD_BLOCK>>>(o, pa, pb, l, n);
    return launch_status("a broadcasting binary op");
}

template <typename T>
static kd_status binary_dispatch(kd_binary_op op, kd_tensor *out, const kd_tensor *a,
                                 const kd_tensor *b)
{
    switch (op) {
    case KD_BIN_ADD: return binary_typed<T, KD_BIN_ADD>(out, a, b);
    case KD_BIN_SUB: return binary_typed<T, KD_BIN_SUB>(out, a, b);
    case KD_BIN_MUL: return binary_typed<T, KD_BIN_MUL>(out, a, b);
    default: return binary_typed<T, KD_BIN_DIV>(out, a, b);
    }
}

extern "C" kd_status kd_cuda_binary(kd_binary_op op, kd_tensor *out, const kd_tensor *a,
                                    const kd_tensor *b)
{
    if (out->dtype != a->dtype || out->dtype != b->dtype ||
        (out->dtype != KD_F32 && out->dtype != KD_F64))
        return kd_error(KD_ERR_UNSUPPORTED, "cuda binary op: dtypes %s, %s into %s",
                        dtype_name(a->dtype), dtype_name(b->dtype),
                        dtype_name(out->dtype));
    if (out->dtype == KD_F32)
        return binary_dispatch<float>(op, out, a, b);
    return binary_dispatch<double>(op, out, a, b);
}

/* --- unary ops --- */
template <typename T, int OP> struct unary_forward_fn {
    T lo, hi;
    __device__ __forceinline__ T operator()(T x) const
    {
        switch (OP) {
        case KD_UN_NEG: return -x;
        case KD_UN_EXP: return exp(x);
        case KD_UN_LOG: return log(x);
        case KD_UN_SQRT: return sqrt(x);
        case KD_UN_ABS: return fabs(x);
        case KD_UN_TANH: return tanh(x);
        case KD_UN_RELU: return x > 0 ? x : (T)0;
        case KD_UN_RELU6: return x > 0 ? (x < 6 ? x : (T)6) : (T)0;
        case KD_UN_GELU: return (T)0.5 * x * (1 + erf(x * (T)SQRT1_2));
        case KD_UN_GELU_TANH:
            return (T)0.5 * x * (1 + tanh((T)GELU_K * (x + (T)GELU_C * x * x * x)));
        case KD_UN_SILU: return x / (1 + exp(-x));
        case KD_UN_SIGMOID: return 1 / (1 + exp(-x));
        case KD_UN_HARDSIGMOID: return x <= -3 ? (T)0 : (x >= 3 ? (T)1 : x / 6 + (T)0.5);
        case KD_UN_HARDSWISH: return x <= -3 ? (T)0 : (x >= 3 ? x : x * (x + 3) / 6);
        case KD_UN_CLAMP: return x < lo ? lo : (x > hi ? hi : x);
        case KD_UN_POW: return pow(x, lo);
        case KD_UN_ADD_SCALAR: return x + lo;
        default: return x * lo;
        }
    }
};

/* The ops whose derivative is written with y = f(x) instead of x. */
static constexpr bool grad_uses_y(int op)
{
    return op == KD_UN_EXP || op == KD_UN_SQRT || op == KD_UN_TANH || op == KD_UN_SIGMOID;
}

/* grad_x = grad_y * f'(v), v being y for grad_uses_y(OP) and x otherwise. */
template <typename T, int OP> struct unary_backward_fn {
    T lo, hi;
    __device__ __forceinline__ T operator()(T gy, T v) const
    {
        T x = v, y = v;
        switch (OP) {
        case KD_UN_NEG: return gy * -1;
        case KD_UN_EXP: return gy * y;
        case KD_UN_LOG: return gy * (1 / x);
        case KD_UN_SQRT: return gy * ((T)0.5 / y);
        case KD_UN_ABS: return gy * (T)((x > 0) - (x < 0));
        case KD_UN_TANH: return gy * (1 - y * y);
        case KD_UN_RELU: return gy * (T)(x > 0);
        case KD_UN_RELU6: return gy * (T)(x > 0 && x < 6);
        case KD_UN_GELU:
            return gy * ((T)0.5 * (1 + erf(x * (T)SQRT1_2)) +
                         x * (T)INV_SQRT_2PI * exp((T)-0.5 * x * x));
        case KD_UN_GELU_TANH: {
            T t = tanh((T)GELU_K * (x + (T)GELU_C * x * x * x));
            return gy * ((T)0.5 * (1 + t) +
                         (T)0.5 * x * (1 - t * t) * (T)GELU_K * (1 + 3 * (T)GELU_C * x * x));
        }
        case KD_UN_SILU: {
            T s = 1 / (1 + exp(-x));
            return gy * (s * (1 + x * (1 - s)));
        }
        case KD_UN_SIGMOID: return gy * (y * (1 - y));
        case KD_UN_HARDSIGMOID: return gy * ((T)(x > -3 && x < 3) / 6);
        case KD_UN_HARDSWISH:
            return gy * (x < -3 ? (T)0 : (x <= 3 ? (2 * x + 3) / 6 : (T)1));
        case KD_UN_CLAMP: return gy * (T)(x >= lo && x <= hi);
        case KD_UN_POW: return gy * (lo * pow(x, lo - 1));
        case KD_UN_ADD_SCALAR: return gy * 1;
        default: return gy * lo;
        }
    }
};

#define UNARY_OPS(X)                                                           \
    X(KD_UN_NEG) X(KD_UN_EXP) X(KD_UN_LOG) X(KD_UN_SQRT) X(KD_UN_ABS)          \
    X(KD_UN_TANH) X(KD_UN_RELU) X(KD_UN_RELU6) X(KD_UN_GELU)                   \
    X(KD_UN_GELU_TANH) X(KD_UN_SILU) X(KD_UN_SIGMOID) X(KD_UN_HARDSIGMOID)     \
    X(KD_UN_HARDSWISH) X(KD_UN_CLAMP) X(KD_UN_POW) X(KD_UN_ADD_SCALAR)         \
    X(KD_UN_MUL_SCALAR)

template <typename T>
static kd_status unary_forward_typed(kd_unary_op op, kd_tensor *out, const kd_tensor *x,
                                     T lo, T hi)
{
    T *o = (T *)kd_tensor_data(out);
    map_inputs<T, 1> in = {{(const T *)kd_tensor_data(x)}};
    int64_t n = kd_tensor_numel(out);
    switch (op) {
#define FORWARD_CASE(OP)                                                       \
    case OP: return launch_map<T, 1>(o, in, n, unary_forward_fn<T, OP>{lo, hi}, "unary " #OP);
        UNARY_OPS(FORWARD_CASE)
#undef FORWARD_CASE
    default: return kd_error(KD_ERR_INVALID, "cuda unary: unknown op %d", (int)op);
    }
}

template <typename T>
static kd_status unary_backward_typed(kd_unary_op op, kd_tensor *grad_x,
                                      const kd_tensor *grad_y, const kd_tensor *x,
                                      const kd_tensor *y, T lo, T hi)
{
    T *gx = (T *)kd_tensor_data(grad_x);
    const T *gy = (const T *)kd_tensor_data(grad_y);
    const T *px = (const T *)kd_tensor_data(x);
    const T *py = y ? (const T *)kd_tensor_data(y) : NULL;
    int64_t n = kd_tensor_numel(grad_x);
    switch (op) {
#define BACKWARD_CASE(OP)                                                      \
    case OP: return launch_map<T, 2>(gx, map_inputs<T, 2>{{gy, grad_uses_y(OP) ? py : px}}, \
                                     n, unary_backward_fn<T, OP>{lo, hi},        \
                                     "unary backward " #OP);
        UNARY_OPS(BACKWARD_CASE)
#undef BACKWARD_CASE
    default: return kd_error(KD_ERR_INVALID, "cuda unary backward: unknown op %d", (int)op);
    }
}

static kd_status check_float(const char *what, const kd_tensor *t, kd_dtype dtype)
{
    if (t->dtype == dtype && (dtype == KD_F32 || dtype == KD_F64) &&
        kd_tensor_is_contiguous(t))
        return KD_OK;
    return kd_error(KD_ERR_UNSUPPORTED,
                    "cuda %s: a contiguous f32 or f64 tensor of one dtype (got %s)",
                    what, dtype_name(t->dtype));
}

extern "C" kd_status kd_cuda_unary(kd_unary_op op, kd_tensor *out, const kd_tensor *x,
                                   double p0, double p1)
{
    if (check_float("unary", x, out->dtype) != KD_OK ||
        check_float("unary", out, out->dtype) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    if (out->dtype == KD_F32)
        return unary_forward_typed<float>(op, out, x, (float)p0, (float)p1);
    return unary_forward_typed<double>(op, out, x, p0, p1);
}

extern "C" kd_status kd_cuda_unary_backward(kd_unary_op op, kd_tensor *grad_x,
                                            const kd_tensor *grad_y, const kd_tensor *x,
                                            const kd_tensor *y, double p0, double p1)
{
    kd_dtype dtype = grad_x->dtype;
    if (check_float("unary backward", grad_x, dtype) != KD_OK ||
        check_float("unary backward", grad_y, dtype) != KD_OK ||
        check_float("unary backward", x, dtype) != KD_OK ||
        (y && check_float("unary backward", y, dtype) != KD_OK))
        return KD_ERR_UNSUPPORTED;
    if (!y && grad_uses_y(op))
        return kd_error(KD_ERR_INVALID, "cuda unary backward: op %d needs y = f(x)",
                        (int)op);
    if (dtype == KD_F32)
        return unary_backward_typed<float>(op, grad_x, grad_y, x, y, (float)p0, (float)p1);
    return unary_backward_typed<double>(op, grad_x, grad_y, x, y, p0, p1);
}
