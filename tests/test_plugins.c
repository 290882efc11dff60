/* The plugin registry against real shared objects: the test plugins under
 * tests/plugins/ are built as .so files; each case assembles a plugin dir
 * under /tmp from their manifests (or manifests written here) and checks
 * the status and that the message names the culprit. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/registry.h"
#include "harness.h"

/* kd_loss_args with the field tests/plugins/good's loss reads when the
 * host's struct is large enough. */
typedef struct newer_loss_args {
    kd_loss_args base;
    double extra;
} newer_loss_args;

static bool has(const char *text, const char *needle)
{
    return text && strstr(text, needle) != NULL;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc((size_t)n + 1, 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: read failed\n", path);
        exit(1);
    }
    fclose(f);
    return text;
}

/* A fresh empty dir under /tmp; path receives its name. */
static void make_root(char *path, size_t size)
{
    snprintf(path, size, "/tmp/kdplugins.XXXXXX");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(1);
    }
}

static void make_folder(const char *root, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", root, name);
    if (mkdir(path, 0755) != 0) {
        perror(path);
        exit(1);
    }
}

/* root/name/ with the source tree's manifest and a link to the built .so. */
static void add_built_plugin(const char *root, const char *name)
{
    char folder[512], from[1024], to[1024];
    make_folder(root, name, folder, sizeof folder);
    char relative[256];
    snprintf(relative, sizeof relative, "tests/plugins/%s/manifest.json", name);
    char *manifest = read_text(kt_source_path(relative, from, sizeof from));
    snprintf(to, sizeof to, "%s/manifest.json", folder);
    write_text(to, manifest);
    free(manifest);
    snprintf(from, sizeof from, "%s/tests/plugins/%s/.libs/%s.so", KD_BUILDDIR, name, name);
    snprintf(to, sizeof to, "%s/%s.so", folder, name);
    if (symlink(from, to) != 0) {
        perror(to);
        exit(1);
    }
}

/* root/folder/manifest.json with the given text. */
static void add_manifest(const char *root, const char *folder_name, const char *text)
{
    char folder[512], path[1024];
    make_folder(root, folder_name, folder, sizeof folder);
    snprintf(path, sizeof path, "%s/manifest.json", folder);
    write_text(path, text);
}

/* A minimal valid manifest declaring one provider. */
static void add_simple_manifest(const char *root, const char *folder, const char *plugin,
                                const char *kind, const char *provider)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"abi\": 2, \"name\": \"%s\", \"version\": \"1\", \"library\": \"%s.so\",\n"
             " \"provides\": [{\"kind\": \"%s\", \"name\": \"%s\", \"summary\": \"s\",\n"
             "                \"params\": {}}]}\n",
             plugin, plugin, kind, provider);
    add_manifest(root, folder, text);
}

/* Scans a dir holding one plugin and expects the scan to fail. */
static void expect_scan_error(const char *name, const char *root, const char *const *needles,
                              int n_needles)
{
    kd_registry *r = NULL;
    kd_registry_new(&r);
    kd_status st = kd_registry_scan(r, root);
    const char *msg = kd_last_error();
    bool ok = st != KD_OK;
    for (int i = 0; i < n_needles && ok; i++)
        ok = has(msg, needles[i]);
    kt_check(ok, name, "status %s, message \"%s\"", kd_status_name(st), msg);
    kd_registry_close(r);
}

/* Scans root, loads provider (kind, provider) and expects the load to
 * fail with every needle in the message and nothing left loaded. */
static void expect_load_error(const char *name, const char *plugin, kd_plugin_kind kind,
                              const char *provider, const char *const *needles, int n_needles)
{
    char root[64];
    make_root(root, sizeof root);
    add_built_plugin(root, plugin);
    kd_registry *r = NULL;
    kd_registry_new(&r);
    kd_status scan = kd_registry_scan(r, root);
    const kd_registry_entry *e = kd_registry_find(r, kind, provider);
    if (scan != KD_OK || !e) {
        kt_fail(name, "scan: %s", kd_last_error());
    } else {
        const kd_vtable_header *vtable = (const kd_vtable_header *)1;
        kd_status st = kd_registry_load(r, e, &vtable, NULL);
        const char *msg = kd_last_error();
        bool ok = st != KD_OK && vtable == NULL;
        for (int i = 0; i < n_needles && ok; i++)
            ok = has(msg, needles[i]);
        void *left = dlopen(e->library_path, RTLD_NOW | RTLD_NOLOAD);
        if (left)
            dlclose(left);
        kt_check(ok && !left, name, "status %s, message \"%s\"%s", kd_status_name(st), msg,
                 left ? ", library still loaded" : "");
    }
    kd_registry_close(r);
    kt_remove_tree(root);
}

