/* kdengine report through the real CLI: a tiny real run, then the page for
 * it and for two runs side by side, read back by a browser's HTML parser
 * (tests/report/check_page.py): well formed, nothing fetched, one polyline
 * per series and run with as many points as the run logged. A corpus of
 * malformed metrics lines is reported as file:line and still gives a page;
 * a missing or empty run folder is an error. The page's parts (escaping, a
 * chart of one point) are checked directly too.
 *
 * Data: test_job's synthetic IDX set (8x8 images, the class decides which
 * quadrant is bright), so a run takes a second. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"
#include "../cli/report_json.h"
#include "../cli/report_svg.h"
#include "../cli/report_text.h"

static char dir[64];

static bool has(const char *text, const char *part) { return text && strstr(text, part); }

/* Three epochs of six steps, every step logged, an eval per epoch. */
static const char *const job_template =
    "{\n"
    "  \"seed\": 3, \"threads\": 1, \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
    "                            \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
    "              \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "              \"batch_size\": 16, \"workers\": 0},\n"
    "    \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/val-images.idx\",\n"
    "                          \"labels\": \"%s/val-labels.idx\", \"num_classes\": 4},\n"
    "            \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "            \"batch_size\": 32, \"workers\": 0}\n"
    "  },\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": %s, \"momentum\": 0.9},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": 3},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 2},\n"
    "  \"log\": {\"every_steps\": 1}\n"
    "}\n";

static void write_job(const char *output, const char *teacher, const char *losses,
                      const char *lr)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dir, output, kt_plugin_dir(), dir, dir, dir, dir,
             teacher, losses, lr);
    snprintf(path, sizeof path, "%s/%s.json", dir, output);
    kt_write_file(path, text, strlen(text));
}

/* ------------------------------------------------------------ the page */

typedef struct curve {
    char series[256];
    int run, points, inside;
    char stroke[16];
    char section[64]; /* the page's heading above the chart */
} curve;

typedef struct page {
    char *raw;    /* check_page.py's output */
    curve *curves;
    int n_curves;
    bool parsed; /* the parser ran and found no error */
} page;

static const char *python(void)
{
    return KD_TORCH_PYTHON[0] ? KD_TORCH_PYTHON : "python3";
}

static page read_page(const char *html)
{
    page p = {0};
    char script[512], cmd[2048];
    kt_source_path("tests/report/check_page.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s/%s 2>&1", python(), script, dir, html);
    int rc = kt_run_command(cmd, &p.raw);
    p.parsed = rc == 0 && p.raw && !has(p.raw, "error ");
    for (const char *line = p.raw; line && *line;) {
        curve c;
        if (sscanf(line, "curve %255s %d %d %d %15s %63[^\n]", c.series, &c.run, &c.points,
                   &c.inside, c.stroke, c.section) == 6) {
            curve *grown = realloc(p.curves, (size_t)(p.n_curves + 1) * sizeof *grown);
            if (!grown)
                break;
            p.curves = grown;
            p.curves[p.n_curves++] = c;
        }
        const char *next = strchr(line, '\n');
        line = next ? next + 1 : NULL;
    }
    return p;
}

static void free_page(page *p)
{
    free(p->raw);
    free(p->curves);
}

static const curve *find_curve(const page *p, const char *series, int run)
{
    for (int i = 0; i < p->n_curves; i++)
        if (!strcmp(p->curves[i].series, series) && p->curves[i].run == run)
            return &p->curves[i];
    return NULL;
}

/* How many train and eval lines a run's metrics.jsonl holds. */
static void count_lines(const char *run, int *train, int *eval)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    *train = *eval = 0;
    FILE *f = fopen(path, "r");
    char line[65536];
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        *train += type && !strcmp(type, "train");
        *eval += type && !strcmp(type, "eval");
        json_decref(j);
    }
    if (f)
        fclose(f);
}

/* Every polyline of `run` has the points its kind of line has, inside its
 * plot; the series people look at are there. */
