/* The bound core/backend/cpu/erf_f32.h states, checked on every float:
 * kd_erf_f32 against double erf on all finite x >= 0 (and oddness:
 * f(-x) == -f(x)), kd_exp_neg_f32 against double exp on [-86, 0], in ulps
 * of the correctly rounded float result. Not in the suite (a billion
 * evaluations each, ~30 s): build it on demand, as the SIMD build and as a
 * --disable-simd build (no FMA contraction), and run it after changing
 * erf_f32.h:
 *   make -C build tests/erf_sweep && build/tests/erf_sweep
 * Exits 1 when a bound is exceeded. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "../core/backend/cpu/erf_f32.h"

#define ERF_MAX_ULP 1.4
#define EXP_MAX_ULP 1.4

/* One ulp at float t: the gap above it, below it at 1 (the last float
 * under 1 is the closest result there). */
static double ulp_at(float t)
{
    if (t == 0.0f)
        return 0x1p-149;
    if (t == 1.0f)
        return 0x1p-24;
    return (double)nextafterf(t, INFINITY) - (double)t;
}

int main(void)
{
    double erf_worst = 0, erf_abs = 0, exp_worst = 0;
    float erf_at = 0, exp_at = 0;
    for (uint32_t u = 0; u < 0x7f800000u; u++) {
        float x = kd_erf_float(u), y = kd_erf_f32(x);
        double t = erf((double)x), e = fabs((double)y - t);
        if (kd_erf_f32(-x) != -y) {
            printf("kd_erf_f32 is not odd at %a\n", (double)x);
            return 1;
        }
        erf_abs = e > erf_abs ? e : erf_abs;
        if (e / ulp_at((float)t) > erf_worst) {
            erf_worst = e / ulp_at((float)t);
            erf_at = x;
        }
    }
    for (uint32_t u = 0; u <= kd_erf_bits(86.0f); u++) {
        float q = -kd_erf_float(u);
        double t = exp((double)q), e = fabs((double)kd_exp_neg_f32(q) - t) / ulp_at((float)t);
        if (e > exp_worst) {
            exp_worst = e;
            exp_at = q;
        }
    }
    bool special = isnan(kd_erf_f32(NAN)) && kd_erf_f32(INFINITY) == 1.0f &&
                   kd_erf_f32(-INFINITY) == -1.0f && isnan(kd_exp_neg_f32(NAN)) &&
                   kd_exp_neg_f32(-INFINITY) == 0.0f && kd_exp_neg_f32(0.0f) == 1.0f;
    printf("kd_erf_f32: at most %.3f ulp (%.3g absolute), at %.9g\n", erf_worst, erf_abs,
           (double)erf_at);
    printf("kd_exp_neg_f32 on [-86, 0]: at most %.3f ulp, at %.9g\n", exp_worst, (double)exp_at);
    printf("NaN, infinities, 0: %s\n", special ? "as stated" : "WRONG");
    return erf_worst <= ERF_MAX_ULP && exp_worst <= EXP_MAX_ULP && special ? 0 : 1;
}
