/* Claims three providers and hands no array: the host must not read it. */
#include <kdengine/plugin.h>

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "null_providers", "0.1.0");
    info->n_providers = 3;
    info->providers = NULL;
    return KD_OK;
}
