/* Core unit tests: dtypes, tensors and views, scopes and ownership, the
 * autograd tape, the Philox generator. Ops have their own table (test_ops). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/backend/cpu/conv2d.h"
#include "../core/internal.h"
#include "harness.h"

static void test_dtype(void)
{
    kt_check(kd_dtype_size(KD_BF16) == 2 && kd_dtype_size(KD_I64) == 8 &&
                 kd_dtype_size(KD_U8) == 1,
             "dtype.sizes", "wrong element sizes");
    kt_check(kd_dtype_from_name("bf16") == KD_BF16 && kd_dtype_from_name("x") == -1,
             "dtype.names", "name lookup");
    /* Exactly representable values survive; rounding is to nearest even. */
    kt_check(kd_f16_to_f32(kd_f32_to_f16(1.5f)) == 1.5f &&
                 kd_f32_to_f16(65504.0f) == 0x7bff && kd_f32_to_f16(65520.0f) == 0x7c00 &&
                 kd_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && /* tie -> even */
                 kd_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02 &&
                 kd_f16_to_f32(0x0001) == 5.9604644775390625e-8f &&
                 kd_f32_to_f16(5.9604644775390625e-8f) == 0x0001 &&
                 kd_f32_to_f16(-0.0f) == 0x8000 && isnan(kd_f16_to_f32(kd_f32_to_f16(NAN))),
             "dtype.f16", "f16 conversion");
    kt_check(kd_bf16_to_f32(kd_f32_to_bf16(3.0f)) == 3.0f &&
                 kd_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80 && /* tie -> even */
                 kd_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82 &&
                 isnan(kd_bf16_to_f32(kd_f32_to_bf16(NAN))) &&
                 kd_f32_to_bf16(INFINITY) == 0x7f80,
             "dtype.bf16", "bf16 conversion");
    /* Every f16 bit pattern round-trips through f32. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kd_f16_to_f32((uint16_t)h);
        if (!isnan(f) && kd_f32_to_f16(f) != h)
            bad++;
    }
    kt_check(bad == 0, "dtype.f16_roundtrip_all", "%d patterns differ", bad);
}

static void test_tensor_basics(void)
{
    int64_t shape[3] = {2, 3, 4};
    kd_tensor *t = kd_tensor_zeros(KD_F32, KD_CPU, 3, shape);
    kt_check(t && !t->scope && kd_tensor_numel(t) == 24 && kd_tensor_is_contiguous(t) &&
                 t->stride[0] == 12 && t->stride[2] == 1,
             "tensor.create", "zeros [2,3,4]");
    float *d = kd_tensor_data(t);
    for (int i = 0; i < 24; i++)
        d[i] = (float)i;
    char buf[64];
    kt_check(strcmp(kd_shape_str(t, buf, sizeof buf), "[2, 3, 4]") == 0, "tensor.shape_str",
             "got %s", buf);

    /* A transposed view read through strides, copied, converted. */
    kd_tensor *v = kd_tensor_alias(t);
    v->shape[1] = 4;
    v->shape[2] = 3;
    v->stride[1] = 1;
    v->stride[2] = 4;
    kt_check(!kd_tensor_is_contiguous(v) && kd_tensor_get(v, 1) == 4.0 &&
                 kd_tensor_get(v, 3) == 1.0,
             "tensor.view_strides", "strided reads");
    kd_tensor *c = kd_tensor_empty(KD_F64, KD_CPU, 3, v->shape);
    kt_check(c && kd_tensor_copy_(c, v) == KD_OK && ((double *)kd_tensor_data(c))[1] == 4.0 &&
                 ((double *)kd_tensor_data(c))[13] == 16.0,
             "tensor.copy_strided_convert", "copy of a view to f64");
    kd_tensor *h = kd_tensor_empty(KD_BF16, KD_CPU, 3, shape);
    kt_check(h && kd_tensor_copy_(h, t) == KD_OK && kd_tensor_get(h, 23) == 23.0,
             "tensor.copy_bf16", "bf16 copy");
    kd_tensor *i64 = kd_tensor_empty(KD_I64, KD_CPU, 3, shape);
    kt_check(i64 && kd_tensor_copy_(i64, t) == KD_OK && kd_tensor_get(i64, 7) == 7.0,
             "tensor.copy_to_int", "f32 to i64");
    /* Writing into a strided destination. */
    kd_tensor *z = kd_tensor_zeros(KD_F32, KD_CPU, 3, shape);
    kd_tensor *zv = kd_tensor_alias(z);
    memcpy(zv->shape, v->shape, sizeof zv->shape);
    memcpy(zv->stride, v->stride, sizeof zv->stride);
    kt_check(kd_tensor_copy_(zv, v) == KD_OK && kt_max_abs_diff(z, t) == 0,
             "tensor.copy_into_view", "strided destination");
    int64_t other[2] = {4, 6};
    kd_tensor *wrong = kd_tensor_empty(KD_F32, KD_CPU, 2, other);
    kd_status st = kd_tensor_copy_(wrong, t);
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), "[2, 3, 4]"),
             "tensor.copy_shape_error", "status %d, message '%s'", st, kd_last_error());
    int64_t neg[1] = {-1};
    kt_check(!kd_tensor_empty(KD_F32, KD_CPU, 1, neg) && strstr(kd_last_error(), "negative"),
             "tensor.negative_size", "message '%s'", kd_last_error());
    kt_check(kd_tensor_fill_(v, 2.5) == KD_OK && kd_tensor_get(t, 5) == 2.5,
             "tensor.fill_view", "fill through a view writes the base");
    /* The view keeps storage alive after its base is freed. */
    kd_tensor_free(t);
    kt_check(kd_tensor_get(v, 0) == 2.5, "tensor.view_outlives_base", "storage freed early");
    kd_tensor_free(v);
    kd_tensor_free(c);
    kd_tensor_free(h);
    kd_tensor_free(i64);
    kd_tensor_free(z);
    kd_tensor_free(zv);
    kd_tensor_free(wrong);
}

