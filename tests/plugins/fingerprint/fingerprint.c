/* Pretends to be built against a kdengine whose kd_tensor is 16 bytes
 * smaller. */
#include <kdengine/plugin.h>

static const kd_vtable_header vtable = {sizeof(kd_vtable_header), KD_KIND_LOSS};
static const kd_plugin_provider providers[] = {{KD_KIND_LOSS, "fingerprint_a", &vtable}};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "fingerprint", "0.1.0");
    info->tensor_size -= 16;
    info->n_providers = 1;
    info->providers = providers;
    return KD_OK;
}
