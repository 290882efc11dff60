/* The plugin authors' test kit (kdengine/testkit.h) on the build's own
 * plugins, and custom ops (kdengine/custom_op.h) through its gradient
 * check: a right backward passes, a wrong one fails, errors name the op,
 * the plugin or the path. Links libkdtestkit and libkdcore only, as a
 * third party's test would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/testkit.h>

#include "custom_ops.h"
#include "harness.h"

static const char *plugin_dir = KD_BUILDDIR "/plugin-dir";

/* Case `name` passes when st is an error whose message holds `want`. */
static void expect_error(const char *name, kd_status st, const char *want)
{
    kt_check(st != KD_OK && strstr(kd_last_error(), want), name, "status %d, message '%s'",
             (int)st, kd_last_error());
}

static kd_tensor *logits(kd_dtype dtype, int64_t n, int64_t c, uint64_t seed, bool grad)
{
    kd_rng rng = kd_rng_make(seed, 0, 0);
    const int64_t shape[2] = {n, c};
    kd_tensor *x = kt_uniform(dtype, 2, shape, &rng, -3.0, 3.0);
    kd_tensor_set_requires_grad(x, grad);
    return x;
}

static void test_open_errors(void)
{
    kd_testkit *kit = NULL;
    expect_error("open: a missing path is named", kd_testkit_open("/nonexistent/kd", &kit),
                 "plugin dir '/nonexistent/kd'");
    kt_check(!kit, "open: no kit on failure", "kit set");
    char empty[] = "/tmp/kdtestkit.XXXXXX";
    if (mkdtemp(empty)) {
        expect_error("open: a folder without manifests is named", kd_testkit_open(empty, &kit),
                     empty);
        kt_remove_tree(empty);
    }
}

static void test_create_errors(void)
{
    kd_testkit *kit;
    if (!kt_check(kd_testkit_open(plugin_dir, &kit) == KD_OK, "open: the staged plugin dir",
                  "%s", kd_last_error()))
        return;
    kd_testkit_instance *x = NULL;
    expect_error("create: an unknown provider is named with the path and what there is",
                 kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS, .provider = "kdd"},
                                   &x),
                 "no loss 'kdd' in '" KD_BUILDDIR "/plugin-dir' (it has ");
    expect_error("create: params that are not JSON name the manifest and the provider",
                 kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS, .provider = "kd",
                                                           .params = "{\"temperature\": }"}, &x),
                 "kd/manifest.json: loss 'kd': params are not JSON");
    expect_error("create: an unknown parameter gets the schema's suggestion",
                 kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS, .provider = "kd",
                                                           .params = "{\"temprature\": 2}"}, &x),
                 "kd.temprature: unknown parameter of loss 'kd'; did you mean temperature?");
    expect_error("create: an optimizer without its parameter list",
                 kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_OPTIMIZER,
                                                           .provider = "sgd"}, &x),
                 "optimizer 'sgd': spec.extra must point to its kd_tensor_list");
    kt_check(!x, "create: no instance on failure", "instance set");

    /* Other kinds: an optimizer over one parameter, a scheduler. */
    kd_tensor *w = logits(KD_F32, 2, 3, 1, true);
    kd_named_tensor named[] = {{"w", w, KD_TENSOR_PARAM}};
    kd_tensor_list params;
    KD_LIST_SET(&params, named, 1);
    kd_testkit_instance *sgd = NULL, *sched = NULL;
    kd_status st = kd_testkit_create(
        kit, &(kd_testkit_spec){.kind = KD_KIND_OPTIMIZER, .provider = "sgd", .extra = &params},
        &sgd);
    kt_check(st == KD_OK && sgd->vtable->kind == KD_KIND_OPTIMIZER, "create: an optimizer",
             "%s", kd_last_error());
    kd_schedule_info info = {.size = sizeof info, .base_lr = 0.1, .steps_per_epoch = 10,
                             .epochs = 2};
    double lr = 0;
    st = kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_SCHEDULER,
                                                   .provider = "constant", .extra = &info},
                           &sched);
    kt_check(st == KD_OK &&
                 ((const kd_scheduler_vtable *)sched->vtable)->lr_at(sched->self, 3, &lr) ==
                     KD_OK &&
                 lr == 0.1,
             "create: a scheduler", "%s (lr %g)", kd_last_error(), lr);
    kd_testkit_destroy(sched);
    kd_testkit_close(kit); /* destroys sgd, which must not outlive w */
    kd_tensor_free(w);
}

