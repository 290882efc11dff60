/* Reductions over the middle axis of x viewed as [outer, reduce, inner]:
 * a scaled sum, and max/min with the first index of the extreme. When
 * inner is 1 a row is contiguous and a warp or a block reduces it with
 * shuffles; otherwise a block's 32 x-threads walk 32 neighbouring columns
 * (coalesced) and its 8 y-threads split the reduced axis.
 *
 * Both kernels can also cut the reduced axis into gridDim.y chunks and
 * write one partial result per chunk ([outer, chunks, inner]): a long sum
 * over few outputs (a bias gradient, a loss mean) then fills the GPU in a
 * first pass, and a second pass adds the partials in a fixed order, so
 * results do not depend on timing. */
#include <math.h>

#include "cuda_kernel.h"

#define COL_THREADS 32
#define COL_SPLIT 8

template <typename T> struct sum_op {
    typedef T acc;
    __device__ static acc identity() { return 0; }
    __device__ static acc load(T v, int64_t) { return v; }
    __device__ static acc combine(acc a, acc b) { return a + b; }
    __device__ static acc shfl_down(acc a, int offset)
    {
        return __shfl_down_sync(0xffffffffu, a, offset);
    }
    __device__ static void store(T *out, int64_t *, int64_t at, acc a, T scale)
    {
        out[at] = a * scale;
    }
};

template <typename T> struct arg_value {
    T v;
    int64_t i;
};

/* NaN beats every number (it propagates, as in torch); ties go to the
 * smaller index, so the result is the first extreme whatever the order in
 * which partial results meet. */
template <typename T, bool MIN> struct extreme_op {
    typedef arg_value<T> acc;
    __device__ static acc identity() { return {MIN ? (T)INFINITY : (T)-INFINITY, INT64_MAX}; }
    __device__ static acc load(T v, int64_t i) { return {v, i}; }
    __device__ static acc combine(acc a, acc b)
    {
        bool a_nan = isnan(a.v), b_nan = isnan(b.v);
        bool a_wins;
        if (a_nan || b_nan)
            a_wins = a_nan && (!b_nan || a.i < b.i);
        else if (a.v != b.v)
            a_wins = MIN ? a.v < b.v : a.v > b.v;
        else
            a_wins = a.i < b.i;
        return a_wins ? a : b;
    }
    __device__ static acc shfl_down(acc a, int offset)
    {
        return {__shfl_down_sync(0xffffffffu, a.v, offset),
                __shfl_down_sync(0xffffffffu, a.i, offset)};
    }
    __device__ static void store(T *out, int64_t *arg, int64_t at, acc a, T)
    {
        out[at] = a.v;
        if (arg)
            arg[at] = a.i;
    }
};

template <typename R> __device__ typename R::acc warp_reduce(typename R::acc a)
{
    for (int offset = 16; offset > 0; offset /= 2)
        a = R::combine(a, R::shfl_down(a, offset));
    return a;
}

/* Contiguous rows, GROUP threads per row: a warp (32) for short rows, the
 * whole block (KD_BLOCK) for long ones. The result lands in the group's
 * first thread. */
template <typename T, typename R, int GROUP>
__global__ void reduce_rows(T *out, int64_t *arg, const T *x, int64_t rows,
                            int64_t reduce, int64_t chunk, T scale)
{
    typedef typename R::acc acc;
    constexpr int rows_per_block = KD_BLOCK / GROUP;
    __shared__ acc warp_part[KD_BLOCK / 32];
    int lane = threadIdx.x % GROUP;
    int64_t begin = blockIdx.y * chunk;
    int64_t end = begin + chunk < reduce ? begin + chunk : reduce;
    for (int64_t row = blockIdx.x * (int64_t)rows_per_block + threadIdx.x / GROUP;
         row - threadIdx.x / GROUP < rows; row += (int64_t)gridDim.x * rows_per_block) {
        acc a = R::identity();
        if (row < rows) {
            const T *p = x + row * reduce;
            for (int64_t r = begin + lane; r < end; r += GROUP)
                a = R::combine(a, R::load(p[r], r));
        }
        a = warp_reduce<R>(a);
        if constexpr (GROUP > 32) {
            int warp = threadIdx.x / 32;
            if (threadIdx.x % 32 == 0)
                warp_part[warp] = a;
            __syncthreads();
            if (warp == 0) {
                a = threadIdx.x < GROUP / 32 ? warp_part[threadIdx.x] : R::identity();
                a = warp_reduce<R>(a);
            }
            __syncthreads();
        }
        if (lane == 0 && row < rows)
            R::store(out, arg, row * gridDim.y + blockIdx.y, a, scale);
    }
}