static void test_scopes(void)
{
    int64_t shape[1] = {8};
    kt_check(kd_scope_begin() == KD_OK && kd_scope_depth() == 1, "scope.begin", "depth");
    kd_tensor *a = kd_tensor_full(KD_F32, KD_CPU, 1, shape, 1.0);
    kd_tensor *kept = kd_tensor_keep(kd_tensor_full(KD_F32, KD_CPU, 1, shape, 2.0));
    kd_scope_begin();
    kd_tensor *inner = kd_tensor_zeros(KD_F64, KD_CPU, 1, shape);
    kt_check(a->scope && inner->scope && inner->scope != a->scope && !kept->scope,
             "scope.ownership", "owners not as documented");
    kd_scope_end();
    kd_tensor_free(a); /* scope-owned: a no-op, the scope frees it */
    kd_scope_end();
    kt_check(kd_scope_depth() == 0 && kd_tensor_get(kept, 7) == 2.0, "scope.keep",
             "a kept tensor survives its scope");
    kd_tensor_free(kept);

    /* promote: out of an inner scope into the step's, and the memory
     * counters see the inner scope's other tensors go at once */
    kd_tensor *leaf = kd_tensor_full(KD_F64, KD_CPU, 1, shape, 1.0);
    kd_tensor_set_requires_grad(leaf, true);
    kd_memory_stats before = kd_memory_stats_of(KD_CPU);
    kd_scope_begin();
    kd_scope_begin();
    kd_tensor *tap = kd_tensor_full(KD_F32, KD_CPU, 1, shape, 3.0);
    kd_tensor *scratch = kd_tensor_zeros(KD_F32, KD_CPU, 1, shape);
    kd_status st = kd_scope_promote(tap);
    kd_scope_end();
    kd_memory_stats inner_end = kd_memory_stats_of(KD_CPU);
    kt_check(st == KD_OK && tap->scope && kd_tensor_get(tap, 0) == 3.0 && scratch &&
                 inner_end.live_bytes - before.live_bytes == 8 * 4 &&
                 inner_end.peak_bytes >= before.live_bytes + 2 * 8 * 4,
             "scope.promote", "status %s, live +%lld bytes (want 32)", kd_status_name(st),
             (long long)(inner_end.live_bytes - before.live_bytes));
    kd_scope_begin();
    kd_tensor *history = kd_mul_scalar(leaf, 2.0);
    kt_check(kd_scope_promote(history) == KD_ERR_INVALID &&
                 strstr(kd_last_error(), "autograd history"),
             "scope.promote refuses a tensor with autograd history", "%s", kd_last_error());
    kd_scope_end();
    kd_scope_end();
    kt_check(kd_memory_stats_of(KD_CPU).live_bytes == before.live_bytes, "memory.live",
             "%lld bytes left after the scopes ended",
             (long long)(kd_memory_stats_of(KD_CPU).live_bytes - before.live_bytes));
    kd_tensor_free(leaf);
}

