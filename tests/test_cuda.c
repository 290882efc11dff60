/* The CUDA backend's own entry points against the CPU: the allocator,
 * copies, casts, fills, gradient accumulation, the reduce kernels and
 * GEMM (norm-wise relative error 1e-5 in f32, 1e-12 in f64; copies, casts,
 * fills and max/min exactly). The ops themselves run on the GPU as the
 * device rows of test_ops. Without a GPU every group is skipped with the
 * reason. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/internal.h"
#include "harness.h"
#ifdef KD_HAVE_CUDA
#include "../core/backend/cuda/cuda.h"
#endif

static const char *const groups[] = {"cuda.allocator", "cuda.copy", "cuda.cast", "cuda.fill",
                                     "cuda.accumulate", "cuda.reduce_kernels", "cuda.gemm"};

static kd_rng rng;

static double tolerance(kd_dtype dtype) { return dtype == KD_F64 ? 1e-12 : 1e-5; }

static kd_tensor *to_cuda(kd_tensor *t) { return kd_tensor_to_device(t, KD_CUDA); }
static kd_tensor *to_cpu(kd_tensor *t) { return kd_tensor_to_device(t, KD_CPU); }

/* got may live on either device; want is on the CPU. */
static void expect_close(const char *name, kd_tensor *got, kd_tensor *want, double tol)
{
    kd_tensor *g = got && got->device == KD_CUDA ? to_cpu(got) : got;
    if (!g || !want) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    if (!kd_tensor_same_shape(g, want)) {
        char a[96], b[96];
        kt_fail(name, "shape %s, want %s", kd_shape_str(g, a, sizeof a),
                kd_shape_str(want, b, sizeof b));
        return;
    }
    double err = kt_rel_error(g, want);
    kt_check(err <= tol, name, "relative error %.3g > %.3g", err, tol);
}

static void expect_equal(const char *name, kd_tensor *got, kd_tensor *want)
{
    kd_tensor *g = got && got->device == KD_CUDA ? to_cpu(got) : got;
    if (!g || !want) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    double diff = kt_max_abs_diff(g, want);
    kt_check(kd_tensor_same_shape(g, want) && g->dtype == want->dtype && diff == 0, name,
             "max |difference| %.3g (dtype %s, want %s)", diff, kd_dtype_name(g->dtype),
             kd_dtype_name(want->dtype));
}

static kd_tensor *uniform(kd_dtype dtype, int ndim, const int64_t *shape, double lo,
                          double hi)
{
    return kt_uniform(dtype, ndim, shape, &rng, lo, hi);
}

/* --- copies --- */

/* A view of base; the same numbers describe it on either device. */
static kd_tensor *view_of(kd_tensor *base, int ndim, const int64_t *shape,
                          const int64_t *stride, int64_t offset)
{
    kd_tensor *v = base ? kd_tensor_alias(base) : NULL;
    if (!v)
        return NULL;
    v->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        v->stride[d] = stride[d];
    }
    v->offset = offset;
    return v;
}

static void test_copy(void)
{
    static const kd_dtype dtypes[] = {KD_F32, KD_F64, KD_F16, KD_BF16, KD_I32, KD_I64, KD_U8};
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[3], stride[3], offset;
    } views[] = {
        {"transpose", 3, {6, 5, 4}, {1, 6, 30}, 0},
        {"slice_step2", 2, {3, 7}, {40, 1}, 12},
        {"expand", 3, {3, 2, 5}, {0, 0, 1}, 7},
        {"column", 2, {10, 1}, {12, 1}, 3},
    };
    int64_t base_shape[3] = {4, 5, 6};
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++) {
        kd_dtype dt = dtypes[i];
        char name[96];
        kd_scope_begin();
        kd_tensor *cpu = uniform(dt, 3, base_shape, 0, 100);
        kd_tensor *gpu = to_cuda(cpu);
        snprintf(name, sizeof name, "cuda.copy.roundtrip.%s", kd_dtype_name(dt));
        expect_equal(name, gpu, cpu);
        for (size_t v = 0; v < sizeof views / sizeof *views; v++) {
            kd_tensor *vc = view_of(cpu, views[v].ndim, views[v].shape, views[v].stride,
                                    views[v].offset);
            kd_tensor *vg = view_of(gpu, views[v].ndim, views[v].shape, views[v].stride,
                                    views[v].offset);
            kd_tensor *want = to_cpu(vc);
            /* strided device -> host */
            snprintf(name, sizeof name, "cuda.copy.%s.%s.to_host", views[v].name,
                     kd_dtype_name(dt));
            expect_equal(name, vg ? to_cpu(vg) : NULL, want);
            /* strided device -> contiguous device */
            kd_tensor *packed = vg ? kd_tensor_empty(dt, KD_CUDA, vg->ndim, vg->shape) : NULL;
            if (packed && kd_tensor_copy_(packed, vg) != KD_OK)
                packed = NULL;
            snprintf(name, sizeof name, "cuda.copy.%s.%s.on_device", views[v].name,
                     kd_dtype_name(dt));
            expect_equal(name, packed, want);
        }
        kd_scope_end();
    }
    /* A strided host source uploads through a staging copy. */
    kd_scope_begin();
    kd_tensor *cpu = uniform(KD_F32, 3, base_shape, -1, 1);
    kd_tensor *vc = view_of(cpu, 3, views[0].shape, views[0].stride, 0);
    expect_equal("cuda.copy.strided_host_upload", vc ? to_cuda(vc) : NULL, to_cpu(vc));
    kd_scope_end();
}

