/* Calls kd_record, which core/internal.h declares but libkdcore does not
 * export: the library must fail to load, naming the symbol. */
#include "../../../core/internal.h"

static const kd_vtable_header vtable = {sizeof(kd_vtable_header), KD_KIND_LOSS};
static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "internal_symbol_a", &vtable, NULL}};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "internal_symbol", "0.1.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    kd_node *node;
    return kd_record("internal_symbol", NULL, NULL, 0, NULL, &node);
}