template <typename T, typename R>
__global__ void reduce_columns(T *out, int64_t *arg, const T *x, int64_t outer,
                               int64_t reduce, int64_t inner, int64_t chunk, T scale)
{
    typedef typename R::acc acc;
    __shared__ acc part[COL_SPLIT][COL_THREADS];
    int64_t col_blocks = (inner + COL_THREADS - 1) / COL_THREADS;
    int64_t begin = blockIdx.y * chunk;
    int64_t end = begin + chunk < reduce ? begin + chunk : reduce;
    for (int64_t blk = blockIdx.x; blk < outer * col_blocks; blk += gridDim.x) {
        int64_t o = blk / col_blocks;
        int64_t i = (blk - o * col_blocks) * COL_THREADS + threadIdx.x;
        acc a = R::identity();
        if (i < inner) {
            const T *p = x + o * reduce * inner + i;
            for (int64_t r = begin + threadIdx.y; r < end; r += COL_SPLIT)
                a = R::combine(a, R::load(p[r * inner], r));
        }
        part[threadIdx.y][threadIdx.x] = a;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            for (int k = 1; k < COL_SPLIT; k++)
                a = R::combine(a, part[k][threadIdx.x]);
            R::store(out, arg, (o * gridDim.y + blockIdx.y) * inner + i, a, scale);
        }
        __syncthreads();
    }
}

/* One pass: out [outer, chunks, inner] where chunks = ceil(reduce / chunk). */
template <typename T, typename R>
static kd_status launch_pass(T *out, int64_t *arg, const T *x, int64_t outer,
                             int64_t reduce, int64_t inner, int64_t chunk, T scale,
                             const char *what)
{
    unsigned chunks = (unsigned)((reduce + chunk - 1) / chunk);
    if (inner == 1 && chunk <= 1024)
        reduce_rows<T, R, 32><<<dim3(grid_for(outer, KD_BLOCK / 32), chunks), KD_BLOCK>>>(
            out, arg, x, outer, reduce, chunk, scale);
    else if (inner == 1)
        reduce_rows<T, R, KD_BLOCK><<<dim3(grid_for(outer, 1), chunks), KD_BLOCK>>>(
            out, arg, x, outer, reduce, chunk, scale);
    else
        reduce_columns<T, R>
            <<<dim3(grid_for(outer * ((inner + COL_THREADS - 1) / COL_THREADS), 1), chunks),
               dim3(COL_THREADS, COL_SPLIT)>>>(out, arg, x, outer, reduce, inner, chunk,
                                                 scale);
    return launch_status(what);
}

/* Blocks a pass should have to keep a large GPU busy. */
#define FILL_BLOCKS 256
/* The least a chunk reduces, so the partials stay a small extra read. */
#define MIN_CHUNK 1024

template <typename T>
static kd_status sum_typed(T *out, const T *x, int64_t outer, int64_t reduce, int64_t inner,
                           T scale)
{
    int64_t blocks = inner == 1 ? (outer + KD_BLOCK / 32 - 1) / (KD_BLOCK / 32)
                                : outer * ((inner + COL_THREADS - 1) / COL_THREADS);
    int64_t chunks = FILL_BLOCKS / blocks;
    if (chunks > reduce / MIN_CHUNK)
        chunks = reduce / MIN_CHUNK;
    if (chunks < 2)
        return launch_pass<T, sum_op<T>>(out, NULL, x, outer, reduce, inner, reduce, scale,
                                         "sum");
    int64_t chunk = (reduce + chunks - 1) / chunks;
    chunks = (reduce + chunk - 1) / chunk;
    void *partial;
    kd_status st = kd_cuda_alloc(&partial, (size_t)(outer * chunks * inner) * sizeof(T));
    if (st != KD_OK)
        return st;
    st = launch_pass<T, sum_op<T>>((T *)partial, NULL, x, outer, reduce, inner, chunk, 1,
                                   "sum (partials)");
    if (st == KD_OK)
        st = launch_pass<T, sum_op<T>>(out, NULL, (const T *)partial, outer, chunks, inner,
                                       chunks, scale, "sum (of partials)");
    /* Work on the one stream is ordered: the block is not reused before the
     * second pass has read it. */
    kd_cuda_free(partial);
    return st;
}

static kd_status check_shapes(const char *what, const kd_tensor *out, const kd_tensor *x,
                              int64_t outer, int64_t reduce, int64_t inner)
{
    if ((x->dtype != KD_F32 && x->dtype != KD_F64) || out->dtype != x->dtype)
        return kd_error(KD_ERR_UNSUPPORTED, "cuda %s: dtype %s into %s (f32 or f64)", what,
                        dtype_name(x->dtype), dtype_name(out->dtype));
    if (outer < 0 || reduce < 0 || inner < 0 || !kd_tensor_is_contiguous(x) ||
        !kd_tensor_is_contiguous(out) || kd_tensor_numel(x) != outer * reduce * inner ||
        kd_tensor_numel(out) != outer * inner)
        return kd_error(KD_ERR_INVALID,
                        "cuda %s: contiguous x of %lld x %lld x %lld elements into %lld "
                        "(x has %lld, out %lld)",
                        what, (long long)outer, (long long)reduce, (long long)inner,
                        (long long)(outer * inner), (long long)kd_tensor_numel(x),
                        (long long)kd_tensor_numel(out));
    return KD_OK;
}

