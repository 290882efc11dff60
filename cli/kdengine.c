/* kdengine: the command-line entry point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "../core/registry.h"
#include "forward_command.h"
#include "job_commands.h"
#include "label_command.h"
#include "select_command.h"
#include "report_command.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kdengine <command> [options]\n"
            "\n"
            "commands:\n"
            "  run JOB       train a student (distil it when the job has a teacher)\n"
            "  validate JOB  check a job file against the plugins' schemas\n"
            "  plan JOB      models, FLOPs, taps and memory of a job\n"
            "  eval JOB      top-1/top-5 of the student (or teacher) on data.val\n"
            "  export JOB    the student's weights alone, as safetensors\n"
            "  forward MODEL|JOB  run a model on an input; write its taps\n"
            "  report RUN_DIR...  one HTML page with the runs' curves, jobs, environments\n"
            "  label JOB     store the teacher's top-k soft labels of every view (fkd)\n"
            "  select JOB    keep the teacher's top-k images per class of a pool (SSLD)\n"
            "  plugins       list the providers the installed plugins declare\n"
            "  version       print the version and what this build contains\n"
            "\n"
            "`kdengine <command> --help` describes a command's options.\n"
            "exit codes: 0 success; 1 the job is invalid or the command failed;\n"
            "2 bad command line; 3 run stopped by SIGINT/SIGTERM after writing a\n"
            "checkpoint (continue with --resume)\n");
}

static void plugins_usage(FILE *out)
{
    fprintf(out,
            "usage: kdengine plugins [--json] [--plugin-dir DIR ...]\n"
            "\n"
            "Lists every provider the plugin manifests declare, read from the\n"
            "built-in plugin dir (" KD_PLUGIN_DIR "), then each dir of\n"
            "$KDENGINE_PLUGIN_PATH (colon-separated), then each --plugin-dir.\n"
            "No plugin code is loaded.\n"
            "\n"
            "  --json             print a JSON array of {kind, name, plugin, version,\n"
            "                     summary, manifest, library, params}\n"
            "  --plugin-dir DIR   also scan DIR (repeatable)\n");
}

static int print_plugins_json(const kd_registry *r)
{
    json_t *list = json_array();
    for (int i = 0; list && i < kd_registry_count(r); i++) {
        const kd_registry_entry *e = kd_registry_at(r, i);
        json_t *item = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}",
                                 "kind", kd_plugin_kind_name(e->kind), "name", e->name,
                                 "plugin", e->plugin, "version", e->version,
                                 "summary", e->summary, "manifest", e->manifest_path,
                                 "library", e->library_path,
                                 "params", json_deep_copy(e->params));
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    if (!list || json_dumpf(list, stdout, JSON_INDENT(2)) != 0) {
        json_decref(list);
        fprintf(stderr, "kdengine plugins: out of memory\n");
        return 1;
    }
    putchar('\n');
    json_decref(list);
    return 0;
}

static void print_plugins_table(const kd_registry *r)
{
    int n = kd_registry_count(r);
    if (n == 0) {
        printf("no plugins found\n");
        return;
    }
    int kind_w = 4, name_w = 4, plugin_w = 6;
    for (int i = 0; i < n; i++) {
        const kd_registry_entry *e = kd_registry_at(r, i);
        int plugin_len = (int)(strlen(e->plugin) + 1 + strlen(e->version));
        kind_w = kind_w > (int)strlen(kd_plugin_kind_name(e->kind))
                     ? kind_w : (int)strlen(kd_plugin_kind_name(e->kind));
        name_w = name_w > (int)strlen(e->name) ? name_w : (int)strlen(e->name);
        plugin_w = plugin_w > plugin_len ? plugin_w : plugin_len;
    }
    printf("%-*s  %-*s  %-*s  %s\n", kind_w, "KIND", name_w, "NAME", plugin_w, "PLUGIN",
           "SUMMARY");
    for (int i = 0; i < n; i++) {
        const kd_registry_entry *e = kd_registry_at(r, i);
        int plugin_len = (int)(strlen(e->plugin) + 1 + strlen(e->version));
        printf("%-*s  %-*s  %s@%s%*s  %s\n", kind_w, kd_plugin_kind_name(e->kind), name_w,
               e->name, e->plugin, e->version, plugin_w - plugin_len, "", e->summary);
    }
}

static int command_plugins(int argc, char **argv)
{
    bool json = false;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    int n_dirs = 0;
    if (!dirs) {
        fprintf(stderr, "kdengine plugins: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            plugins_usage(stdout);
            free(dirs);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--plugin-dir") == 0 && i + 1 < argc) {
            dirs[n_dirs++] = argv[++i];
        } else {
            if (strcmp(argv[i], "--plugin-dir") == 0)
                fprintf(stderr, "kdengine plugins: --plugin-dir needs a directory\n");
            else
                fprintf(stderr, "kdengine plugins: unknown option '%s'\n", argv[i]);
            plugins_usage(stderr);
            free(dirs);
            return 2;
        }
    }
    kd_registry *r = NULL;
    kd_status st = kd_registry_new(&r);
    if (st == KD_OK)
        st = kd_registry_scan_default(r, n_dirs, dirs);
    free(dirs);
    if (st != KD_OK) {
        fprintf(stderr, "kdengine plugins: %s\n", kd_last_error());
        kd_registry_close(r);
        return 1;
    }
    int rc = 0;
    if (json)
        rc = print_plugins_json(r);
    else
        print_plugins_table(r);
    kd_registry_close(r);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("%s\n", kd_build_info());
        return 0;
    }
    if (strcmp(argv[1], "plugins") == 0)
        return command_plugins(argc - 2, argv + 2);
    if (strcmp(argv[1], "report") == 0)
        return kd_command_report(argc - 2, argv + 2);
    if (strcmp(argv[1], "forward") == 0)
        return kd_command_forward(argc - 2, argv + 2);
    if (strcmp(argv[1], "label") == 0)
        return kd_command_label(argc - 2, argv + 2);
    if (strcmp(argv[1], "select") == 0)
        return kd_command_select(argc - 2, argv + 2);
    int rc = kd_command_job(argv[1], argc - 2, argv + 2);
    if (rc >= 0)
        return rc;
    fprintf(stderr, "kdengine: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