/* --- casts --- */

static void test_cast(void)
{
    static const kd_dtype pairs[][2] = {
        {KD_F32, KD_F64}, {KD_F64, KD_F32}, {KD_F32, KD_F16},  {KD_F16, KD_F32},
        {KD_F32, KD_BF16}, {KD_BF16, KD_F32}, {KD_F64, KD_F16}, {KD_BF16, KD_F16},
        {KD_F32, KD_I32}, {KD_F64, KD_I64}, {KD_I32, KD_F32},  {KD_I64, KD_F64},
        {KD_I32, KD_I64}, {KD_I64, KD_I32}, {KD_U8, KD_F32},   {KD_I32, KD_U8},
    };
    int64_t shape[2] = {33, 31};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        kd_dtype from = pairs[i][0], to = pairs[i][1];
        char name[64];
        snprintf(name, sizeof name, "cuda.cast.%s_to_%s", kd_dtype_name(from),
                 kd_dtype_name(to));
        kd_scope_begin();
        /* Values with fractions exercise rounding; below 200 fits u8. */
        kd_tensor *src = uniform(from, 2, shape, 0, 200);
        kd_tensor *want = src ? kd_tensor_empty(to, KD_CPU, 2, shape) : NULL;
        if (want && kd_tensor_copy_(want, src) != KD_OK)
            want = NULL;
        kd_tensor *gsrc = to_cuda(src);
        kd_tensor *got = gsrc ? kd_tensor_empty(to, KD_CUDA, 2, shape) : NULL;
        if (got && kd_tensor_copy_(got, gsrc) != KD_OK)
            got = NULL;
        expect_equal(name, got, want);
        kd_scope_end();
    }
    /* A strided device source converts in one kd_tensor_copy_. */
    kd_scope_begin();
    int64_t base_shape[2] = {8, 9}, vshape[2] = {9, 8}, vstride[2] = {1, 9};
    kd_tensor *cpu = uniform(KD_F64, 2, base_shape, -3, 3);
    kd_tensor *vc = view_of(cpu, 2, vshape, vstride, 0);
    kd_tensor *vg = view_of(to_cuda(cpu), 2, vshape, vstride, 0);
    kd_tensor *want = kd_tensor_empty(KD_F32, KD_CPU, 2, vshape);
    kd_tensor *got = kd_tensor_empty(KD_F32, KD_CUDA, 2, vshape);
    if (!vc || !vg || !want || !got || kd_tensor_copy_(want, vc) != KD_OK ||
        kd_tensor_copy_(got, vg) != KD_OK)
        got = NULL;
    expect_equal("cuda.cast.strided_f64_to_f32", got, want);
    kd_scope_end();
}

/* --- fill --- */

static void test_fill(void)
{
    static const kd_dtype dtypes[] = {KD_F32, KD_F64, KD_F16, KD_BF16, KD_I32, KD_I64, KD_U8};
    static const double values[] = {0.0, 1.5, -2.25, 7.0};
    int64_t shape[2] = {17, 9};
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++) {
        for (size_t v = 0; v < sizeof values / sizeof *values; v++) {
            kd_dtype dt = dtypes[i];
            if (dt == KD_U8 && values[v] < 0)
                continue;
            char name[64];
            snprintf(name, sizeof name, "cuda.fill.%s.%g", kd_dtype_name(dt), values[v]);
            kd_scope_begin();
            expect_equal(name, kd_tensor_full(dt, KD_CUDA, 2, shape, values[v]),
                         kd_tensor_full(dt, KD_CPU, 2, shape, values[v]));
            kd_scope_end();
        }
    }
}

