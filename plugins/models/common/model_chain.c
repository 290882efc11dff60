#include "model_chain.h"

kd_status mc_run(model_chain c, int from, const kd_forward_args *args)
{
    int last = -1;
    for (int t = from + 1; t < c.n_taps; t++)
        if (args->want[t])
            last = t;
    kd_rng rng = args->rng;
    kd_tensor *x = args->input;
    for (int t = from + 1; t <= last; t++) {
        x = c.segment(c.self, t, x, args->training, &rng);
        if (!x)
            return kd_error_wrap(kd_last_status(), "%s: %s", c.model, c.taps[t].name);
        args->taps[t] = x;
    }
    return KD_OK;
}

kd_status mc_check_from(model_chain c, int from)
{
    if (from < 0 || from >= c.n_taps - 1)
        return kd_error(KD_ERR_INVALID, "%s: forward_from tap %d is out of range: it starts "
                        "from taps 0..%d (%s..%s)", c.model, from, c.n_taps - 2,
                        c.taps[0].name, c.taps[c.n_taps - 2].name);
    return KD_OK;
}

kd_status mc_check_args(const char *model, kd_dtype dtype, const kd_forward_args *args,
                        const char *what)
{
    if (!args || !args->input || !args->want || !args->taps)
        return kd_error(KD_ERR_INVALID, "%s: %s needs an input, want and taps", model, what);
    const kd_tensor *x = args->input;
    if (x->dtype != dtype || x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: %s takes %s CPU tensors, got %s on device %d",
                        model, what, kd_dtype_name(dtype), kd_dtype_name(x->dtype),
                        (int)x->device);
    return KD_OK;
}