/* kd and ce loaded by path, run and gradient-checked in f64. */
static void test_losses(void)
{
    kd_testkit *kit;
    if (!kt_check(kd_testkit_open(KD_BUILDDIR "/plugin-dir/kd", &kit) == KD_OK,
                  "open: one plugin folder by path", "%s", kd_last_error()))
        return;
    kd_testkit_instance *kd;
    kd_status st = kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS,
                                                             .provider = "kd",
                                                             .params = "{\"temperature\": 3}",
                                                             .dtype = KD_F64},
                                     &kd);
    if (kt_check(st == KD_OK, "create: kd in f64", "%s", kd_last_error())) {
        kd_tensor *s = logits(KD_F64, 4, 6, 2, true), *t = logits(KD_F64, 4, 6, 3, false);
        kd_testkit_batch batch = {.student = &s, .teacher = &t};
        kd_testkit_gradcheck_report r;
        st = kd_testkit_loss_gradcheck(kd, &batch, 1e-6, &r);
        kt_check(st == KD_OK && r.probes == 24, "gradcheck: kd T=3 in f64",
                 "%s (%lld probes)", kd_last_error(), (long long)r.probes);
        kd_testkit_batch no_teacher = {.student = &s};
        kd_scope_begin();
        kd_loss_result out;
        expect_error("loss_forward: a missing teacher is named",
                     kd_testkit_loss_forward(kd, &no_teacher, &out),
                     "loss 'kd' needs 1 teacher tap(s) (first: logits)");
        kd_scope_end();
        kd_tensor_free(s);
        kd_tensor_free(t);
    }
    kd_testkit_close(kit);

    if (!kt_check(kd_testkit_open(KD_BUILDDIR "/plugin-dir/ce", &kit) == KD_OK,
                  "open: the ce folder", "%s", kd_last_error()))
        return;
    kd_testkit_instance *ce;
    st = kd_testkit_create(kit, &(kd_testkit_spec){.kind = KD_KIND_LOSS, .provider = "ce",
                                                   .dtype = KD_F64},
                           &ce);
    if (kt_check(st == KD_OK, "create: ce with its defaults", "%s", kd_last_error())) {
        kd_tensor *s = logits(KD_F64, 5, 4, 4, true);
        kd_tensor *labels = kd_tensor_from_data(KD_I64, 1, (int64_t[]){5},
                                                (int64_t[]){0, 3, 1, 1, 2});
        kd_testkit_batch batch = {.student = &s, .labels = labels};
        kd_scope_begin();
        kd_loss_result out;
        expect_error("loss_forward: bind() is not run inside a scope",
                     kd_testkit_loss_forward(ce, &batch, &out),
                     "loss 'ce' has bind(), which must run outside any scope");
        kd_scope_end();
        kt_check(kd_testkit_loss_bind(ce, &batch) == KD_OK, "loss_bind: ce", "%s",
                 kd_last_error());
        kd_scope_begin();
        st = kd_testkit_loss_forward(ce, &batch, &out);
        double want = kd_tensor_get(kd_cross_entropy(s, labels, 0.0), 0);
        kt_check(st == KD_OK && out.loss && kd_tensor_get(out.loss, 0) == want,
                 "loss_forward: ce equals kd_cross_entropy", "%s", kd_last_error());
        kd_scope_end();
        kt_check(kd_testkit_loss_gradcheck(ce, &batch, 1e-6, NULL) == KD_OK,
                 "gradcheck: ce in f64", "%s", kd_last_error());
        kd_tensor_free(s);
        kd_tensor_free(labels);
    }
    kd_testkit_close(kit);
}

/* ------------------------------------------------------------ custom ops */

static kd_tensor *softplus_fn(void *ctx, kd_tensor *const *x)
{
    (void)ctx;
    return kt_custom_softplus(x[0]);
}

static kd_tensor *softplus_wrong_fn(void *ctx, kd_tensor *const *x)
{
    (void)ctx;
    return kt_custom_softplus_wrong(x[0]);
}

static kd_tensor *mul_square_fn(void *ctx, kd_tensor *const *x)
{
    return kt_custom_scaled_mul_square(x[0], x[1], *(const double *)ctx);
}