extern "C" kd_status kd_cuda_reduce_sum(kd_tensor *out, const kd_tensor *x, int64_t outer,
                                        int64_t reduce, int64_t inner, double scale)
{
    kd_status st = check_shapes("sum", out, x, outer, reduce, inner);
    if (st != KD_OK || outer * inner == 0)
        return st;
    if (reduce == 0)
        return kd_cuda_fill(out, 0.0);
    if (x->dtype == KD_F32)
        return sum_typed<float>((float *)kd_tensor_data(out),
                                (const float *)kd_tensor_data(x), outer, reduce, inner,
                                (float)scale);
    return sum_typed<double>((double *)kd_tensor_data(out), (const double *)kd_tensor_data(x),
                             outer, reduce, inner, scale);
}

template <typename T>
static kd_status extreme_typed(kd_tensor *out, int64_t *arg, const kd_tensor *x,
                               int64_t outer, int64_t reduce, int64_t inner, bool is_min)
{
    T *o = (T *)kd_tensor_data(out);
    const T *px = (const T *)kd_tensor_data(x);
    if (is_min)
        return launch_pass<T, extreme_op<T, true>>(o, arg, px, outer, reduce, inner, reduce,
                                                   1, "min");
    return launch_pass<T, extreme_op<T, false>>(o, arg, px, outer, reduce, inner, reduce, 1,
                                                "max");
}

extern "C" kd_status kd_cuda_reduce_max(kd_tensor *out, kd_tensor *argidx, const kd_tensor *x,
                                        int64_t outer, int64_t reduce, int64_t inner,
                                        bool is_min)
{
    const char *what = is_min ? "min" : "max";
    kd_status st = check_shapes(what, out, x, outer, reduce, inner);
    if (st != KD_OK)
        return st;
    if (argidx && (argidx->dtype != KD_I64 || !kd_tensor_is_contiguous(argidx) ||
                   kd_tensor_numel(argidx) != outer * inner))
        return kd_error(KD_ERR_INVALID, "cuda %s: indices must be contiguous i64 of %lld "
                        "elements", what, (long long)(outer * inner));
    if (outer * inner == 0)
        return KD_OK;
    if (reduce == 0)
        return kd_error(KD_ERR_INVALID, "cuda %s: reducing an empty axis", what);
    int64_t *arg = argidx ? (int64_t *)kd_tensor_data(argidx) : NULL;
    if (x->dtype == KD_F32)
        return extreme_typed<float>(out, arg, x, outer, reduce, inner, is_min);
    return extreme_typed<double>(out, arg, x, outer, reduce, inner, is_min);
}

template <typename T>
__global__ void scatter_extreme_grad(T *grad_x, const T *grad_out, const int64_t *arg,
                                     int64_t outer, int64_t reduce, int64_t inner)
{
    for (int64_t at = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; at < outer * inner;
         at += (int64_t)gridDim.x * blockDim.x) {
        int64_t o = at / inner, i = at - o * inner;
        grad_x[(o * reduce + arg[at]) * inner + i] = grad_out[at];
    }
}

extern "C" kd_status kd_cuda_extreme_backward(kd_tensor *grad_x, const kd_tensor *grad_out,
                                              const kd_tensor *argidx, int64_t outer,
                                              int64_t reduce, int64_t inner)
{
    kd_status st = check_shapes("max/min backward", grad_out, grad_x, outer, reduce, inner);
    if (st != KD_OK)
        return st;
    if (argidx->dtype != KD_I64 || !kd_tensor_is_contiguous(argidx) ||
        kd_tensor_numel(argidx) != outer * inner)
        return kd_error(KD_ERR_INVALID, "cuda max/min backward: indices must be contiguous "
                        "i64 of %lld elements", (long long)(outer * inner));
    st = kd_cuda_fill(grad_x, 0.0);
    if (st != KD_OK || outer * inner == 0)
        return st;
    const int64_t *arg = (const int64_t *)kd_tensor_data(argidx);
    unsigned grid = grid_for(outer * inner, KD_BLOCK);
    if (grad_x->dtype == KD_F32)
        scatter_extreme_grad<float><<<grid, KD_BLOCK>>>((float *)kd_tensor_data(grad_x),
                                                        (const float *)kd_tensor_data(grad_out),
                                                        arg, outer, reduce, inner);
    else
        scatter_extreme_grad<double><<<grid, KD_BLOCK>>>(
            (double *)kd_tensor_data(grad_x), (const double *)kd_tensor_data(grad_out), arg,
            outer, reduce, inner);
    return launch_status("the max/min gradient scatter");
}
