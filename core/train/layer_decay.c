/* See layer_decay.h. */
#include "layer_decay.h"

#include <math.h>

kd_status kd_layer_decay_scales(const kd_model_vtable *vt, void *self, const char *model,
                                int n, const kd_named_tensor *tensors, double decay,
                                double *scales)
{
    if (!(decay > 0 && decay <= 1))
        return kd_error(KD_ERR_INVALID, "optim.layer_decay: %g is outside (0, 1]", decay);
    if (!vt->layer_id)
        return kd_error(KD_ERR_UNSUPPORTED, "optim.layer_decay: the student '%s' does not "
                        "number its layers (no layer_id callback)", model);
    int layers = -1;
    for (int i = 0; i < n; i++) {
        scales[i] = 1.0;
        if (!(tensors[i].flags & KD_TENSOR_PARAM))
            continue;
        int id = -1, num = -1;
        kd_status st = vt->layer_id(self, i, &id, &num);
        if (st != KD_OK)
            return kd_error_wrap(st, "optim.layer_decay: student '%s'", model);
        if (layers < 0)
            layers = num;
        if (num != layers || id < 0 || id >= num)
            return kd_error(KD_ERR_FORMAT, "optim.layer_decay: student '%s' puts '%s' in layer "
                            "%d of %d (the model has %d layers)", model, tensors[i].name, id,
                            num, layers);
        /* timm's layer_decay ** (layer_max - layer_id): a Python float
         * power, which is C's pow */
        scales[i] = pow(decay, layers - 1 - id);
    }
    return KD_OK;
}
