/* Pretends to be built against a kdengine whose kd_tensor is 16 bytes
 * smaller. */
#include <kdengine/plugin.h>

static const kd_vtable_header vtable = {sizeof(kd_vtable_header), KD_KIND_LOSS};
static const kd_plugin_provider providers[] = {{KD_KIND_LOSS, "fingerprint_a", &vtable, NULL}};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "fingerprint", "0.1.0");
    info->tensor_size -= 16;
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
