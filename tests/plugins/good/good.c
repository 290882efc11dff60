/* A well-formed test plugin: a model and a loss whose vtables report how
 * often the entry function ran, so the tests can see the library is loaded
 * once. */
#include <kdengine/plugin.h>

typedef struct counting_vtable {
    kd_vtable_header header;
    int (*entry_calls)(void);
} counting_vtable;

static int calls;

static int entry_calls(void) { return calls; }

static const counting_vtable model_vtable = {
    {sizeof(counting_vtable), KD_KIND_MODEL}, entry_calls};
static const counting_vtable loss_vtable = {
    {sizeof(counting_vtable), KD_KIND_LOSS}, entry_calls};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "good_loss", &loss_vtable.header},
    {KD_KIND_MODEL, "good_model", &model_vtable.header},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    calls++;
    KD_PLUGIN_INFO_INIT(info, "good", "1.2.0");
    info->n_providers = 2;
    info->providers = providers;
    return KD_OK;
}
