/* What test_adamw and test_lamb share: an optimizer plugin run over the
 * same five parameters and gradients as test_optim's SGD cases, checked
 * step for step against torch.optim / timm (tests/parity/
 * torch_adaptive_optim.py, one Python process per test file), and a
 * save/restore mid-run that must continue to the bit.
 *
 * A case is a table row: provider, its parameters as JSON, dtype. */
#ifndef KD_TEST_OPTIM_PARITY_H
#define KD_TEST_OPTIM_PARITY_H

#include <kdengine/kdengine.h>

typedef struct kt_optim_case {
    const char *name;
    const char *provider; /* "adamw", "adam", "lamb" */
    const char *params;   /* the provider's parameters, a JSON object */
    kd_dtype dtype;
} kt_optim_case;

/* Steps every case runs, and where the restore case saves its state. */
#define KT_OPTIM_STEPS 8
#define KT_OPTIM_RESTORE_AT 3

/* Runs every case of `plugin` (its folder under plugins/optim) and checks
 * the final parameters and state against the reference: float64 to 1e-12
 * (norm-wise relative), float32 against the float64 reference from the
 * same values within f32_tolerance (the caller's rounding analysis). */
void kt_optim_parity(const char *plugin, int n, const kt_optim_case *cases,
                     double f32_tolerance);

/* An instance of provider over params[0..n) (named "p0".., every odd one
 * flagged no-decay), its vtable in *vt; NULL with kd_last_error() set. */
void *kt_optim_new(const char *provider, const char *json, kd_dtype dtype, int n,
                   kd_tensor *const *params, const kd_optimizer_vtable **vt);

#endif