/* A device carries an index; storage on a GPU other than cuda:0 is refused
 * by name, not placed on cuda:0. */
static void test_device_index(void)
{
    const int64_t shape[1] = {4};
    kd_tensor *t = kd_tensor_zeros(KD_F32, KD_CUDA_DEVICE(1), 1, shape);
    kt_check(!t && kd_last_status() == KD_ERR_UNSUPPORTED && strstr(kd_last_error(), "cuda:1") &&
                 kd_device_kind(KD_CUDA_DEVICE(3)) == KD_CUDA &&
                 kd_device_index(KD_CUDA_DEVICE(3)) == 3 && KD_CUDA_DEVICE(0) == KD_CUDA &&
                 kd_device_index(KD_CPU) == 0,
             "device: kind and index; cuda:1 refused", "%s", kd_last_error());
    kd_tensor_free(t);
}

static void test_autograd(void)
{
    int64_t shape[2] = {2, 3};
    double va[6] = {1, 2, 3, 4, 5, 6}, vb[6] = {0.5, -1, 2, 1, 1, -3};
    kd_tensor *a = kd_tensor_from_data(KD_F64, 2, shape, va);
    kd_tensor *b = kd_tensor_from_data(KD_F64, 2, shape, vb);
    kd_tensor_set_requires_grad(a, true);

    /* A diamond: a is used twice; d(sum(a*b + a))/da = b + 1. */
    kd_scope_begin();
    kd_tensor *loss = kd_sum_all(kd_add(kd_mul(a, b), a));
    kt_check(loss && kd_backward(loss) == KD_OK && a->grad && !b->grad &&
                 kd_tensor_get(a->grad, 2) == 3.0 && kd_tensor_get(a->grad, 5) == -2.0,
             "autograd.diamond", "grad %g %g (%s)", a->grad ? kd_tensor_get(a->grad, 2) : 0,
             a->grad ? kd_tensor_get(a->grad, 5) : 0, kd_last_error());
    kd_scope_end();

    /* A second micro-batch accumulates into the same .grad. */
    kd_scope_begin();
    loss = kd_sum_all(kd_mul(a, b));
    kt_check(kd_backward(loss) == KD_OK && kd_tensor_get(a->grad, 2) == 5.0,
             "autograd.accumulate", "grad %g", kd_tensor_get(a->grad, 2));
    kd_scope_end();
    kd_tensor_zero_grad(a);
    kt_check(a->grad == NULL, "autograd.zero_grad", "grad kept");

    /* With grad off nothing is recorded and nothing requires grad. */
    kd_scope_begin();
    bool was = kd_set_grad_enabled(false);
    kd_tensor *y = kd_mul(a, b);
    kd_set_grad_enabled(was);
    kt_check(y && !y->requires_grad && !y->grad_fn, "autograd.no_grad", "op recorded");
    kd_status st = kd_backward(kd_sum_all(y));
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), "does not require grad"),
             "autograd.backward_without_grad", "message '%s'", kd_last_error());
    st = kd_backward(kd_mul(a, b));
    kt_check(st == KD_ERR_INVALID && strstr(kd_last_error(), "one element"),
             "autograd.backward_non_scalar", "message '%s'", kd_last_error());
    kd_scope_end();

    /* A NULL anywhere in a chain comes out as NULL with the first message. */
    kd_scope_begin();
    int64_t other[2] = {3, 2};
    kd_tensor *c = kd_tensor_zeros(KD_F64, KD_CPU, 2, other);
    kd_tensor *r = kd_relu(kd_exp(kd_add(a, c)));
    kt_check(!r && strstr(kd_last_error(), "add") && strstr(kd_last_error(), "broadcast"),
             "autograd.null_chain", "message '%s'", kd_last_error());
    kd_scope_end();

    /* Deep chains don't recurse: 20000 ops in a row. */
    kd_scope_begin();
    kd_tensor *x = a;
    for (int i = 0; i < 20000 && x; i++)
        x = kd_add_scalar(x, 1e-4);
    kt_check(x && kd_backward(kd_sum_all(x)) == KD_OK && kd_tensor_get(a->grad, 0) == 1.0,
             "autograd.deep_chain", "%s", kd_last_error());
    kd_scope_end();
    /* Pass-through gradients share storage during backward, but two
     * leaves never end up sharing one .grad, and a leaf used twice sums. */
    kd_tensor_zero_grad(a);
    kd_tensor_set_requires_grad(b, true);
    kd_scope_begin();
    kd_status shared_st = kd_backward(kd_sum_all(kd_add(kd_add(a, b), a)));
    bool have = shared_st == KD_OK && a->grad && b->grad;
    kt_check(have && a->grad->storage != b->grad->storage && kd_tensor_get(a->grad, 0) == 2.0 &&
                 kd_tensor_get(b->grad, 0) == 1.0,
             "autograd.leaves_do_not_share", "%s: grads %g %g", kd_last_error(),
             have ? kd_tensor_get(a->grad, 0) : NAN, have ? kd_tensor_get(b->grad, 0) : NAN);
    kd_scope_end();
    ((double *)kd_tensor_data(a->grad))[0] = 5.0;
    kt_check(kd_tensor_get(b->grad, 0) == 1.0, "autograd.leaf_grad_private",
             "writing one leaf's grad changed another's");
    kd_tensor_zero_grad(a);
    kd_tensor_zero_grad(b);
    /* The caller's upstream gradient is copied, not shared. */
    kd_tensor *w = kd_tensor_full(KD_F64, KD_CPU, 2, shape, 3.0);
    bool seeded = kd_backward_with(a, w) == KD_OK && kd_tensor_fill_(w, 7.0) == KD_OK;
    double seen = seeded && a->grad ? kd_tensor_get(a->grad, 4) : NAN;
    kt_check(seen == 3.0, "autograd.seed_copied", "grad %g (%s)", seen, kd_last_error());
    kd_tensor_free(w);
    kd_tensor_free(a);
    kd_tensor_free(b);
}

