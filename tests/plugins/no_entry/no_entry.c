/* Exports a misspelt entry function instead of kd_plugin_entry. */
#include <kdengine/plugin.h>

__attribute__((visibility("default"))) kd_status kd_plugin_entri(kd_plugin_info *info);

kd_status kd_plugin_entri(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "no_entry", "0.1.0");
    return KD_OK;
}
