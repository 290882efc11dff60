/* A loss provider whose vtable says it is a model vtable. */
#include <kdengine/plugin.h>

static const kd_vtable_header vtable = {sizeof(kd_vtable_header), KD_KIND_MODEL};
static const kd_plugin_provider providers[] = {{KD_KIND_LOSS, "vtable_kind_a", &vtable, NULL}};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "vtable_kind", "0.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