static void test_rng(void)
{
    /* Known answers published with Random123 (Salmon et al. 2011). */
    static const uint32_t keys[3][2] = {{0, 0}, {0xffffffff, 0xffffffff},
                                        {0xa4093822, 0x299f31d0}};
    static const uint32_t ctrs[3][4] = {{0, 0, 0, 0},
                                        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                                        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}};
    static const uint32_t want[3][4] = {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
                                        {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
                                        {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}};
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        kd_philox4x32(keys[i], ctrs[i], out);
        bad += memcmp(out, want[i], sizeof out) != 0;
    }
    kt_check(bad == 0, "rng.philox_known_answers", "%d of 3 vectors differ", bad);

    kd_rng a = kd_rng_make(42, 1, 2), b = kd_rng_make(42, 1, 2), c = kd_rng_make(42, 1, 3);
    bool same = true, differ = false;
    for (int i = 0; i < 100; i++) {
        uint32_t x = kd_rng_u32(&a);
        same &= x == kd_rng_u32(&b);
        differ |= x != kd_rng_u32(&c);
    }
    kt_check(same && differ, "rng.streams", "same key must repeat, other stream must differ");

    /* Filling in parts gives the draws one by one would. */
    kd_rng r = kd_rng_make(7, 0, 0);
    float whole[37], parts[37];
    kd_rng_fill_uniformf(&r, 0, whole, 37);
    kd_rng_fill_uniformf(&r, 0, parts, 5);
    kd_rng_fill_uniformf(&r, 5, parts + 5, 32);
    bool match = memcmp(whole, parts, sizeof whole) == 0;
    for (int i = 0; i < 37; i++)
        match &= kd_rng_uniformf(&r) == whole[i];
    kt_check(match, "rng.fill_matches_sequential", "parallel fill differs from draws");

    double sum = 0, sq = 0;
    kd_rng n = kd_rng_make(3, 0, 0);
    for (int i = 0; i < 200000; i++) {
        double v = kd_rng_normal(&n);
        sum += v;
        sq += v * v;
    }
    double mean = sum / 200000, var = sq / 200000 - mean * mean;
    kt_check(fabs(mean) < 0.01 && fabs(var - 1) < 0.02, "rng.normal_moments",
             "mean %g var %g", mean, var);
    int counts[10] = {0};
    for (int i = 0; i < 100000; i++)
        counts[kd_rng_below(&n, 10)]++;
    int lo = counts[0], hi = counts[0];
    for (int i = 1; i < 10; i++) {
        lo = counts[i] < lo ? counts[i] : lo;
        hi = counts[i] > hi ? counts[i] : hi;
    }
    kt_check(lo > 9500 && hi < 10500, "rng.below_uniform", "counts %d..%d", lo, hi);
}

