/* Loading the build's staged plugins in tests. */
#include <stdio.h>

#include "plugin_fixture.h"

static kd_registry *registry;

const char *kt_plugin_dir(void) { return KD_BUILDDIR "/plugin-dir"; }

static kd_registry *open_registry(void)
{
    if (registry)
        return registry;
    if (kd_registry_new(&registry) != KD_OK) {
        fprintf(stderr, "plugin fixture: %s\n", kd_last_error());
        return NULL;
    }
    if (kd_registry_scan(registry, kt_plugin_dir()) != KD_OK) {
        fprintf(stderr, "plugin fixture: %s\n", kd_last_error());
        kd_registry_close(registry);
        registry = NULL;
    }
    return registry;
}

const kd_registry_entry *kt_provider(kd_plugin_kind kind, const char *name,
                                     const kd_vtable_header **vtable)
{
    kd_registry *r = open_registry();
    if (!r)
        return NULL;
    const kd_registry_entry *e = kd_registry_find(r, kind, name);
    if (!e) {
        fprintf(stderr, "plugin fixture: no %s '%s' in %s\n", kd_plugin_kind_name(kind), name,
                kt_plugin_dir());
        return NULL;
    }
    if (kd_registry_load(r, e, vtable, NULL) != KD_OK) {
        fprintf(stderr, "plugin fixture: %s\n", kd_last_error());
        return NULL;
    }
    return e;
}

kd_create_args kt_create_args(const kd_registry_entry *entry, const kd_params *params,
                              uint64_t seed)
{
    const kd_vtable_header *vtable;
    const kd_plugin_provider *provider = NULL;
    kd_registry *r = open_registry();
    if (r)
        kd_registry_load(r, entry, &vtable, &provider);
    return (kd_create_args){.size = sizeof(kd_create_args),
                            .params = params,
                            .seed = seed,
                            .device = KD_CPU,
                            .dtype = KD_F32,
                            .provider = entry->name,
                            .provider_data = provider ? provider->user_data : NULL};
}

kd_params *kt_params(const kd_registry_entry *entry, const char *json_text)
{
    json_error_t jerr;
    json_t *value = json_loads(json_text, 0, &jerr);
    if (!value) {
        fprintf(stderr, "plugin fixture: bad JSON '%s': %s\n", json_text, jerr.text);
        return NULL;
    }
    kd_params *p = NULL;
    if (kd_params_build(entry, value, entry->name, 0, NULL, &p) != KD_OK)
        fprintf(stderr, "plugin fixture: %s\n", kd_last_error());
    json_decref(value);
    return p;
}

void kt_plugins_close(void)
{
    kd_registry_close(registry);
    registry = NULL;
}