static void check_curves(const char *name, const page *p, int run, const char *folder)
{
    int train, eval;
    count_lines(folder, &train, &eval);
    int wrong = 0, seen = 0;
    char why[512] = "";
    for (int i = 0; i < p->n_curves; i++) {
        const curve *c = &p->curves[i];
        if (c->run != run)
            continue;
        seen++;
        int want = !strncmp(c->series, "train.", 6) ? train : eval;
        if (c->points != want || !c->inside) {
            if (!wrong++)
                snprintf(why, sizeof why, "%s: %d points (want %d), inside %d", c->series,
                         c->points, want, c->inside);
        }
    }
    static const char *const expected[] = {"train.loss", "train.lr", "train.img_per_s",
                                           "train.terms.losses[0]", "eval.top1", "eval.top5",
                                           "eval.loss"};
    for (size_t k = 0; k < sizeof expected / sizeof *expected; k++)
        if (!find_curve(p, expected[k], run) && !wrong++)
            snprintf(why, sizeof why, "no curve %s", expected[k]);
    kt_check(train > 0 && eval > 0 && seen >= 7 && wrong == 0, name,
             "%d train and %d eval lines, %d curves, %d wrong (%s): %s", train, eval, seen,
             wrong, why, p->raw ? p->raw : "(no output)");
}

static void test_one_run(void)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "report a");
    char path[512];
    snprintf(path, sizeof path, "%s/a/report.html", dir);
    struct stat sb;
    kt_check(rc == 0 && stat(path, &sb) == 0 && !has(out, "warning"),
             "report: one run writes RUN_DIR/report.html", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    page p = read_page("a/report.html");
    kt_check(p.parsed, "report: the page parses, tags closed, nothing fetched or run", "%s",
             p.raw ? p.raw : "(no output)");
    check_curves("report: each curve has a point per metrics line", &p, 0, "a");
    const curve *ips = find_curve(&p, "train.img_per_s", 0), *top1 = find_curve(&p, "eval.top1", 0);
    kt_check(ips && !strcmp(ips->section, "Throughput") && top1 &&
                 !strcmp(top1->section, "Accuracy"),
             "report: images per second and top-1 in their sections", "%s",
             p.raw ? p.raw : "(none)");
    kt_check(has(p.raw, "\"model\": \"resnet8\"") && has(p.raw, "\"every_steps\": 1") &&
                 has(p.raw, "\"mean\": [0.4]"),
             "report: the job is on the page", "%s", p.raw ? p.raw : "(none)");
    kt_check(has(p.raw, "text 18 steps in ") && has(p.raw, "text 2 kept, the last at step 18"),
             "report: the environment table is on the page", "%s", p.raw ? p.raw : "(none)");
    free_page(&p);

    /* `kdengine report .` inside the run: named by its folder, not "." */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s/a && %s/kdengine report . --out ../dot.html 2>&1", dir,
             KD_BUILDDIR);
    rc = kt_run_command(cmd, &out);
    free(out);
    p = read_page("dot.html");
    kt_check(rc == 0 && has(p.raw, "text a\n") && !has(p.raw, "text .\n"),
             "report: the run \".\" is named by its folder", "exit %d: %s", rc,
             p.raw ? p.raw : "(none)");
    free_page(&p);
}

static void test_side_by_side(void)
{
    char *out = NULL, cmd[1024];
    /* stdout alone: the path, for `xdg-open "$(kdengine report ... --open)"` */
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine report a b/ --out two.html --open "
             "2>/dev/null", dir, KD_BUILDDIR);
    int rc = kt_run_command(cmd, &out);
    char want[512];
    snprintf(want, sizeof want, "%s/two.html\n", dir);
    kt_check(rc == 0 && out && !strcmp(out, want), "report --open: prints the page's path",
             "exit %d: '%s', want '%s'", rc, out ? out : "(none)", want);
    free(out);
    page p = read_page("two.html");
    kt_check(p.parsed, "report: two runs, the page parses", "%s", p.raw ? p.raw : "(none)");
    check_curves("report: two runs, run a's curves", &p, 0, "a");
    check_curves("report: two runs, run b's curves", &p, 1, "b");
    const curve *ca = find_curve(&p, "train.loss", 0), *cb = find_curve(&p, "train.loss", 1);
    kt_check(ca && cb && strcmp(ca->stroke, cb->stroke) != 0,
             "report: one colour per run", "%s vs %s", ca ? ca->stroke : "-",
             cb ? cb->stroke : "-");
    /* the KD run logs terms the supervised one lacks: charted for b only */
    const curve *kd = find_curve(&p, "train.terms.losses[1]", 1);
    kt_check(kd && !find_curve(&p, "train.terms.losses[1]", 0) &&
                 has(p.raw, "text a (not logged)"),
             "report: a series one run lacks is drawn for the other, legend says so", "%s",
             p.raw ? p.raw : "(none)");
    kt_check(has(p.raw, "text a\n") && has(p.raw, "text b\n") &&
                 has(p.raw, "text losses[0] ce x0.5, losses[1] kd\n"),
             "report: the legend names each run, the table its losses", "%s",
             p.raw ? p.raw : "(none)");
    free_page(&p);
}