static void test_host_allocator(void)
{
    int64_t shape[1] = {300000};
    kd_tensor *a = kd_tensor_empty(KD_F32, KD_CPU, 1, shape);
    void *first = a->storage->data;
    kd_tensor_free(a);
    size_t cached = kd_host_cached_bytes();
    kd_tensor *b = kd_tensor_empty(KD_F32, KD_CPU, 1, shape);
    kt_check(b->storage->data == first && kd_host_cached_bytes() + b->storage->capacity == cached &&
                 b->storage->capacity >= 1200000 && b->storage->capacity <= 1500000,
             "host_alloc.reuse", "a freed block of the same class is handed out again");
    kt_check(((uintptr_t)b->storage->data & 63) == 0, "host_alloc.aligned", "not 64-byte aligned");
    kd_tensor_free(b);
    kd_host_release_cache();
    kt_check(kd_host_cached_bytes() == 0, "host_alloc.release", "cache not emptied");
}

static void test_dropout_rng(void)
{
    int64_t shape[2] = {1000, 1000};
    kd_scope_begin();
    kd_tensor *x = kd_tensor_full(KD_F32, KD_CPU, 2, shape, 1.0);
    kd_rng r1 = kd_rng_make(42, 3, 4), r2 = kd_rng_make(42, 3, 4), r3 = kd_rng_make(42, 3, 5);
    kd_set_num_threads(1);
    kd_tensor *y1 = kd_dropout(x, 0.3, true, &r1);
    kd_set_num_threads(2);
    kd_tensor *y2 = kd_dropout(x, 0.3, true, &r2);
    kd_tensor *y3 = kd_dropout(x, 0.3, true, &r3);
    int64_t kept = 0, n = kd_tensor_numel(x);
    const float *d1 = kd_tensor_data(y1);
    for (int64_t i = 0; i < n; i++)
        kept += d1[i] != 0;
    double rate = (double)kept / (double)n;
    kt_check(fabs(rate - 0.7) < 0.002, "dropout.keep_rate", "kept %.4f of elements", rate);
    kt_check(kt_max_abs_diff(y1, y2) == 0 && kt_max_abs_diff(y1, y3) > 0,
             "dropout.same_mask_any_threads", "threads changed the mask, or streams agreed");
    kt_check(r1.counter == (uint64_t)n, "dropout.counter_advances", "counter %llu",
             (unsigned long long)r1.counter);
    kd_tensor *y4 = kd_dropout(x, 0.3, true, &r1);
    kt_check(kt_max_abs_diff(y1, y4) > 0, "dropout.next_call_new_mask", "mask repeated");
    kt_check(kd_dropout(x, 0.3, false, &r1) == x && kd_dropout(x, 0.0, true, &r1) == x,
             "dropout.identity", "eval or p = 0 must return the input");
    kt_check(!kd_dropout(x, 1.0, true, &r1) && strstr(kd_last_error(), "p = 1"),
             "dropout.bad_p", "message '%s'", kd_last_error());
    int64_t samples[2] = {20000, 3};
    kd_tensor *s = kd_tensor_full(KD_F32, KD_CPU, 2, samples, 1.0);
    kd_rng r5 = kd_rng_make(9, 0, 0);
    kd_tensor *p = kd_drop_path(s, 0.25, true, &r5);
    const float *dp = kd_tensor_data(p);
    int64_t kept_samples = 0, mixed = 0;
    for (int64_t i = 0; i < 20000; i++) {
        kept_samples += dp[3 * i] != 0;
        mixed += (dp[3 * i] != 0) != (dp[3 * i + 2] != 0);
    }
    kt_check(mixed == 0 && fabs(kept_samples / 20000.0 - 0.75) < 0.015 &&
                 r5.counter == 20000,
             "drop_path.whole_samples", "kept %lld, mixed %lld", (long long)kept_samples,
             (long long)mixed);
    kd_scope_end();
}

