/* Loading the build's own plugins in tests.
 *
 * The build stages every plugin in BUILDDIR/plugin-dir (manifest + .so);
 * these helpers scan it once per process, load a provider through the real
 * registry (the same checks a job goes through) and build its parameters
 * from a JSON text against the manifest schema. The registry lives until
 * kt_plugins_close(), so vtables stay valid until then. */
#ifndef KD_TEST_PLUGIN_FIXTURE_H
#define KD_TEST_PLUGIN_FIXTURE_H

#include <kdengine/kdengine.h>

#include "../core/registry.h"

/* The staged plugin dir of this build. */
const char *kt_plugin_dir(void);
/* The provider's manifest entry and vtable; NULL with a message printed
 * when it is missing or does not load. */
const kd_registry_entry *kt_provider(kd_plugin_kind kind, const char *name,
                                     const kd_vtable_header **vtable);
/* What the host hands the provider's create(): its name and user data, the
 * parameters, CPU, float32. */
kd_create_args kt_create_args(const kd_registry_entry *entry, const kd_params *params,
                              uint64_t seed);
/* Parameters for `entry` from a JSON object text ("{}" for the defaults);
 * NULL with the error printed when they do not validate. Free with
 * kd_params_free. */
kd_params *kt_params(const kd_registry_entry *entry, const char *json_text);
void kt_plugins_close(void);

#endif
