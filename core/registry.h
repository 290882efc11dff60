/* The host side of the plugin boundary (sdk/include/kdengine/plugin.h):
 * discovering manifests, validating parameters against their schemas, and
 * loading libraries on first use. Used by the CLI and the runner; plugins
 * never see it.
 *
 * Ownership: a kd_registry owns its manifests (parsed JSON), the strings
 * it hands out and every library it loaded; kd_registry_close releases all
 * of it, so vtables and entries are valid until then. */
#ifndef KD_CORE_REGISTRY_H
#define KD_CORE_REGISTRY_H

#include <stdbool.h>

#include <jansson.h>
#include <kdengine/plugin.h>

typedef struct kd_registry kd_registry;

/* One provider as a manifest declares it. */
typedef struct kd_registry_entry {
    kd_plugin_kind kind;
    const char *name;          /* provider name, unique per kind */
    const char *summary;
    const char *plugin;        /* the manifest's "name" */
    const char *version;
    const char *manifest_path; /* absolute or as found */
    const char *library_path;  /* resolved against the manifest's folder */
    const json_t *params;      /* the schema object: {"key": {...}, ...} */
} kd_registry_entry;

kd_status kd_registry_new(kd_registry **out);
void kd_registry_close(kd_registry *r);

/* Reads DIR/<plugin>/manifest.json for every subfolder of dir (and
 * dir/manifest.json itself if present); no code is loaded. A manifest that
 * does not parse or breaks the format, or a provider whose (kind, name) is
 * already registered from another manifest, is an error naming both files. */
kd_status kd_registry_scan(kd_registry *r, const char *dir);
/* The built-in plugin dir (KD_PLUGIN_DIR, set by the build), then each
 * entry of $KDENGINE_PLUGIN_PATH (colon-separated), then extra_dirs. A
 * missing built-in dir is fine; a missing dir named by the user is an
 * error. */
kd_status kd_registry_scan_default(kd_registry *r, int n_extra,
                                   const char *const *extra_dirs);

int kd_registry_count(const kd_registry *r);
/* Entries ordered by kind, then name. */
const kd_registry_entry *kd_registry_at(const kd_registry *r, int i);
/* NULL when absent. */
const kd_registry_entry *kd_registry_find(const kd_registry *r,
                                          kd_plugin_kind kind, const char *name);
/* Loads the entry's library (once per library), checks the entry
 * function, the ABI, the fingerprint, that the library's name, version and
 * providers match its manifest, every vtable's kind, size and required
 * callbacks, and returns the provider's vtable: the host's copy, as large
 * as this build's vtable struct for the kind, with the callbacks an older
 * plugin lacks NULL. *provider (when not NULL) gets the provider entry
 * (its user_data). Every failure names the library file (and symbol,
 * provider or callback). */
kd_status kd_registry_load(kd_registry *r, const kd_registry_entry *entry,
                           const kd_vtable_header **vtable, const kd_plugin_provider **provider);

/* --- parameters against a schema (core/params.c) ---
 * Checks `value` (a JSON object, may be NULL = {}) against the schema of an
 * entry: unknown keys (with the closest known key suggested), types,
 * ranges, choices, required keys. `path` names the object in messages, e.g.
 * "losses[1]" gives "losses[1].temprature: unknown parameter of loss 'kd';
 * did you mean temperature?". `ignore` lists keys the job itself uses in
 * that object ("name", "weight") that are not the plugin's. On success
 * *out is a new kd_params holding every schema key (defaults filled) that
 * the caller frees with kd_params_free. */
kd_status kd_params_build(const kd_registry_entry *entry, const json_t *value,
                          const char *path, int n_ignore,
                          const char *const *ignore, kd_params **out);
void kd_params_free(kd_params *p);
/* Checks a manifest's "params" schema itself (used by the registry when it
 * reads a manifest); label names the manifest and provider. */
kd_status kd_params_check_schema(const json_t *schema, const char *label);
/* KD_OK when `path` can be read, else "WHERE: cannot read file 'PATH':
 * reason" (a "file" parameter, a job's weights). */
kd_status kd_check_readable(const char *where, const char *path);
/* The known word closest to `word` by edit distance, or NULL when none is
 * close enough to be a plausible typo. */
const char *kd_closest_word(const char *word, int n, const char *const *known);

#endif
