/* The adamw plugin's "adamw" and "adam" providers: step for step against
 * torch.optim.AdamW and torch.optim.Adam (tests/optim_parity.c, one
 * Python process), a mid-run save/restore that continues to the bit, and
 * their errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "optim_parity.h"
#include "plugin_fixture.h"

static const kt_optim_case CASES[] = {
    {"adamw defaults f64", "adamw", "{}", KD_F64},
    {"adamw amsgrad f64", "adamw", "{\"amsgrad\": true, \"weight_decay\": 0.05}", KD_F64},
    {"adamw decay all f64", "adamw",
     "{\"no_decay\": false, \"weight_decay\": 0.1, \"beta1\": 0.8, \"beta2\": 0.99, "
     "\"eps\": 1e-6}",
     KD_F64},
    {"adamw no decay f64", "adamw", "{\"weight_decay\": 0}", KD_F64},
    {"adam l2 f64", "adam", "{\"weight_decay\": 0.001}", KD_F64},
    {"adam amsgrad decay all f64", "adam",
     "{\"amsgrad\": true, \"weight_decay\": 0.01, \"no_decay\": false}", KD_F64},
    {"adamw defaults f32", "adamw", "{}", KD_F32},
    {"adamw amsgrad f32", "adamw", "{\"amsgrad\": true, \"weight_decay\": 0.05}", KD_F32},
    {"adam l2 f32", "adam", "{\"weight_decay\": 0.001}", KD_F32},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])

/* float32 against the exact (float64) trajectory from the same inputs.
 * Per step an element goes through about a dozen float32 roundings (the
 * coefficients rounded once, then decay, two for m, three for v, sqrt,
 * two divisions, eps, the fused update), each at most u = 2^-24 relative.
 * m is a signed running sum whose norm can be several times smaller than
 * the sum of its terms' magnitudes (its rounding errors scale with the
 * latter), so the budget is 64 u per step, and errors carried into later
 * steps are damped by beta1, beta2 < 1 or passed on once (the weights):
 * the bound grows linearly in the number of steps. */
#define F32_TOLERANCE (KT_OPTIM_STEPS * 64.0 * 0x1p-24)

static void expect_error(const char *name, bool failed, const char *needle)
{
    kt_check(failed && strstr(kd_last_error(), needle), name, "message \"%s\" (expected \"%s\")",
             kd_last_error(), needle);
}

static void test_errors(void)
{
    kd_tensor *p[3] = {kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){2, 3}),
                       kd_tensor_zeros(KD_F32, KD_CPU, 1, (int64_t[]){4}),
                       kd_tensor_zeros(KD_F16, KD_CPU, 1, (int64_t[]){3})};
    const kd_optimizer_vtable *vt = NULL;
    void *s = kt_optim_new("adamw", "{}", KD_F32, 3, p, &vt);
    expect_error("adamw error dtype", !s, "adamw: parameter 'p2' is f16; f32 or f64 expected");
    if (s)
        vt->destroy(s);
    s = kt_optim_new("adam", "{}", KD_F32, 0, p, &vt);
    expect_error("adam error no parameters", !s, "adam: no parameters to optimise (n = 0)");
    if (s)
        vt->destroy(s);
    s = kt_optim_new("adamw", "{}", KD_F32, 2, p, &vt);
    if (!kt_check(s != NULL, "adamw create", "%s", kd_last_error()))
        goto done;
    expect_error("adamw error lr", vt->step(s, NAN) != KD_OK,
                 "adamw: learning rate must be a finite value >= 0, got nan");
    p[0]->grad = kd_tensor_zeros(KD_F32, KD_CPU, 2, (int64_t[]){3, 2});
    expect_error("adamw error grad shape", vt->step(s, 0.1) != KD_OK,
                 "adamw: the gradient of parameter 0 (f32 [3, 2]) does not match it "
                 "(f32 [2, 3])");
    kd_tensor_list state = {0};
    kt_check(vt->state(s, &state) == KD_OK && state.n == 6 &&
                 strcmp(kd_tensor_list_at(&state, 0)->name, "exp_avg.p0") == 0 &&
                 strcmp(kd_tensor_list_at(&state, 2)->name, "step.p0") == 0,
             "adamw state names", "%d tensors, first %s", state.n,
             state.n ? kd_tensor_list_at(&state, 0)->name : "none");
    /* A refused step moves nothing, not even the step counts. */
    kt_check(((int64_t *)kd_tensor_data(kd_tensor_list_at(&state, 2)->tensor))[0] == 0,
             "adamw refused step counts nothing", "step.p0 moved");
    vt->destroy(s);
done:
    for (int i = 0; i < 3; i++)
        kd_tensor_free(p[i]);
}

static void test_schema(void)
{
    const kd_vtable_header *h;
    const kd_registry_entry *e = kt_provider(KD_KIND_OPTIMIZER, "adamw", &h);
    kd_params *p = e ? kt_params(e, "{\"beta2\": 1}") : NULL;
    kt_check(e && !p, "adamw schema refuses beta2 = 1", "the parameters built");
    kd_params_free(p);
}

int main(void)
{
    test_errors();
    test_schema();
    kt_optim_parity("adamw", N_CASES, CASES, F32_TOLERANCE);
    kt_plugins_close();
    return kt_finish();
}