static void test_errors(void)
{
    kd_status st = kd_error(KD_ERR_FORMAT, "file %s", "a.bin");
    kd_error_wrap(st, "loading %s", "model");
    kt_check(st == KD_ERR_FORMAT && strcmp(kd_last_error(), "loading model: file a.bin") == 0,
             "status.wrap", "message '%s'", kd_last_error());
    kt_check(kd_last_status() == KD_ERR_FORMAT, "status.last", "last status %d",
             (int)kd_last_status());
    kd_error_wrap(kd_last_status(), "job");
    kt_check(kd_last_status() == KD_ERR_FORMAT &&
                 strcmp(kd_last_error(), "job: loading model: file a.bin") == 0,
             "status.wrap_keeps_code", "status %d, message '%s'", (int)kd_last_status(),
             kd_last_error());
    kd_clear_error();
    kt_check(kd_last_status() == KD_OK && kd_last_error()[0] == '\0', "status.clear",
             "status %d, message '%s'", (int)kd_last_status(), kd_last_error());
    kt_check(strcmp(kd_status_name(KD_ERR_IO), "i/o error") == 0, "status.names", "names");
}

#ifdef KD_HAVE_DNNL
/* A teacher and a student need more convolution primitives than the 48 the
 * cache once held; cycling through 200 problems (5 of them blocked-layout
 * 3x3 ones, which need reorders through the scratch buffer) twice must
 * create each primitive once. */