/* --- gradient accumulation on the device --- */

/* x + x: both gradients land in one tensor, the second through an
 * in-place add on the device (out aliasing a). */
static void test_accumulate(void)
{
    kd_scope_begin();
    int64_t shape[2] = {9, 13};
    kd_tensor *x = uniform(KD_F32, 2, shape, -1, 1), *gx = to_cuda(x);
    kd_tensor_set_requires_grad(x, true);
    kd_tensor_set_requires_grad(gx, true);
    kd_tensor *g = uniform(KD_F32, 2, shape, -1, 1);
    if (kd_backward_with(kd_add(x, x), g) != KD_OK ||
        kd_backward_with(kd_add(gx, gx), to_cuda(g)) != KD_OK)
        kt_fail("cuda.accumulate", "%s", kd_last_error());
    else
        expect_close("cuda.accumulate", gx->grad, x->grad, tolerance(KD_F32));
    kd_scope_end();
}

/* --- the backend's allocator, reduce and GEMM entry points; references
 * computed here in double --- */
#ifdef KD_HAVE_CUDA
static void test_allocator(void)
{
    void *p = NULL, *q = NULL;
    kd_status st = kd_cuda_alloc(&p, 1000);
    if (st == KD_OK) {
        kd_cuda_free(p);
        st = kd_cuda_alloc(&q, 900); /* same size class: the cached block */
    }
    kt_check(st == KD_OK && p == q, "cuda.allocator.reuse", "%s (first %p, second %p)",
             st == KD_OK ? "not reused" : kd_last_error(), p, q);
    kd_cuda_free(q);
    kd_cuda_release_cache();
    /* Every size up to a few MiB, freed in another order than allocated. */
    void *blocks[64];
    int failed = -1;
    for (int i = 0; i < 64 && failed < 0; i++)
        if (kd_cuda_alloc(&blocks[i], (size_t)1 << (i % 23)) != KD_OK)
            failed = i;
    for (int i = 63; i >= 0; i -= 2)
        if (failed < 0)
            kd_cuda_free(blocks[i]);
    for (int i = 62; i >= 0; i -= 2)
        if (failed < 0)
            kd_cuda_free(blocks[i]);
    kt_check(failed < 0, "cuda.allocator.sizes", "block %d: %s", failed, kd_last_error());
    size_t huge = (size_t)1 << 50;
    st = kd_cuda_alloc(&p, huge);
    kt_check(st == KD_ERR_DEVICE && p == NULL &&
                 strstr(kd_last_error(), "cudaMalloc of 1125899906842624 bytes"),
             "cuda.allocator.out_of_memory", "status %s, message \"%s\"",
             kd_status_name(st), kd_last_error());
    kd_cuda_release_cache();
}