static void test_kind_names(void)
{
    bool ok = true;
    for (int k = 0; k < KD_KIND_COUNT; k++)
        ok = ok && kd_plugin_kind_from_name(kd_plugin_kind_name((kd_plugin_kind)k)) == k;
    ok = ok && kd_plugin_kind_name(KD_KIND_COUNT) == NULL &&
         kd_plugin_kind_name((kd_plugin_kind)-1) == NULL &&
         kd_plugin_kind_from_name("losss") == -1 && kd_plugin_kind_from_name(NULL) == -1 &&
         strcmp(kd_plugin_kind_name(KD_KIND_BATCH_TRANSFORM), "batch_transform") == 0;
    kt_check(ok, "kind names round trip", "mismatch");
}

static void test_good_plugin(void)
{
    char root[64];
    make_root(root, sizeof root);
    add_built_plugin(root, "good");
    kd_registry *r = NULL;
    kd_registry_new(&r);
    kd_status st = kd_registry_scan(r, root);
    if (!kt_check(st == KD_OK && kd_registry_count(r) == 2, "good: scan",
                  "status %s, count %d: %s", kd_status_name(st), kd_registry_count(r),
                  kd_last_error())) {
        kd_registry_close(r);
        kt_remove_tree(root);
        return;
    }
    const kd_registry_entry *first = kd_registry_at(r, 0);
    const kd_registry_entry *loss = kd_registry_find(r, KD_KIND_LOSS, "good_loss");
    kt_check(first->kind == KD_KIND_MODEL && strcmp(first->name, "good_model") == 0 &&
                 kd_registry_at(r, 1) == loss && kd_registry_at(r, 2) == NULL &&
                 kd_registry_find(r, KD_KIND_MODEL, "good_loss") == NULL,
             "good: sorted by kind then name", "first is %s '%s'",
             kd_plugin_kind_name(first->kind), first->name);
    kt_check(loss && strcmp(loss->plugin, "good") == 0 && strcmp(loss->version, "1.2.0") == 0 &&
                 strcmp(loss->summary, "a loss that does nothing") == 0 &&
                 has(loss->manifest_path, "/good/manifest.json") &&
                 loss->library_path[0] == '/' && has(loss->library_path, "/good/good.so") &&
                 json_is_object(json_object_get(loss->params, "temperature")),
             "good: entry fields", "entry %s", loss ? loss->library_path : "missing");

    const kd_vtable_header *loss_vtable = NULL, *model_vtable = NULL, *again = NULL;
    kd_status a = kd_registry_load(r, loss, &loss_vtable, NULL);
    kd_status b = kd_registry_load(r, first, &model_vtable, NULL);
    kd_status c = kd_registry_load(r, loss, &again, NULL);
    bool loaded = a == KD_OK && b == KD_OK && c == KD_OK;
    if (kt_check(loaded, "good: load", "%s", kd_last_error())) {
        kt_check(loss_vtable->kind == KD_KIND_LOSS && model_vtable->kind == KD_KIND_MODEL,
                 "good: vtable kinds", "loss vtable kind %u, model vtable kind %u",
                 (unsigned)loss_vtable->kind, (unsigned)model_vtable->kind);
        const kd_model_vtable *mv = (const kd_model_vtable *)model_vtable;
        void *counter = NULL;
        kd_create_args args = {.size = sizeof args};
        mv->create(&args, &counter);
        kt_check(again == loss_vtable && counter && *(int *)counter == 1,
                 "good: library loaded once", "entry ran %d times",
                 counter ? *(int *)counter : -1);

        /* The loss was built with only the required callbacks: the host's
         * copy is a whole loss vtable whose later callbacks are NULL. */
        const kd_loss_vtable *lv = (const kd_loss_vtable *)loss_vtable;
        kt_check(loss_vtable->size < sizeof(kd_loss_vtable) && lv->forward && !lv->bind &&
                     !lv->tensors,
                 "growth: an older, smaller vtable loads; its missing callbacks read NULL",
                 "plugin vtable %u bytes (host %zu), bind %p, tensors %p",
                 (unsigned)loss_vtable->size, sizeof(kd_loss_vtable), (void *)lv->bind,
                 (void *)lv->tensors);
        /* And the plugin reads a newer field only when the host's struct
         * has it. */
        kd_loss_result res = {.size = sizeof res};
        kd_loss_args now = {.size = sizeof now};
        lv->forward(NULL, &now, &res);
        int without = res.n_terms;
        newer_loss_args later = {.base = {.size = sizeof later}, .extra = 7};
        lv->forward(NULL, &later.base, &res);
        kt_check(without == 1 && res.n_terms == 7,
                 "growth: a plugin reads a field past the host's struct only when it is there",
                 "with this host's args it saw %d, with a newer host's %d", without,
                 res.n_terms);
        /* Makes the unload checks below and in expect_load_error meaningful. */
        void *held = dlopen(loss->library_path, RTLD_NOW | RTLD_NOLOAD);
        kt_check(held != NULL, "good: RTLD_NOLOAD sees the loaded library", "%s",
                 loss->library_path);
        if (held)
            dlclose(held);
    }

    /* Rescanning the dir, or the plugin's own folder, adds nothing. */
    char folder[128];
    snprintf(folder, sizeof folder, "%s/good", root);
    kd_status again_dir = kd_registry_scan(r, root);
    kd_status sub_dir = kd_registry_scan(r, folder);
    kt_check(again_dir == KD_OK && sub_dir == KD_OK && kd_registry_count(r) == 2,
             "good: rescan adds nothing", "%s (count %d)", kd_last_error(),
             kd_registry_count(r));

    kd_registry *other = NULL;
    kd_registry_new(&other);
    const kd_vtable_header *foreign = NULL;
    kt_check(kd_registry_load(other, loss, &foreign, NULL) == KD_ERR_INVALID && foreign == NULL,
             "good: entry of another registry refused", "%s", kd_last_error());
    kd_registry_close(other);

    char library[1024];
    snprintf(library, sizeof library, "%s", loss->library_path);
    kd_registry_close(r);
    void *left = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
    if (left)
        dlclose(left);
    kt_check(!left, "good: close unloads the library", "%s still loaded", library);
    kt_remove_tree(root);
}

