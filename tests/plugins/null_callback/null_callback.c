/* A model whose vtable leaves a required callback (forward) NULL. */
#include <kdengine/plugin.h>

static kd_status create(const kd_create_args *args, void **self)
{
    (void)args;
    *self = NULL;
    return KD_OK;
}

static void destroy(void *self) { (void)self; }

static kd_status tensors(void *self, kd_tensor_list *out)
{
    (void)self;
    KD_LIST_SET(out, (const kd_named_tensor *)NULL, 0);
    return KD_OK;
}

static kd_status taps(void *self, kd_tap_list *out)
{
    (void)self;
    KD_LIST_SET(out, (const kd_tap_info *)NULL, 0);
    return KD_OK;
}

static const kd_model_vtable vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = create,
    .destroy = destroy,
    .tensors = tensors,
    .taps = taps,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_MODEL, "null_callback_a", &vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "null_callback", "0.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