/* A run folder whose metrics.jsonl mixes good lines with every kind of bad
 * one; `bad_line` numbers are 1-based. */
static void test_malformed(void)
{
    char path[512], cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/bad && cp %s/a/job.json %s/bad/", dir, dir, dir);
    char *out = NULL;
    kt_run_command(cmd, &out);
    free(out);
    static const char corpus[] =
        "{\"type\":\"train\",\"epoch\":0,\"step\":1,\"lr\":0.1,\"loss\":1.5}\n"
        "{\"type\":\"train\",\"epoch\":0,\"step\":2,\"lr\":0.1,\"loss\":1.25}\n"
        "garbage from a crash\n"                                          /* 3 */
        "{\"type\":\"train\",\"step\":3,\"lr\":0.1,\"loss\":NaN}\n"       /* 4 */
        "{\"type\":\"train\",\"step\":3,\"lr\":0.1,\"loss\":Infinity}\n"  /* 5 */
        "{\"type\":\"train\",\"step\":3,\"lr\":0.1,\"loss\":1e999}\n"     /* 6 */
        "{\"type\":\"train\",\"lr\":0.1,\"loss\":1.0}\n"                  /* 7 */
        "{\"type\":\"train\",\"step\":3,\"lr\":0.1,\"loss\":\"high\"}\n"  /* 8 */
        "{\"type\":\"train\",\"step\":3,\"terms\":{\"losses[0]\":null}}\n" /* 9 */
        "[1, 2, 3]\n"                                                     /* 10 */
        "{\"step\":3,\"loss\":1.0}\n"                                     /* 11 */
        "\n"                                                              /* 12 */
        "{\"type\":\"train\",\"step\":-4,\"loss\":1.0}\n"                 /* 13 */
        "{\"type\":\"mystery\",\"step\":4}\n"                             /* 14 */
        "\xff\xfe\x00\x01 binary\n"                                       /* 15 */
        "{\"type\":\"train\",\"epoch\":0,\"step\":3,\"lr\":0.1,\"loss\":1.0}\n"
        "{\"type\":\"eval\",\"epoch\":1,\"step\":3,\"top1\":50.0,\"top5\":100.0,\"loss\":1.1}\n"
        "{\"type\":\"train\",\"epoch\":1,\"step\":4,\"lr\":0.0"; /* 18, truncated */
    snprintf(path, sizeof path, "%s/bad/metrics.jsonl", dir);
    kt_write_file(path, corpus, sizeof corpus - 1);
    int rc = kt_kdengine(dir, &out, "report bad");
    static const int bad_lines[] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18};
    int missing = 0;
    char why[128] = "";
    for (size_t i = 0; i < sizeof bad_lines / sizeof *bad_lines; i++) {
        char want[64];
        snprintf(want, sizeof want, "bad/metrics.jsonl:%d: ", bad_lines[i]);
        if (!has(out, want) && !missing++)
            snprintf(why, sizeof why, "no \"%s\"", want);
    }
    for (int good = 1; good <= 2; good++) {
        char want[64];
        snprintf(want, sizeof want, "bad/metrics.jsonl:%d: ", good);
        if (has(out, want) && !missing++)
            snprintf(why, sizeof why, "good line %d reported", good);
    }
    kt_check(rc == 0 && missing == 0 && has(out, "truncated last line"),
             "report: each malformed metrics line is named file:line and skipped",
             "exit %d, %s: %s", rc, why, out ? out : "(none)");
    free(out);
    page p = read_page("bad/report.html");
    const curve *loss = find_curve(&p, "train.loss", 0), *top1 = find_curve(&p, "eval.top1", 0);
    kt_check(p.parsed && loss && loss->points == 3 && top1 && top1->points == 1 &&
                 has(p.raw, "text Skipped metrics lines (14)") &&
                 has(p.raw, "bad/metrics.jsonl:15:"),
             "report: malformed lines still give a page of the good ones, warnings listed",
             "%s", p.raw ? p.raw : "(none)");
    free_page(&p);
}

