/* The lamb plugin: step for step against timm 0.9.16's Lamb
 * (tests/optim_parity.c, one Python process), a mid-run save/restore that
 * continues to the bit, and its errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "optim_parity.h"
#include "plugin_fixture.h"

/* The gradients' global norm grows from about 6 to 50 over the steps
 * (optim_parity.c), so max_grad_norm 1 clips every step, 20 only the
 * later ones, 1e4 none, and 0 turns clipping off. */
static const kt_optim_case CASES[] = {
    {"lamb defaults f64", "lamb", "{}", KD_F64},
    {"lamb clip from step 3 f64", "lamb", "{\"max_grad_norm\": 20, \"weight_decay\": 0.05}",
     KD_F64},
    {"lamb no clipping, trust_clip f64", "lamb",
     "{\"max_grad_norm\": 0, \"trust_clip\": true}", KD_F64},
    {"lamb always_adapt, no averaging or bias correction f64", "lamb",
     "{\"always_adapt\": true, \"grad_averaging\": false, \"bias_correction\": false, "
     "\"max_grad_norm\": 10000}",
     KD_F64},
    {"lamb decay all f64", "lamb",
     "{\"no_decay\": false, \"weight_decay\": 0.1, \"beta1\": 0.8, \"beta2\": 0.99, "
     "\"eps\": 1e-8}",
     KD_F64},
    {"lamb no decay, no adaptation f64", "lamb", "{\"weight_decay\": 0}", KD_F64},
    {"lamb defaults f32", "lamb", "{}", KD_F32},
    {"lamb trust_clip always_adapt f32", "lamb",
     "{\"trust_clip\": true, \"always_adapt\": true, \"max_grad_norm\": 20}", KD_F32},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])

/* float32 against the exact (float64) trajectory from the same inputs:
 * the budget of test_adamw (64 u per step: about a dozen roundings per
 * element, and the cancellation in the signed first moment), since every
 * norm (the global one, ||p||, ||u||) is accumulated in double and its
 * result, the clipping divisor and the trust ratio each rounded to float32
 * once, a few u more. */
#define F32_TOLERANCE (KT_OPTIM_STEPS * 64.0 * 0x1p-24)

static void expect_error(const char *name, bool failed, const char *needle)
{
    kt_check(failed && strstr(kd_last_error(), needle), name, "message \"%s\" (expected \"%s\")",
             kd_last_error(), needle);
}

static void test_errors(void)
{
    kd_tensor *p[3] = {kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){2, 3}),
                       kd_tensor_zeros(KD_F64, KD_CPU, 1, (int64_t[]){4}),
                       kd_tensor_zeros(KD_F32, KD_CPU, 1, (int64_t[]){3})};
    const kd_optimizer_vtable *vt = NULL;
    void *s = kt_optim_new("lamb", "{}", KD_F32, 2, p, &vt);
    expect_error("lamb error mixed dtypes", !s, "lamb: parameter 'p1' is f64 but the first is f32");
    if (s)
        vt->destroy(s);
    s = kt_optim_new("lamb", "{}", KD_F32, 0, p, &vt);
    expect_error("lamb error no parameters", !s, "lamb: no parameters to optimise (n = 0)");
    if (s)
        vt->destroy(s);
    kd_tensor *ok[2] = {p[0], p[2]};
    s = kt_optim_new("lamb", "{}", KD_F32, 2, ok, &vt);
    if (!kt_check(s != NULL, "lamb create", "%s", kd_last_error()))
        goto done;
    expect_error("lamb error lr", vt->step(s, -1) != KD_OK,
                 "lamb: learning rate must be a finite value >= 0, got -1");
    p[2]->grad = kd_tensor_zeros(KD_F32, KD_CPU, 1, (int64_t[]){4});
    expect_error("lamb error grad shape", vt->step(s, 0.1) != KD_OK,
                 "lamb: the gradient of parameter 1 (f32 [4]) does not match it (f32 [3])");
    kd_tensor_list state = {0};
    kt_check(vt->state(s, &state) == KD_OK && state.n == 5 &&
                 strcmp(kd_tensor_list_at(&state, 3)->name, "exp_avg_sq.p1") == 0 &&
                 strcmp(kd_tensor_list_at(&state, 4)->name, "step") == 0 &&
                 ((int64_t *)kd_tensor_data(kd_tensor_list_at(&state, 4)->tensor))[0] == 0,
             "lamb state names, refused step counts nothing", "%d tensors", state.n);
    vt->destroy(s);
done:
    for (int i = 0; i < 3; i++)
        kd_tensor_free(p[i]);
}

/* Zero weights (trust ratio 1) and an all-zero step stay put. */
static void test_zero(void)
{
    kd_tensor *p = kd_tensor_zeros(KD_F64, KD_CPU, 1, (int64_t[]){5});
    const kd_optimizer_vtable *vt = NULL;
    void *s = kt_optim_new("lamb", "{\"always_adapt\": true}", KD_F64, 1, &p, &vt);
    if (!kt_check(s != NULL, "lamb zero create", "%s", kd_last_error())) {
        kd_tensor_free(p);
        return;
    }
    p->grad = kd_tensor_zeros(KD_F64, KD_CPU, 1, (int64_t[]){5});
    kd_status st = vt->step(s, 0.1);
    double sum = 0;
    for (int i = 0; i < 5; i++)
        sum += fabs(kd_tensor_get(p, i));
    kt_check(st == KD_OK && sum == 0, "lamb zero weights and gradients stay zero",
             "status %s, |p| %g", kd_status_name(st), sum);
    vt->destroy(s);
    kd_tensor_free(p);
}

int main(void)
{
    test_errors();
    test_zero();
    kt_optim_parity("lamb", N_CASES, CASES, F32_TOLERANCE);
    kt_plugins_close();
    return kt_finish();
}