static void test_custom_gradcheck(void)
{
    kd_tensor *x = logits(KD_F64, 3, 7, 5, true), *b = logits(KD_F64, 3, 7, 6, true);
    kd_testkit_gradcheck_report r;
    kt_check(kd_testkit_gradcheck(softplus_fn, NULL, 1, &x, 1e-6, &r) == KD_OK && r.probes == 21,
             "gradcheck: a custom softplus passes", "%s", kd_last_error());
    kd_status st = kd_testkit_gradcheck(softplus_wrong_fn, NULL, 1, &x, 1e-6, &r);
    kt_check(st == KD_ERR_INVALID && r.max_error > 1e-2 &&
                 strstr(kd_last_error(), "gradcheck: input 0 element "),
             "gradcheck: a wrong backward fails", "status %d, error %g: %s", (int)st,
             r.max_error, kd_last_error());
    double scale = 0.75;
    kd_tensor *in[2] = {x, b};
    kt_check(kd_testkit_gradcheck(mul_square_fn, &scale, 2, in, 1e-6, &r) == KD_OK &&
                 r.probes == 42,
             "gradcheck: a two-input custom op with a ctx", "%s", kd_last_error());
    kd_tensor *f32 = logits(KD_F32, 2, 2, 7, true);
    expect_error("gradcheck: f32 inputs are refused",
                 kd_testkit_gradcheck(softplus_fn, NULL, 1, &f32, 1e-6, NULL),
                 "input 0 must be a contiguous f64 CPU leaf (it is f32)");
    kd_tensor_free(f32);
    kd_tensor_free(x);
    kd_tensor_free(b);
}

static int freed;
static void count_free(void *ctx)
{
    (void)ctx;
    freed++;
}

static kd_status identity_backward(void *ctx, const kd_tensor *g, int n, kd_tensor *const *in,
                                   const kd_tensor *out, kd_tensor **grads)
{
    (void)ctx, (void)n, (void)in, (void)out;
    grads[0] = (kd_tensor *)g;
    return KD_OK;
}

static kd_status transposed_backward(void *ctx, const kd_tensor *g, int n,
                                     kd_tensor *const *in, const kd_tensor *out,
                                     kd_tensor **grads)
{
    (void)ctx, (void)n, (void)in, (void)out;
    grads[0] = kd_transpose((kd_tensor *)g, 0, 1);
    return KD_OK;
}

/* A new tensor with x's values, made as a plugin's kernel makes its output. */
static kd_tensor *fresh(const kd_tensor *x)
{
    kd_tensor *y = kd_tensor_empty(x->dtype, x->device, x->ndim, x->shape);
    return y && kd_tensor_copy_(y, x) == KD_OK ? y : NULL;
}

static void test_custom_errors(void)
{
    static const kd_custom_op identity = {sizeof identity, "identity", identity_backward,
                                          count_free};
    static const kd_custom_op wrong_shape = {sizeof wrong_shape, "wrong_shape",
                                             transposed_backward, count_free};
    kd_tensor *x = logits(KD_F32, 2, 3, 8, true);
    kd_scope_begin();
    freed = 0;
    kd_tensor *y = kd_custom_apply(&identity, 1, &x, fresh(x), NULL);
    kt_check(y && y->requires_grad && freed == 0, "custom op: recorded, ctx kept",
             "%s", kd_last_error());
    kt_check(y && kd_backward_with(y, kd_tensor_full(KD_F32, KD_CPU, 2, x->shape, 2.0)) == KD_OK &&
                 x->grad && kd_tensor_get(x->grad, 5) == 2.0,
             "custom op: the backward's gradient reaches the input", "%s", kd_last_error());
    kd_scope_end();
    kt_check(freed == 1, "custom op: ctx freed with the node at scope end", "freed %d", freed);

    kd_scope_begin();
    bool was = kd_set_grad_enabled(false);
    y = kd_custom_apply(&identity, 1, &x, fresh(x), NULL);
    kd_set_grad_enabled(was);
    kt_check(y && !y->requires_grad && freed == 2, "custom op: nothing recorded, ctx freed at once",
             "freed %d", freed);
    expect_error("custom op: the output may not be an input",
                 kd_custom_apply(&identity, 1, &x, x, NULL) ? KD_OK : kd_last_status(),
                 "custom op 'identity': the output is input 0");
    expect_error("custom op: the output may not come from recorded ops",
                 kd_custom_apply(&identity, 1, &x, kd_mul_scalar(x, 2.0), NULL)
                     ? KD_OK
                     : kd_last_status(),
                 "custom op 'identity': the output already requires grad");
    kt_check(freed == 4, "custom op: ctx freed on failure", "freed %d", freed);
    kd_clear_error();
    kd_tensor *none = NULL;
    kt_check(!kd_custom_apply(&identity, 1, &none, fresh(x), NULL) && freed == 5,
             "custom op: a NULL input gives NULL", "freed %d", freed);
    y = kd_custom_apply(&wrong_shape, 1, &x, fresh(x), NULL);
    expect_error("custom op: a gradient of the wrong shape names the op",
                 kd_backward(kd_sum_all(y)),
                 "backward of wrong_shape: gradient of input 0 is [3, 2] f32, the input [2, 3] "
                 "f32");
    kd_scope_end();
    kd_tensor_free(x);
}

int main(void)
{
    kd_set_num_threads(2);
    test_open_errors();
    test_create_errors();
    test_losses();
    test_custom_gradcheck();
    test_custom_errors();
    return kt_finish();
}