/* Fields the runner does not write yet (a teacher's top-1, a train top-1)
 * are charted from their names, in the section they belong to. */
static void test_new_fields(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/later && cp %s/a/job.json %s/later/", dir, dir, dir);
    kt_run_command(cmd, NULL);
    static const char lines[] =
        "{\"type\":\"train\",\"epoch\":0,\"step\":1,\"lr\":0.1,\"top1\":40.5,"
        "\"loss\":1.5}\n"
        "{\"type\":\"eval\",\"epoch\":1,\"step\":1,\"top1\":50.0,\"teacher_top1\":90.0}\n"
        "{\"type\":\"train\",\"epoch\":1,\"step\":2,\"lr\":0.05,\"top1\":60.0,"
        "\"loss\":1.0}\n"
        "{\"type\":\"eval\",\"epoch\":2,\"step\":2,\"top1\":70.0,\"teacher_top1\":90.0}\n";
    char path[512];
    snprintf(path, sizeof path, "%s/later/metrics.jsonl", dir);
    kt_write_file(path, lines, sizeof lines - 1);
    static const char classes[] = "{\"classes\": [\"cat\", \"dog\", \"emu\"], "
                                  "\"class_to_idx\": {\"cat\": 0, \"dog\": 1, \"emu\": 2}}";
    snprintf(path, sizeof path, "%s/later/classes.json", dir);
    kt_write_file(path, classes, sizeof classes - 1);
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "report later");
    free(out);
    page p = read_page("later/report.html");
    const curve *train = find_curve(&p, "train.top1", 0);
    const curve *teacher = find_curve(&p, "eval.teacher_top1", 0);
    const curve *lr = find_curve(&p, "train.lr", 0), *loss = find_curve(&p, "train.loss", 0);
    kt_check(rc == 0 && p.parsed && train && train->points == 2 &&
                 !strcmp(train->section, "Accuracy") && teacher && teacher->points == 2 &&
                 !strcmp(teacher->section, "Accuracy") && lr &&
                 !strcmp(lr->section, "Learning rate") && loss &&
                 !strcmp(loss->section, "Losses") &&
                 has(p.raw, "text 3 classes, \"cat\" to \"emu\"\n") &&
                 has(p.raw, "text none: the run has not finished (or was stopped)\n"),
             "report: train and teacher top-1 charted under Accuracy when logged; classes, "
             "no summary",
             "exit %d: %s", rc, p.raw ? p.raw : "(none)");
    free_page(&p);
}

/* metrics.jsonl of run a starts with its "run" record (run_record.h), made
 * under ONEDNN_MAX_CPU_ISA=AVX2 (main sets it), and the page shows it. */