static void test_library_errors(void)
{
    const char *null_cb[] = {"null_callback.so", "model 'null_callback_a' has no forward "
                                                  "callback (required)"};
    expect_load_error("load: a NULL required callback is refused", "null_callback",
                      KD_KIND_MODEL, "null_callback_a", null_cb, 2);
    const char *abi[] = {"abi_mismatch.so", "plugin ABI 999", "speaks 2: rebuild the plugin"};
    expect_load_error("load: library built for another ABI", "abi_mismatch", KD_KIND_LOSS,
                      "abi_mismatch_a", abi, 3);
    const char *entry[] = {"no_entry.so", "does not export kd_plugin_entry"};
    expect_load_error("load: missing entry symbol", "no_entry", KD_KIND_LOSS, "no_entry_a",
                      entry, 2);
    const char *mismatch[] = {"providers_mismatch.so", "'providers_mismatch_c'",
                              "does not declare"};
    expect_load_error("load: providers differ from the manifest", "providers_mismatch",
                      KD_KIND_LOSS, "providers_mismatch_a", mismatch, 3);
    char fingerprint_text[128];
    snprintf(fingerprint_text, sizeof fingerprint_text,
             "built against a different kdengine (kd_tensor is %zu bytes there, %zu here): "
             "rebuild the plugin", sizeof(kd_tensor) - 16, sizeof(kd_tensor));
    const char *fingerprint[] = {"fingerprint.so", fingerprint_text};
    expect_load_error("load: fingerprint mismatch", "fingerprint", KD_KIND_LOSS,
                      "fingerprint_a", fingerprint, 2);
    const char *kind[] = {"vtable_kind.so", "'vtable_kind_a' is a model vtable"};
    expect_load_error("load: vtable of the wrong kind", "vtable_kind", KD_KIND_LOSS,
                      "vtable_kind_a", kind, 2);
    const char *null_providers[] = {"null_providers.so", "providers is NULL"};
    expect_load_error("load: NULL providers with a count", "null_providers", KD_KIND_LOSS,
                      "null_providers_a", null_providers, 2);
    /* libkdcore exports the SDK only: the tape stays out of reach. */
    const char *internal[] = {"internal_symbol.so", "undefined symbol: kd_record"};
    expect_load_error("load: library calling a core internal", "internal_symbol",
                      KD_KIND_LOSS, "internal_symbol_a", internal, 2);
}