static void test_reduce_kernels(void)
{
    static const int64_t dims[][3] = {
        {7, 13, 1}, {3, 2000, 1}, {1, 100000, 1}, {5, 9, 33},
        {2, 300, 3}, {4, 1, 5},   {1, 4097, 40},  {64, 3, 1},
    };
    static const kd_dtype dtypes[] = {KD_F32, KD_F64};
    for (size_t d = 0; d < 2; d++)
        for (size_t c = 0; c < sizeof dims / sizeof *dims; c++) {
            kd_dtype dt = dtypes[d];
            int64_t outer = dims[c][0], reduce = dims[c][1], inner = dims[c][2];
            int64_t xshape[3] = {outer, reduce, inner}, oshape[2] = {outer, inner};
            char name[96];
            kd_scope_begin();
            /* Quarter steps make ties, which must resolve to the first index. */
            kd_tensor *x64 = uniform(KD_F64, 3, xshape, -8, 8);
            double *xv = kd_tensor_data(x64);
            for (int64_t i = 0; i < outer * reduce * inner; i++)
                xv[i] = floor(xv[i] * 4) / 4;
            kd_tensor *x = kd_tensor_empty(dt, KD_CPU, 3, xshape);
            kd_tensor_copy_(x, x64);
            kd_tensor *want_sum = kd_tensor_empty(KD_F64, KD_CPU, 2, oshape);
            kd_tensor *want_max = kd_tensor_empty(KD_F64, KD_CPU, 2, oshape);
            kd_tensor *want_min = kd_tensor_empty(KD_F64, KD_CPU, 2, oshape);
            kd_tensor *want_argmax = kd_tensor_empty(KD_I64, KD_CPU, 2, oshape);
            kd_tensor *want_argmin = kd_tensor_empty(KD_I64, KD_CPU, 2, oshape);
            double scale = 1.0 / (double)reduce;
            for (int64_t o = 0; o < outer; o++)
                for (int64_t i = 0; i < inner; i++) {
                    double s = 0, mx = -INFINITY, mn = INFINITY;
                    int64_t amx = 0, amn = 0;
                    for (int64_t r = 0; r < reduce; r++) {
                        double v = kd_tensor_get(x, (o * reduce + r) * inner + i);
                        s += v;
                        if (v > mx) {
                            mx = v;
                            amx = r;
                        }
                        if (v < mn) {
                            mn = v;
                            amn = r;
                        }
                    }
                    int64_t at = o * inner + i;
                    ((double *)kd_tensor_data(want_sum))[at] = s * scale;
                    ((double *)kd_tensor_data(want_max))[at] = mx;
                    ((double *)kd_tensor_data(want_min))[at] = mn;
                    ((int64_t *)kd_tensor_data(want_argmax))[at] = amx;
                    ((int64_t *)kd_tensor_data(want_argmin))[at] = amn;
                }
            kd_tensor *gx = to_cuda(x);
            kd_tensor *sum = kd_tensor_empty(dt, KD_CUDA, 2, oshape);
            kd_tensor *mx = kd_tensor_empty(dt, KD_CUDA, 2, oshape);
            kd_tensor *mn = kd_tensor_empty(dt, KD_CUDA, 2, oshape);
            kd_tensor *amx = kd_tensor_empty(KD_I64, KD_CUDA, 2, oshape);
            kd_tensor *amn = kd_tensor_empty(KD_I64, KD_CUDA, 2, oshape);
            const char *dn = kd_dtype_name(dt);
            snprintf(name, sizeof name, "cuda.reduce_kernels.sum.%lldx%lldx%lld.%s",
                     (long long)outer, (long long)reduce, (long long)inner, dn);
            if (!gx || !sum || kd_cuda_reduce_sum(sum, gx, outer, reduce, inner, scale) != KD_OK)
                kt_fail(name, "%s", kd_last_error());
            else
                expect_close(name, sum, want_sum, tolerance(dt));
            snprintf(name, sizeof name, "cuda.reduce_kernels.max.%lldx%lldx%lld.%s",
                     (long long)outer, (long long)reduce, (long long)inner, dn);
            kd_tensor *mx_cpu = NULL, *mn_cpu = NULL;
            if (!mx || !amx || kd_cuda_reduce_max(mx, amx, gx, outer, reduce, inner, false) != KD_OK ||
                !(mx_cpu = kd_tensor_empty(KD_F64, KD_CPU, 2, oshape)) ||
                kd_tensor_copy_(mx_cpu, mx) != KD_OK)
                kt_fail(name, "%s", kd_last_error());
            else
                expect_equal(name, mx_cpu, want_max);
            snprintf(name, sizeof name, "cuda.reduce_kernels.argmax.%lldx%lldx%lld.%s",
                     (long long)outer, (long long)reduce, (long long)inner, dn);
            expect_equal(name, amx, want_argmax);
            snprintf(name, sizeof name, "cuda.reduce_kernels.min.%lldx%lldx%lld.%s",
                     (long long)outer, (long long)reduce, (long long)inner, dn);
            if (!mn || !amn || kd_cuda_reduce_max(mn, amn, gx, outer, reduce, inner, true) != KD_OK ||
                !(mn_cpu = kd_tensor_empty(KD_F64, KD_CPU, 2, oshape)) ||
                kd_tensor_copy_(mn_cpu, mn) != KD_OK)
                kt_fail(name, "%s", kd_last_error());
            else
                expect_equal(name, mn_cpu, want_min);
            snprintf(name, sizeof name, "cuda.reduce_kernels.argmin.%lldx%lldx%lld.%s",
                     (long long)outer, (long long)reduce, (long long)inner, dn);
            expect_equal(name, amn, want_argmin);
            /* The max's gradient goes to the argmax element. */
            kd_tensor *g = uniform(dt, 2, oshape, -1, 1);
            kd_tensor *grad64 = kd_tensor_zeros(KD_F64, KD_CPU, 3, xshape);
            kd_tensor *want_gx = kd_tensor_empty(dt, KD_CPU, 3, xshape);
            for (int64_t o = 0; g && grad64 && o < outer; o++)
                for (int64_t i = 0; i < inner; i++) {
                    int64_t at = o * inner + i;
                    int64_t r = ((int64_t *)kd_tensor_data(want_argmax))[at];
                    ((double *)kd_tensor_data(grad64))[(o * reduce + r) * inner + i] =
                        kd_tensor_get(g, at);
                }
            if (want_gx && grad64 && kd_tensor_copy_(want_gx, grad64) != KD_OK)
                want_gx = NULL;
            kd_tensor *gx_grad = kd_tensor_empty(dt, KD_CUDA, 3, xshape);
            snprintf(name, sizeof name, "cuda.reduce_kernels.max_backward.%lldx%lldx%lld.%s",
                     (long long)outer, (long long)reduce, (long long)inner, dn);
            if (!gx_grad || !want_gx ||
                kd_cuda_extreme_backward(gx_grad, to_cuda(g), amx, outer, reduce, inner) != KD_OK)
                kt_fail(name, "%s", kd_last_error());
            else
                expect_equal(name, gx_grad, want_gx);
            kd_scope_end();
        }
}