static void test_run_record(void)
{
    char path[512], line[65536] = "";
    snprintf(path, sizeof path, "%s/a/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    bool read = f && fgets(line, sizeof line, f);
    if (f)
        fclose(f);
    json_t *r = read ? json_loads(line, 0, NULL) : NULL;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    json_t *env = json_object_get(r, "env");
    const char *isa = json_string_value(json_object_get(r, "onednn_isa"));
    const char *blas = json_string_value(json_object_get(r, "blas"));
    kt_check(r && !strcmp(json_string_value(json_object_get(r, "type")), "run") &&
                 json_integer_value(json_object_get(r, "step")) == 0 &&
                 !strcmp(json_string_value(json_object_get(r, "kdengine")), kd_version()) &&
                 json_is_string(json_object_get(r, "compiler")) && blas &&
                 !strcmp(blas, kd_blas_config()) &&
                 json_is_string(json_object_get(r, "blas_core")) &&
                 json_integer_value(json_object_get(r, "threads")) == 1 &&
                 json_integer_value(json_object_get(r, "world_size")) == 1 &&
                 !strcmp(json_string_value(json_object_get(r, "hostname")), host) &&
                 !strcmp(json_string_value(json_object_get(env, "ONEDNN_MAX_CPU_ISA")), "AVX2") &&
                 json_is_null(json_object_get(env, "OPENBLAS_CORETYPE")) &&
                 (kd_onednn_version() ? isa && !has(isa, "avx512") : json_is_null(
                                                                         json_object_get(r, "onednn"))),
             "run record: metrics.jsonl's first line says build, ISA caps, host, world size",
             "%s", line);
    json_decref(r);
    char want[256];
    snprintf(want, sizeof want, "text %s, commit", kd_version());
    page p = read_page("a/report.html");
    char machine[300];
    snprintf(machine, sizeof machine, "text %s: 1 thread, 1 process\n", host);
    kt_check(p.parsed && has(p.raw, want) && has(p.raw, "text ONEDNN_MAX_CPU_ISA=AVX2\n") &&
                 has(p.raw, machine) &&
                 has(p.raw, "text OpenBLAS"),
             "report: the environment shows the run record", "%s", p.raw ? p.raw : "(none)");
    free_page(&p);
    /* a resume adds its own record at the checkpoint's step, the first
     * stays; the report counts the starts */
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "run a.json --resume");
    free(out);
    f = fopen(path, "r");
    int records = 0;
    json_int_t last_step = -1;
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type && !strcmp(type, "run")) {
            records++;
            last_step = json_integer_value(json_object_get(j, "step"));
        }
        json_decref(j);
    }
    if (f)
        fclose(f);
    if (rc == 0) {
        rc = kt_kdengine(dir, &out, "report a --out resumed.html");
        free(out);
    }
    p = read_page("resumed.html");
    kt_check(rc == 0 && records == 2 && last_step == 18 &&
                 has(p.raw, "text 2 (resumed; the first start's build is shown)\n"),
             "run record: a resume adds one at its step; the report counts the starts",
             "exit %d, %d records, the last at step %lld: %s", rc, records,
             (long long)last_step, p.raw ? p.raw : "(none)");
    free_page(&p);
    /* a file from before run records (test_new_fields' "later") */
    p = read_page("later/report.html");
    kt_check(p.parsed && has(p.raw, "text not recorded (metrics.jsonl from before run records)"),
             "report: a metrics file without a run record still renders, saying so", "%s",
             p.raw ? p.raw : "(none)");
    free_page(&p);
}