static void test_unloadable_files(void)
{
    char root[64], path[256];
    make_root(root, sizeof root);
    add_simple_manifest(root, "absent", "absent", "loss", "absent_loss");
    add_simple_manifest(root, "text", "text", "loss", "text_loss");
    snprintf(path, sizeof path, "%s/text/text.so", root);
    write_text(path, "not a shared object\n");
    kd_registry *r = NULL;
    kd_registry_new(&r);
    kd_status st = kd_registry_scan(r, root);
    if (kt_check(st == KD_OK, "load: unloadable files scan", "%s", kd_last_error())) {
        const kd_vtable_header *vtable = NULL;
        st = kd_registry_load(r, kd_registry_find(r, KD_KIND_LOSS, "absent_loss"), &vtable, NULL);
        kt_check(st == KD_ERR_IO && has(kd_last_error(), "/absent/absent.so") &&
                     has(kd_last_error(), "cannot load"),
                 "load: library that does not exist", "%s", kd_last_error());
        st = kd_registry_load(r, kd_registry_find(r, KD_KIND_LOSS, "text_loss"), &vtable, NULL);
        kt_check(st == KD_ERR_IO && has(kd_last_error(), "/text/text.so") &&
                     has(kd_last_error(), "cannot load"),
                 "load: text file named .so", "%s", kd_last_error());
    }
    kd_registry_close(r);
    kt_remove_tree(root);
}