/* C[b] (m x n, row stride ldc) = alpha op(A[b]) op(B[b]) + beta C[b], with
 * padded leading dimensions; the padding must come back untouched. */
static void test_gemm(void)
{
    const int64_t m = 17, n = 19, k = 23, batch = 3, pad = 3;
    const double alpha = 1.5, beta = 0.5;
    static const kd_dtype dtypes[] = {KD_F32, KD_F64};
    for (size_t d = 0; d < 2; d++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            kd_dtype dt = dtypes[d];
            int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
            int64_t sa = (ta ? k : m) * lda, sb = (tb ? n : k) * ldb, sc = m * ldc;
            int64_t na = batch * sa, nb = batch * sb, nc = batch * sc;
            char name[64];
            snprintf(name, sizeof name, "cuda.gemm.%c%c.%s", ta ? 't' : 'n', tb ? 't' : 'n',
                     kd_dtype_name(dt));
            kd_scope_begin();
            kd_tensor *a = uniform(dt, 1, &na, -1, 1), *b = uniform(dt, 1, &nb, -1, 1);
            kd_tensor *c = uniform(dt, 1, &nc, -1, 1);
            kd_tensor *want = kd_tensor_empty(KD_F64, KD_CPU, 1, &nc);
            kd_tensor_copy_(want, c);
            double *w = kd_tensor_data(want);
            for (int64_t q = 0; q < batch; q++)
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = 0; j < n; j++) {
                        double s = 0;
                        for (int64_t p = 0; p < k; p++)
                            s += kd_tensor_get(a, q * sa + (ta ? p * lda + i : i * lda + p)) *
                                 kd_tensor_get(b, q * sb + (tb ? j * ldb + p : p * ldb + j));
                        double *cij = &w[q * sc + i * ldc + j];
                        *cij = alpha * s + beta * *cij;
                    }
            kd_tensor *ga = to_cuda(a), *gb = to_cuda(b), *gc = to_cuda(c);
            if (!ga || !gb || !gc ||
                kd_cuda_gemm(dt, ta, tb, m, n, k, alpha, kd_tensor_data(ga), lda, sa,
                             kd_tensor_data(gb), ldb, sb, beta, kd_tensor_data(gc), ldc, sc,
                             batch) != KD_OK)
                kt_fail(name, "%s", kd_last_error());
            else
                expect_close(name, gc, want, tolerance(dt));
            kd_scope_end();
        }
}
#endif

/* NULL when the GPU is usable, else why not. */
static const char *missing_device(void)
{
    if (!kd_have_cuda_build())
        return "this build has no CUDA (configure --with-cuda)";
#ifdef KD_HAVE_CUDA
    if (!kd_cuda_device_available())
        return kd_cuda_unavailable_reason();
#endif
    return NULL;
}

int main(void)
{
    const char *missing = missing_device();
    if (missing) {
        for (size_t i = 0; i < sizeof groups / sizeof *groups; i++)
            kt_skip(groups[i], "no CUDA device: %s", missing);
        return kt_finish();
    }
    printf("# %s\n", kd_build_info());
#ifdef KD_HAVE_CUDA
    printf("# device: %s\n", kd_cuda_device_description());
    test_allocator();
#endif
    rng = kd_rng_make(20240611, 7, 0);
    test_copy();
    test_cast();
    test_fill();
    test_accumulate();
#ifdef KD_HAVE_CUDA
    test_reduce_kernels();
    test_gemm();
    /* A kernel that faulted shows here if no copy reported it. */
    kt_check(kd_cuda_synchronize() == KD_OK, "cuda.synchronize", "%s", kd_last_error());
#endif
    return kt_finish();
}
