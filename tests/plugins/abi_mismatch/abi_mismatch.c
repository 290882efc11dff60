/* Claims a plugin ABI this kdengine does not speak. */
#include <kdengine/plugin.h>

static const kd_vtable_header vtable = {sizeof(kd_vtable_header), KD_KIND_LOSS};
static const kd_plugin_provider providers[] = {{KD_KIND_LOSS, "abi_mismatch_a", &vtable, NULL}};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "abi_mismatch", "0.1.0");
    info->abi = 999;
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