static void test_bad_folders(void)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "report nosuch");
    kt_check(rc == 1 && has(out, "nosuch: No such file or directory"),
             "report: a missing run folder is an error naming it", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/empty", dir);
    rc = kt_run_command(cmd, NULL);
    rc = kt_kdengine(dir, &out, "report a empty");
    kt_check(rc == 1 && has(out, "empty: no metrics.jsonl in it"),
             "report: an empty run folder is an error naming it", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "report a.json");
    kt_check(rc == 1 && has(out, "a.json: not a folder"), "report: a file is not a run folder",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "report");
    kt_check(rc == 2 && has(out, "no run folder given"), "report: no folder is a usage error",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "report a --out");
    kt_check(rc == 2 && has(out, "--out needs a file"), "report: --out without a file",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
}

/* ------------------------------------------------------------ the parts */

static void test_escaping(void)
{
    report_text t = {0};
    report_text_escaped(&t, "<a href='x'>&\"</a> plain");
    kt_check(!t.failed && t.data &&
                 !strcmp(t.data, "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt; plain"),
             "report_text: HTML special characters become entities", "%s",
             t.data ? t.data : "(null)");
    report_text_free(&t);
}

/* Numbers in the fewest digits that read back, strings escaped as JSON,
 * arrays of plain values on one line. */
static void test_job_text(void)
{
    const char *json = "{\"lr\": 0.4, \"third\": 0.3333333333333333, \"big\": 1e300, "
                       "\"n\": 12, \"mean\": [0.485, 0.456], \"s\": \"a\\\"b\\\\c\\n\", "
                       "\"list\": [{\"name\": \"ce\"}, []], \"empty\": {}, \"ok\": true, "
                       "\"none\": null}";
    const char *want = "{\n  \"lr\": 0.4,\n  \"third\": 0.3333333333333333,\n  \"big\": 1e+300,\n"
                       "  \"n\": 12,\n  \"mean\": [0.485, 0.456],\n  \"s\": \"a\\\"b\\\\c\\u000a\",\n"
                       "  \"list\": [\n    {\n      \"name\": \"ce\"\n    },\n    []\n  ],\n"
                       "  \"empty\": {},\n  \"ok\": true,\n  \"none\": null\n}";
    json_t *v = json_loads(json, 0, NULL);
    report_text t = {0};
    if (v)
        report_json_pretty(&t, v);
    json_t *back = t.data ? json_loads(t.data, 0, NULL) : NULL;
    kt_check(v && !t.failed && t.data && !strcmp(t.data, want) && json_equal(v, back),
             "report_json: the job for people, and it reads back the same", "%s",
             t.data ? t.data : "(null)");
    json_decref(back);
    json_decref(v);
    report_text_free(&t);
}

/* One point, a flat line: finite coordinates in the plot, ticks around. */
static void test_degenerate_chart(void)
{
    int64_t steps[2] = {5, 9};
    double flat[2] = {2.5, 2.5};
    report_curve curves[2] = {{.run_label = "one", .steps = steps, .values = flat, .n = 1},
                              {.run_label = "<two>", .steps = steps, .values = flat, .n = 2}};
    report_text t = {0};
    report_svg_chart(&t, "eval.top1", 2, curves);
    bool finite = t.data && !has(t.data, "nan") && !has(t.data, "inf");
    kt_check(!t.failed && finite && has(t.data, "data-run=\"0\" stroke=\"#4e79a7\" points=\"") &&
                 has(t.data, "&lt;two&gt;") && has(t.data, ">2.5</text>"),
             "report_svg: a single point and a flat line chart finitely, labels escaped", "%s",
             t.data ? t.data : "(null)");
    report_text_free(&t);
}

int main(void)
{
    test_escaping();
    test_job_text();
    test_degenerate_chart();
    snprintf(dir, sizeof dir, "/tmp/kdreport.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    if (!kt_write_quadrants(dir, "train", 96, 1) || !kt_write_quadrants(dir, "val", 64, 2)) {
        kt_fail("setup", "cannot write the synthetic data");
        return kt_finish();
    }
    /* what the run record of run a must show (test_run_record) */
    setenv("ONEDNN_MAX_CPU_ISA", "AVX2", 1);
    unsetenv("DNNL_MAX_CPU_ISA");
    unsetenv("OPENBLAS_CORETYPE");
    write_job("a", "", "{\"name\": \"ce\"}", "0.05");
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "run a.json");
    bool ran = rc == 0 && has(out, "done: 18 steps");
    kt_check(ran, "setup: run a (supervised) trains", "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    out = NULL;
    rc = ran ? kt_kdengine(dir, &out, "export a.json --weights a/best.safetensors "
                              "--out teacher.safetensors") : 1;
    free(out);
    out = NULL;
    write_job("b", "\"teacher\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1, "
                   "\"weights\": \"teacher.safetensors\"},",
              "{\"name\": \"ce\", \"weight\": 0.5}, {\"name\": \"kd\", \"temperature\": 4}",
              "0.02");
    rc = rc == 0 ? kt_kdengine(dir, &out, "run b.json") : 1;
    bool ran_b = rc == 0 && has(out, "done: 18 steps");
    kt_check(ran_b, "setup: run b (distilled from a) trains", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    if (ran && ran_b) {
        char probe[600];
        snprintf(probe, sizeof probe, "%s -c 'import html.parser' >/dev/null 2>&1", python());
        if (kt_run_command(probe, NULL) != 0) {
            kt_skip("report pages", "no %s with html.parser to read the pages", python());
        } else {
            test_one_run();
            test_side_by_side();
            test_malformed();
            test_new_fields();
            test_run_record();
        }
        test_bad_folders();
    }
    kt_remove_tree(dir);
    return kt_finish();
}