static void test_conv_primitive_cache(void)
{
    enum { PROBLEMS = 200 };
    kd_conv2d_dnnl_stats before, after;
    kd_conv2d_dnnl_stats_get(&before);
    kd_status st = KD_OK;
    for (int pass = 0; pass < 2 && st == KD_OK; pass++)
        for (int i = 0; i < PROBLEMS && st == KD_OK; i++) {
            kd_scope_begin();
            int k = i % 40 < 5 ? 3 : 1, c = 8 + i % 40;
            int64_t xs[4] = {1 + i / 40, c, 6, 6}, ws[4] = {16, c, k, k};
            kd_tensor *x = kd_tensor_zeros(KD_F32, KD_CPU, 4, xs);
            kd_tensor *w = kd_tensor_zeros(KD_F32, KD_CPU, 4, ws);
            kd_conv2d_params p = {{1, 1}, {k / 2, k / 2}, {1, 1}, 1};
            if (!kd_conv2d(x, w, NULL, &p))
                st = kd_last_status();
            kd_scope_end();
        }
    kd_conv2d_dnnl_stats_get(&after);
    kt_check(st == KD_OK && after.created - before.created == PROBLEMS &&
                 after.calls - before.calls == 2 * PROBLEMS && after.evicted == before.evicted,
             "conv.dnnl_cache_holds_200", "status %d (%s): %lld created, %lld calls, %lld evicted",
             (int)st, kd_last_error(), (long long)(after.created - before.created),
             (long long)(after.calls - before.calls), (long long)(after.evicted - before.evicted));
    kt_check(after.scratch_bytes > 0, "conv.dnnl_scratch_shared",
             "no reorder went through the scratch buffer");
}
#endif

static void test_mac_count(void)
{
    kd_scope_begin();
    int64_t xs[4] = {1, 3, 8, 8}, ws[4] = {4, 3, 3, 3}, as[2] = {2, 5}, bs[2] = {5, 7};
    kd_tensor *x = kd_tensor_zeros(KD_F32, KD_CPU, 4, xs);
    kd_tensor *w = kd_tensor_zeros(KD_F32, KD_CPU, 4, ws);
    kd_conv2d_params p = {{1, 1}, {1, 1}, {1, 1}, 1};
    kd_macs_take();
    kd_conv2d(x, w, NULL, &p);
    int64_t conv = kd_macs_take();
    kd_tensor *a = kd_tensor_zeros(KD_F32, KD_CPU, 2, as);
    kd_tensor *b = kd_tensor_zeros(KD_F32, KD_CPU, 2, bs);
    kd_matmul(a, b);
    int64_t mm = kd_macs_take();
    kd_linear(a, kd_transpose(b, 0, 1), NULL);
    int64_t lin = kd_macs_take();
    int64_t qs[4] = {2, 3, 5, 4}, ks[4] = {2, 3, 6, 4}, vs[4] = {2, 3, 6, 7};
    kd_scaled_dot_product_attention(kd_tensor_zeros(KD_F32, KD_CPU, 4, qs),
                                    kd_tensor_zeros(KD_F32, KD_CPU, 4, ks),
                                    kd_tensor_zeros(KD_F32, KD_CPU, 4, vs), NULL, 0.5);
    int64_t attn = kd_macs_take();
    kd_alloc_bytes_take();
    kd_relu(x);
    int64_t other = kd_macs_take();
    int64_t bytes = kd_alloc_bytes_take();
    kt_check(bytes == 4 * 3 * 8 * 8, "runtime.alloc_bytes", "relu of 192 floats made %lld bytes",
             (long long)bytes);
    /* conv: 4x8x8 outputs of 3x3x3 products; matmul and linear: 2x7 of 5;
     * attention: 6 entries of 5x6 scores of 4 and 5x7 outputs of 6 */
    kt_check(conv == 256 * 27 && mm == 70 && lin == 70 && attn == 6 * (30 * 4 + 35 * 6) &&
                 other == 0,
             "runtime.mac_count", "conv %lld, matmul %lld, linear %lld, attention %lld, relu %lld",
             (long long)conv, (long long)mm, (long long)lin, (long long)attn, (long long)other);
    kd_scope_end();
}

int main(void)
{
    kd_set_num_threads(2);
    test_dtype();
    test_tensor_basics();
    test_scopes();
    test_device_index();
    test_autograd();
    test_rng();
    test_host_allocator();
    test_dropout_rng();
    test_errors();
    test_mac_count();
#ifdef KD_HAVE_DNNL
    test_conv_primitive_cache();
#endif
    return kt_finish();
}
