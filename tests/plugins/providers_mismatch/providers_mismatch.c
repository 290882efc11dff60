/* Provides _a and _c while its manifest declares _a and _b. */
#include <kdengine/plugin.h>

static const kd_vtable_header vtable = {sizeof(kd_vtable_header), KD_KIND_LOSS};
static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "providers_mismatch_a", &vtable, NULL},
    {KD_KIND_LOSS, "providers_mismatch_c", &vtable, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "providers_mismatch", "0.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 2);
    return KD_OK;
}