static void test_manifest_errors(void)
{
    char root[64];

    make_root(root, sizeof root);
    add_manifest(root, "old",
                 "{\"abi\": 1, \"name\": \"old\", \"version\": \"1\", \"library\": \"old.so\",\n"
                 " \"provides\": [], \"old_key\": true}\n");
    const char *abi[] = {"plugin 'old' (", "/old/manifest.json) was built for plugin ABI 1; "
                                           "this kdengine speaks 2: rebuild the plugin"};
    expect_scan_error("manifest: an ABI 1 plugin is refused with a rebuild hint", root, abi, 2);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "comma",
                 "{\"abi\": 2, \"name\": \"comma\", \"version\": \"1\",\n"
                 " \"library\": \"comma.so\",\n"
                 " \"provides\": [{\"kind\": \"loss\", \"name\": \"c\", \"summary\": \"s\",\n"
                 "                 \"params\": {},}]}\n");
    const char *comma[] = {"/comma/manifest.json:4:"};
    expect_scan_error("manifest: trailing comma gives the line", root, comma, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "dupkey",
                 "{\"abi\": 2, \"name\": \"a\", \"name\": \"b\", \"version\": \"1\",\n"
                 " \"library\": \"a.so\", \"provides\": []}\n");
    const char *dupkey[] = {"/dupkey/manifest.json:1:", "name"};
    expect_scan_error("manifest: duplicate key", root, dupkey, 2);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "extra",
                 "{\"abi\": 2, \"name\": \"extra\", \"version\": \"1\", \"library\": \"e.so\",\n"
                 " \"provides\": [{\"kind\": \"loss\", \"name\": \"e\", \"summary\": \"s\",\n"
                 "                \"params\": {}}], \"homepage\": \"x\"}\n");
    const char *extra[] = {"/extra/manifest.json: homepage: unknown key"};
    expect_scan_error("manifest: unknown key", root, extra, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "typo",
                 "{\"abi\": 2, \"name\": \"typo\", \"version\": \"1\", \"library\": \"t.so\",\n"
                 " \"provides\": [{\"kind\": \"loss\", \"name\": \"t\", \"summary\": \"s\",\n"
                 "                \"params\": {}, \"sumary\": \"x\"}]}\n");
    const char *typo[] = {"/typo/manifest.json: provides[0].sumary: unknown key"};
    expect_scan_error("manifest: unknown provider key", root, typo, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_simple_manifest(root, "kind", "kind", "losss", "k");
    const char *kind[] = {"/kind/manifest.json: provides[0].kind: unknown kind 'losss' "
                          "(did you mean loss?)"};
    expect_scan_error("manifest: unknown kind with a suggestion", root, kind, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_simple_manifest(root, "slash", "slash", "loss", "s");
    add_manifest(root, "slash2",
                 "{\"abi\": 2, \"name\": \"slash2\", \"version\": \"1\",\n"
                 " \"library\": \"../x.so\", \"provides\": [{\"kind\": \"loss\",\n"
                 " \"name\": \"s2\", \"summary\": \"s\", \"params\": {}}]}\n");
    const char *slash[] = {"/slash2/manifest.json: library: '../x.so'"};
    expect_scan_error("manifest: library outside its folder", root, slash, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "empty",
                 "{\"abi\": 2, \"name\": \"empty\", \"version\": \"1\", \"library\": \"e.so\",\n"
                 " \"provides\": []}\n");
    const char *empty[] = {"/empty/manifest.json: provides: expected a non-empty array"};
    expect_scan_error("manifest: no providers", root, empty, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "params",
                 "{\"abi\": 2, \"name\": \"params\", \"version\": \"1\", \"library\": \"p.so\",\n"
                 " \"provides\": [{\"kind\": \"loss\", \"name\": \"p\", \"summary\": \"s\",\n"
                 "                \"params\": [1]}]}\n");
    const char *params[] = {"/params/manifest.json: provides[0].params: expected an object"};
    expect_scan_error("manifest: params not an object", root, params, 1);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_manifest(root, "schema",
                 "{\"abi\": 2, \"name\": \"schema\", \"version\": \"1\", \"library\": \"s.so\",\n"
                 " \"provides\": [{\"kind\": \"loss\", \"name\": \"s\", \"summary\": \"s\",\n"
                 "                \"params\": {\"t\": {\"type\": \"numbr\"}}}]}\n");
    const char *schema[] = {"/schema/manifest.json: provides[0].params.t:"};
    expect_scan_error("manifest: bad parameter schema", root, schema, 1);
    kt_remove_tree(root);
}

static void test_duplicates(void)
{
    char root[64];
    make_root(root, sizeof root);
    add_simple_manifest(root, "a", "first", "loss", "dup");
    add_simple_manifest(root, "b", "second", "loss", "dup");
    const char *provider[] = {"loss 'dup' is provided by both", "/a/manifest.json",
                              "/b/manifest.json"};
    expect_scan_error("duplicate (kind, name) names both manifests", root, provider, 3);
    kt_remove_tree(root);

    make_root(root, sizeof root);
    add_simple_manifest(root, "a", "same", "loss", "one");
    add_simple_manifest(root, "b", "same", "model", "two");
    const char *plugin[] = {"plugin 'same' is declared by both", "/a/manifest.json",
                            "/b/manifest.json"};
    expect_scan_error("duplicate plugin name names both manifests", root, plugin, 3);
    kt_remove_tree(root);

    /* The same provider name under two kinds is fine. */
    make_root(root, sizeof root);
    add_simple_manifest(root, "a", "first", "loss", "shared");
    add_simple_manifest(root, "b", "second", "model", "shared");
    kd_registry *r = NULL;
    kd_registry_new(&r);
    kd_status st = kd_registry_scan(r, root);
    kt_check(st == KD_OK && kd_registry_count(r) == 2, "same name under two kinds",
             "%s", kd_last_error());
    kd_registry_close(r);
    kt_remove_tree(root);
}

static void test_plugin_path(void)
{
    char one[64], two[64], missing[128], path[512];
    make_root(one, sizeof one);
    make_root(two, sizeof two);
    add_simple_manifest(one, "p1", "p1", "loss", "first");
    add_simple_manifest(two, "p2", "p2", "model", "second");
    add_simple_manifest(two, "p3", "p3", "optimizer", "third");
    snprintf(missing, sizeof missing, "%s/not_there", one);

    snprintf(path, sizeof path, "%s::%s:%s/", one, two, one);
    setenv("KDENGINE_PLUGIN_PATH", path, 1);
    kd_registry *r = NULL;
    kd_registry_new(&r);
    kd_status st = kd_registry_scan_default(r, 0, NULL);
    kt_check(st == KD_OK && kd_registry_count(r) == 3 &&
                 kd_registry_find(r, KD_KIND_OPTIMIZER, "third") &&
                 kd_registry_at(r, 0)->kind == KD_KIND_MODEL,
             "plugin path: two dirs, an empty entry, a repeat", "status %s, count %d: %s",
             kd_status_name(st), kd_registry_count(r), kd_last_error());
    kd_registry_close(r);

    snprintf(path, sizeof path, "%s:%s", one, missing);
    setenv("KDENGINE_PLUGIN_PATH", path, 1);
    kd_registry_new(&r);
    st = kd_registry_scan_default(r, 0, NULL);
    kt_check(st != KD_OK && has(kd_last_error(), "KDENGINE_PLUGIN_PATH") &&
                 has(kd_last_error(), missing) && has(kd_last_error(), "does not exist"),
             "plugin path: missing dir", "status %s: %s", kd_status_name(st), kd_last_error());
    kd_registry_close(r);

    unsetenv("KDENGINE_PLUGIN_PATH");
    const char *extra[] = {two, missing};
    kd_registry_new(&r);
    st = kd_registry_scan_default(r, 2, extra);
    kt_check(st != KD_OK && has(kd_last_error(), missing) && !has(kd_last_error(), "KDENGINE"),
             "plugin path: missing extra dir", "status %s: %s", kd_status_name(st),
             kd_last_error());
    kd_registry_close(r);
    kt_remove_tree(one);
    kt_remove_tree(two);
}

static void test_cli(void)
{
    char root[64], cmd[1024];
    make_root(root, sizeof root);
    add_built_plugin(root, "good");
    char *out = NULL;
    snprintf(cmd, sizeof cmd,
             "env -u KDENGINE_PLUGIN_PATH %s/kdengine plugins --json --plugin-dir %s",
             KD_BUILDDIR, root);
    int rc = kt_run_command(cmd, &out);
    json_error_t jerr;
    json_t *doc = out ? json_loads(out, 0, &jerr) : NULL;
    bool listed = false;
    size_t i;
    json_t *item;
    json_array_foreach(doc, i, item) {
        listed = listed ||
                 (strcmp(json_string_value(json_object_get(item, "name")), "good_loss") == 0 &&
                  strcmp(json_string_value(json_object_get(item, "kind")), "loss") == 0 &&
                  strcmp(json_string_value(json_object_get(item, "plugin")), "good") == 0 &&
                  strcmp(json_string_value(json_object_get(item, "version")), "1.2.0") == 0 &&
                  has(json_string_value(json_object_get(item, "manifest")), "manifest.json") &&
                  has(json_string_value(json_object_get(item, "library")), "good.so") &&
                  json_object_get(json_object_get(item, "params"), "temperature"));
    }
    kt_check(rc == 0 && json_is_array(doc) && json_array_size(doc) == 2 && listed,
             "cli: plugins --json", "exit %d, output: %s", rc, out ? out : "(none)");
    json_decref(doc);
    free(out);

    snprintf(cmd, sizeof cmd, "env -u KDENGINE_PLUGIN_PATH %s/kdengine plugins --plugin-dir %s",
             KD_BUILDDIR, root);
    rc = kt_run_command(cmd, &out);
    kt_check(rc == 0 && has(out, "good@1.2.0") && has(out, "good_model") &&
                 has(out, "a loss that does nothing"),
             "cli: plugins table", "exit %d, output: %s", rc, out ? out : "(none)");
    free(out);

    snprintf(cmd, sizeof cmd, "%s/kdengine plugins --plugin-dir %s/nope 2>&1", KD_BUILDDIR, root);
    rc = kt_run_command(cmd, &out);
    kt_check(rc == 1 && has(out, "/nope"), "cli: missing plugin dir exits 1", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);

    snprintf(cmd, sizeof cmd, "%s/kdengine plugins --bogus 2>&1", KD_BUILDDIR);
    rc = kt_run_command(cmd, &out);
    kt_check(rc == 2 && has(out, "--bogus"), "cli: bad option exits 2", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    kt_remove_tree(root);
}

int main(void)
{
    /* Only what each case puts on the path should be found. */
    unsetenv("KDENGINE_PLUGIN_PATH");
    test_kind_names();
    test_good_plugin();
    test_library_errors();
    test_unloadable_files();
    test_manifest_errors();
    test_duplicates();
    test_plugin_path();
    test_cli();
    return kt_finish();
}
