/* SSLD's data side (issue 17): unlabeled samples mixed into the training
 * set and the teacher's selection of an unlabeled pool.
 *  - the ce loss leaves out rows labeled KD_LABEL_NONE: in float64 its
 *    value and gradient equal ce over the labeled rows alone, bit for bit;
 *    a batch without a labeled row gives 0 and a zero gradient;
 *  - the image_pool dataset reads a folder or a list without labels;
 *  - a job with data.train.unlabeled runs end to end: the pool's samples
 *    join every epoch (more steps), kd distils on them; the job's refusals;
 *  - `kdengine select` keeps the teacher's top-k images per class, checked
 *    against tests/parity/ssld_select.py's reading of the rule over the
 *    teacher's probabilities (the one Python process of this file).
 *
 * Data: test_job's synthetic 8x8 quadrant images (IDX) for the labeled set,
 * and 8x8 gray PNG files written here (zlib, no image library) for the
 * pool, so a run takes a second. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <zlib.h>

#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"

static char dir[64];

static bool has(const char *text, const char *part) { return text && strstr(text, part); }

/* ------------------------------------------------------------ ce */

typedef struct ce_run {
    double value;
    kd_tensor *grad; /* caller-owned copy of the logits' gradient */
} ce_run;

/* Loss `provider` (params json) over logits (a teacher's too, or NULL) and
 * labels in float64; value NAN with the message in kd_last_error() on
 * failure. */
static ce_run loss_on(const char *provider, const char *json, kd_tensor *logits,
                      kd_tensor *teacher, kd_tensor *labels)
{
    ce_run r = {NAN, NULL};
    const kd_vtable_header *h;
    const kd_registry_entry *e = kt_provider(KD_KIND_LOSS, provider, &h);
    kd_params *params = e ? kt_params(e, json) : NULL;
    if (!params)
        return r;
    const kd_loss_vtable *vt = (const kd_loss_vtable *)h;
    const kd_create_args args = kt_create_args(e, params, 1);
    void *self = NULL;
    kd_status st = vt->create(&args, &self);
    kd_params_free(params);
    if (st != KD_OK)
        return r;
    kd_tensor_zero_grad(logits);
    kd_tensor_set_requires_grad(logits, true);
    kd_scope_begin();
    kd_tensor *s[1] = {logits}, *t[1] = {teacher};
    const kd_loss_args la = {.size = sizeof la, .student = s, .teacher = teacher ? t : NULL,
                             .labels = labels, .epoch = 100, .training = true};
    kd_loss_result out = {.size = sizeof out};
    if (vt->forward(self, &la, &out) == KD_OK && kd_backward(out.loss) == KD_OK) {
        r.value = kd_tensor_get(out.loss, 0);
        r.grad = logits->grad ? kd_tensor_to_device(logits->grad, KD_CPU) : NULL;
        if (r.grad)
            kd_tensor_keep(r.grad);
    }
    kd_scope_end();
    vt->destroy(self);
    return r;
}

/* Rows 1, 4 and 6 of 8 unlabeled: value and gradient equal ce over the
 * other five rows, taken apart into their own tensor, exactly. */
static void test_ce_skips_unlabeled(void)
{
    enum { N = 8, C = 5, LABELED = 5 };
    static const int64_t labels_mixed[N] = {2, KD_LABEL_NONE, 0, 4, KD_LABEL_NONE, 1,
                                            KD_LABEL_NONE, 3};
    double x[N * C], kept[LABELED * C];
    int64_t kept_labels[LABELED];
    kd_rng rng = kd_rng_make(17, 1, 0);
    for (int i = 0; i < N * C; i++)
        x[i] = 4 * kd_rng_uniform(&rng) - 2;
    for (int i = 0, k = 0; i < N; i++)
        if (labels_mixed[i] != KD_LABEL_NONE) {
            memcpy(kept + k * C, x + i * C, sizeof(double) * C);
            kept_labels[k++] = labels_mixed[i];
        }
    const char *params[] = {"{}", "{\"label_smoothing\": 0.1}"};
    for (int p = 0; p < 2; p++) {
        kd_tensor *mixed = kd_tensor_from_data(KD_F64, 2, (int64_t[]){N, C}, x);
        kd_tensor *alone = kd_tensor_from_data(KD_F64, 2, (int64_t[]){LABELED, C}, kept);
        kd_tensor *y_mixed = kd_tensor_from_data(KD_I64, 1, (int64_t[]){N}, labels_mixed);
        kd_tensor *y_alone = kd_tensor_from_data(KD_I64, 1, (int64_t[]){LABELED}, kept_labels);
        ce_run a = loss_on("ce", params[p], mixed, NULL, y_mixed),
               b = loss_on("ce", params[p], alone, NULL, y_alone);
        int differ = 0, nonzero = 0;
        for (int i = 0, k = 0; a.grad && b.grad && i < N; i++) {
            bool labeled = labels_mixed[i] != KD_LABEL_NONE;
            for (int c = 0; c < C; c++) {
                double g = kd_tensor_get(a.grad, i * C + c);
                if (labeled)
                    differ += g != kd_tensor_get(b.grad, k * C + c);
                else
                    nonzero += g != 0;
            }
            k += labeled;
        }
        char name[160];
        snprintf(name, sizeof name, "ce %s: unlabeled rows left out, value and gradient equal "
                 "ce over the labeled rows (f64, exact)", params[p]);
        kt_check(!isnan(a.value) && a.value == b.value && a.grad && b.grad && differ == 0 &&
                     nonzero == 0,
                 name, "%.17g vs %.17g, %d gradients differ, %d unlabeled nonzero: %s",
                 a.value, b.value, differ, nonzero, kd_last_error());
        kd_tensor_free(a.grad);
        kd_tensor_free(b.grad);
        kd_tensor_free(mixed);
        kd_tensor_free(alone);
        kd_tensor_free(y_mixed);
        kd_tensor_free(y_alone);
    }
    /* no labeled row: 0, and a zero gradient (the batch's step comes from
     * the other losses) */
    int64_t none[3] = {KD_LABEL_NONE, KD_LABEL_NONE, KD_LABEL_NONE};
    kd_tensor *logits = kd_tensor_from_data(KD_F64, 2, (int64_t[]){3, C}, x);
    kd_tensor *y = kd_tensor_from_data(KD_I64, 1, (int64_t[]){3}, none);
    ce_run r = loss_on("ce", "{}", logits, NULL, y);
    int nonzero = 0;
    for (int i = 0; r.grad && i < 3 * C; i++)
        nonzero += kd_tensor_get(r.grad, i) != 0;
    kt_check(r.value == 0 && r.grad && nonzero == 0,
             "ce: a batch without a labeled row gives 0 and a zero gradient",
             "value %g, %d nonzero gradients: %s", r.value, nonzero, kd_last_error());
    kd_tensor_free(r.grad);
    kd_tensor_free(logits);
    kd_tensor_free(y);
}

/* dkd reads labels too: with rows 1 and 3 unlabeled it equals dkd over
 * the labeled rows of student and teacher (f64, exact gradient rows). */
static void test_dkd_skips_unlabeled(void)
{
    enum { N = 5, C = 4, LABELED = 3 };
    static const int64_t y_mixed[N] = {1, KD_LABEL_NONE, 3, KD_LABEL_NONE, 0};
    static const int64_t y_kept[LABELED] = {1, 3, 0};
    static const int keep[LABELED] = {0, 2, 4};
    double s[N * C], t[N * C], s_kept[LABELED * C], t_kept[LABELED * C];
    kd_rng rng = kd_rng_make(23, 1, 0);
    for (int i = 0; i < N * C; i++) {
        s[i] = 4 * kd_rng_uniform(&rng) - 2;
        t[i] = 4 * kd_rng_uniform(&rng) - 2;
    }
    for (int k = 0; k < LABELED; k++) {
        memcpy(s_kept + k * C, s + keep[k] * C, sizeof(double) * C);
        memcpy(t_kept + k * C, t + keep[k] * C, sizeof(double) * C);
    }
    kd_tensor *sm = kd_tensor_from_data(KD_F64, 2, (int64_t[]){N, C}, s);
    kd_tensor *tm = kd_tensor_from_data(KD_F64, 2, (int64_t[]){N, C}, t);
    kd_tensor *sk = kd_tensor_from_data(KD_F64, 2, (int64_t[]){LABELED, C}, s_kept);
    kd_tensor *tk = kd_tensor_from_data(KD_F64, 2, (int64_t[]){LABELED, C}, t_kept);
    kd_tensor *ym = kd_tensor_from_data(KD_I64, 1, (int64_t[]){N}, y_mixed);
    kd_tensor *yk = kd_tensor_from_data(KD_I64, 1, (int64_t[]){LABELED}, y_kept);
    const char *json = "{\"beta\": 8, \"temperature\": 4}";
    ce_run a = loss_on("dkd", json, sm, tm, ym), b = loss_on("dkd", json, sk, tk, yk);
    int differ = 0, nonzero = 0;
    for (int i = 0, k = 0; a.grad && b.grad && i < N; i++) {
        bool labeled = y_mixed[i] != KD_LABEL_NONE;
        for (int c = 0; c < C; c++) {
            double g = kd_tensor_get(a.grad, i * C + c);
            differ += labeled && g != kd_tensor_get(b.grad, k * C + c);
            nonzero += !labeled && g != 0;
        }
        k += labeled;
    }
    kt_check(!isnan(a.value) && a.value == b.value && a.grad && b.grad && differ == 0 &&
                 nonzero == 0,
             "dkd: unlabeled rows left out, value and gradient equal dkd over the labeled rows",
             "%.17g vs %.17g, %d gradients differ, %d unlabeled nonzero: %s", a.value, b.value,
             differ, nonzero, kd_last_error());
    kd_tensor_free(a.grad);
    kd_tensor_free(b.grad);
    kd_tensor *all[] = {sm, tm, sk, tk, ym, yk};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        kd_tensor_free(all[i]);
}

/* ------------------------------------------------------------ a pool */

static void put_be32(unsigned char *p, uint32_t v)
{
    for (int b = 0; b < 4; b++)
        p[b] = (unsigned char)(v >> (24 - 8 * b));
}

/* One PNG chunk: length, type, data, CRC of type and data. */
static size_t png_chunk(unsigned char *out, const char *type, const unsigned char *data,
                        uint32_t len)
{
    put_be32(out, len);
    memcpy(out + 4, type, 4);
    if (len)
        memcpy(out + 8, data, len);
    uLong crc = crc32(0L, out + 4, 4 + len);
    put_be32(out + 8 + len, (uint32_t)crc);
    return 12 + len;
}

/* An 8x8 gray PNG of `pixels` (row major) at path. */
static bool write_png8(const char *path, const uint8_t *pixels)
{
    unsigned char raw[8 * 9], packed[256], file[512];
    for (int y = 0; y < 8; y++) {
        raw[y * 9] = 0; /* filter: none */
        memcpy(raw + y * 9 + 1, pixels + y * 8, 8);
    }
    uLongf packed_len = sizeof packed;
    if (compress(packed, &packed_len, raw, sizeof raw) != Z_OK)
        return false;
    static const unsigned char signature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    unsigned char ihdr[13] = {0};
    put_be32(ihdr, 8);
    put_be32(ihdr + 4, 8);
    ihdr[8] = 8; /* bits per sample; colour type 0 (gray), no interlace */
    size_t n = sizeof signature;
    memcpy(file, signature, n);
    n += png_chunk(file + n, "IHDR", ihdr, sizeof ihdr);
    n += png_chunk(file + n, "IDAT", packed, (uint32_t)packed_len);
    n += png_chunk(file + n, "IEND", NULL, 0);
    return kt_write_file(path, file, n);
}

/* DIR/pool/c<k>/img<i>.png, `count` images like kt_write_quadrants' (the
 * bright quadrant i % 4, under folders by it so a folder scan has depth),
 * and DIR/pool.txt listing them with a label that must be ignored;
 * pixels[count * 64] keeps what was written. */
static bool write_pool(int count, uint8_t *pixels)
{
    char path[512];
    kd_rng rng = kd_rng_make(99, 7, 0);
    FILE *list = NULL;
    snprintf(path, sizeof path, "%s/pool.txt", dir);
    list = fopen(path, "w");
    bool ok = list != NULL;
    snprintf(path, sizeof path, "%s/pool", dir);
    ok = ok && mkdir(path, 0777) == 0;
    for (int k = 0; ok && k < 4; k++) {
        snprintf(path, sizeof path, "%s/pool/c%d", dir, k);
        ok = mkdir(path, 0777) == 0;
    }
    for (int i = 0; ok && i < count; i++) {
        uint8_t *px = pixels + i * 64;
        int quadrant = i % 4;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int q = (y >= 4) * 2 + (x >= 4);
                px[y * 8 + x] = (uint8_t)((q == quadrant ? 160 : 40) +
                                          (int)kd_rng_below(&rng, 80));
            }
        snprintf(path, sizeof path, "%s/pool/c%d/img%03d.png", dir, quadrant, i);
        ok = write_png8(path, px);
        fprintf(list, "pool/c%d/img%03d.png %d\n", quadrant, i, 7);
    }
    if (list)
        ok = fclose(list) == 0 && ok;
    return ok;
}

/* ------------------------------------------------------------ jobs */

/* One epoch of 16-sample batches over 96 labeled quadrant images, and the
 * pool when `unlabeled` is not empty (a JSON object). */
static const char *const job_template =
    "{\n"
    "  \"seed\": 5, \"threads\": 1, \"output\": \"%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"train-images.idx\",\n"
    "                            \"labels\": \"train-labels.idx\", \"num_classes\": 4},\n"
    "              \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "              \"batch_size\": 16, \"workers\": 1%s%s},\n"
    "    \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"val-images.idx\",\n"
    "                          \"labels\": \"val-labels.idx\", \"num_classes\": 4},\n"
    "            \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "            \"batch_size\": 32, \"workers\": 0}\n"
    "  },\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9},\n"
    "  \"schedule\": {\"name\": \"constant\", \"epochs\": %d},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"log\": {\"every_steps\": 1}\n"
    "}\n";

static void write_job(const char *name, const char *unlabeled, const char *teacher,
                      const char *losses, int epochs)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, name, kt_plugin_dir(),
             *unlabeled ? ", \"unlabeled\": " : "", unlabeled, teacher, losses, epochs);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    kt_write_file(path, text, strlen(text));
}

static const char *const pool_folder =
    "{\"name\": \"image_pool\", \"root\": \"pool\", \"channels\": 1}";
static const char *const pool_list =
    "{\"name\": \"image_pool\", \"list\": \"pool.txt\", \"channels\": 1}";
static const char *const teacher_json =
    "\"teacher\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1, "
    "\"weights\": \"teacher.safetensors\"},";

/* The finite kd terms of the run's train lines. */
static int finite_kd_lines(const char *run)
{
    char path[512], line[65536];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *kd = json_object_get(json_object_get(json_object_get(j, "loss_terms"),
                                                     "losses[1]"), "kd");
        n += json_is_number(kd) && isfinite(json_number_value(kd));
        json_decref(j);
    }
    if (f)
        fclose(f);
    return n;
}

/* Trains the teacher (supervised, 4 epochs) and exports it; the pool's
 * jobs then run with it. */
static bool make_teacher(void)
{
    write_job("teacher", "", "", "{\"name\": \"ce\"}", 4);
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "run teacher.json");
    bool ok = rc == 0 && has(out, "done: 24 steps");
    free(out);
    out = NULL;
    if (ok)
        rc = kt_kdengine(dir, &out, "export teacher.json --weights teacher/best.safetensors "
                         "--out teacher.safetensors");
    ok = ok && rc == 0;
    kt_check(ok, "setup: a supervised teacher trains and exports", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    return ok;
}

static void test_pool_runs(void)
{
    /* 96 labeled + 64 unlabeled samples: 10 steps an epoch instead of 6 */
    write_job("mixed", pool_folder, "", "{\"name\": \"ce\"}", 1);
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "run mixed.json");
    kt_check(rc == 0 && has(out, "done: 10 steps"),
             "run: data.train.unlabeled (a folder) joins the epoch, ce on the labeled rows",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "plan mixed.json");
    kt_check(rc == 0 && has(out, "160 of 160 samples") &&
                 has(out, "data.train.unlabeled: image_pool, part of those samples"),
             "plan: says the pool's samples are part of data.train's", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    write_job("distil", pool_list, teacher_json,
              "{\"name\": \"ce\"}, {\"name\": \"kd\", \"temperature\": 4}", 1);
    rc = kt_kdengine(dir, &out, "run distil.json");
    int kd_lines = finite_kd_lines("distil");
    kt_check(rc == 0 && has(out, "done: 10 steps") && kd_lines == 10,
             "run: a pool from a list file, kd distils on every row",
             "exit %d, %d finite kd lines: %s", rc, kd_lines, out ? out : "(none)");
    free(out);
}

/* A job that must not validate, and the message it must give. */
static void expect_refused(const char *name, const char *job, const char *sets,
                           const char *needle)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "validate %s.json %s", job, sets);
    kt_check(rc == 1 && has(out, needle), name, "exit %d, want \"%s\": %s", rc, needle,
             out ? out : "(none)");
    free(out);
}

static void test_refusals(void)
{
    expect_refused("validate: unlabeled with subset", "mixed", "--set data.train.subset=32",
                   "data.train.unlabeled: cannot be combined with data.train.subset");
    expect_refused("validate: unlabeled in data.val", "mixed",
                   "--set 'data.val.unlabeled={\"name\": \"image_pool\", \"root\": \"pool\"}'",
                   "data.val.unlabeled: only data.train takes unlabeled samples");
    expect_refused("validate: unlabeled with batch transforms", "mixed",
                   "--set 'data.train.batch_transforms=[{\"name\": \"mixup\"}]'",
                   "cannot be combined with data.train.batch_transforms");
    expect_refused("validate: an unknown key of the pool", "mixed",
                   "--set data.train.unlabeled.folder=pool",
                   "data.train.unlabeled.folder: unknown parameter of dataset 'image_pool'");
    expect_refused("validate: a pool as the labeled data set", "mixed",
                   "--set 'data.val.dataset={\"name\": \"image_pool\", \"root\": \"pool\", "
                   "\"channels\": 1}'",
                   "data.val: sample 0: the dataset's samples have no labels");
    char path[512];
    snprintf(path, sizeof path, "%s/empty", dir);
    mkdir(path, 0777);
    expect_refused("validate: an empty pool folder", "mixed",
                   "--set data.train.unlabeled.root=empty", "empty: holds no .jpg");
    snprintf(path, sizeof path, "%s/bad.txt", dir);
    kt_write_file(path, "pool/c0/img000.png 1 extra\n", 27);
    expect_refused("validate: a pool list line of three fields", "mixed",
                   "--set data.train.unlabeled.list=bad.txt",
                   "bad.txt:1: expected 'path' or 'path label'");
}

/* Lines of a text file, or -1 when it cannot be read. */
static int count_lines(const char *path)
{
    size_t len = 0;
    char *text = (char *)kt_read_file(path, &len);
    if (!text)
        return -1;
    int n = 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] == '\n';
    free(text);
    return n;
}

static bool same_file(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    unsigned char *x = kt_read_file(a, &la), *y = kt_read_file(b, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Of the kept images, how many the teacher put in their quadrant's class
 * (the pool's folders c0..c3 name it). */
static int agreeing(const char *list_path, int *lines)
{
    FILE *f = fopen(list_path, "r");
    char line[512];
    int agree = 0;
    *lines = 0;
    while (f && fgets(line, sizeof line, f)) {
        int folder = -1, c = -2;
        const char *at = strstr(line, "pool/c");
        if (at && sscanf(at, "pool/c%d/%*s %d", &folder, &c) == 2)
            agree += folder == c;
        (*lines)++;
    }
    if (f)
        fclose(f);
    return agree;
}

static void test_select(void)
{
    char *out = NULL;
    int rc = kt_kdengine(dir, &out, "select distil.json --pool pool --top-k 5 --out sel.txt "
                         "--scores scores.safetensors");
    char sel[256], ref[256], scores[256];
    snprintf(sel, sizeof sel, "%s/sel.txt", dir);
    snprintf(ref, sizeof ref, "%s/ref.txt", dir);
    snprintf(scores, sizeof scores, "%s/scores.safetensors", dir);
    int lines = 0, agree = agreeing(sel, &lines);
    /* the teacher learnt the quadrants: what it keeps is mostly right */
    kt_check(rc == 0 && lines > 0 && lines <= 20 && agree * 4 >= lines * 3,
             "select: a folder pool, the top 5 of each of 4 classes, mostly the right quadrant",
             "exit %d, %d lines, %d agree: %s", rc, lines, agree, out ? out : "(none)");
    free(out);
    char script[512], cmd[2048];
    kt_source_path("tests/parity/ssld_select.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s 5 %s 2>&1", KD_TORCH_PYTHON, script, scores, ref);
    if (!KD_TORCH_PYTHON[0] || kt_run_command(KD_TORCH_PYTHON " -c 'import numpy, torch' "
                                              ">/dev/null 2>&1", NULL) != 0) {
        kt_skip("select: the list equals the Python reading of the rule",
                "numpy and torch are not importable by %s", KD_TORCH_PYTHON);
    } else {
        rc = kt_run_command(cmd, &out);
        kt_check(rc == 0 && same_file(sel, ref),
                 "select: the list equals the Python reading of the rule on its probabilities",
                 "exit %d: %s", rc, out ? out : "(none)");
        free(out);
    }
    /* the same pool as a list, in another order: the same selection */
    rc = kt_kdengine(dir, &out, "select distil.json --pool pool.txt --top-k 5 --out sel2.txt");
    snprintf(ref, sizeof ref, "%s/sel2.txt", dir);
    kt_check(rc == 0 && same_file(sel, ref), "select: a list of the pool keeps the same images",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    /* more than a class has: all of it, and the classes named */
    rc = kt_kdengine(dir, &out, "select distil.json --pool pool --top-k 40 --out all.txt");
    snprintf(ref, sizeof ref, "%s/all.txt", dir);
    kt_check(rc == 0 && count_lines(ref) == 64 && has(out, "fewer than --top-k images for class"),
             "select: classes with fewer than K images keep all, and are named",
             "exit %d, %d lines: %s", rc, count_lines(ref), out ? out : "(none)");
    free(out);
    /* the list trains: as a pool again */
    rc = kt_kdengine(dir, &out, "validate distil.json --set data.train.unlabeled.list=sel.txt");
    kt_check(rc == 0, "select: its list is a pool for data.train.unlabeled", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "select mixed.json --pool pool --top-k 5 --out x.txt");
    kt_check(rc == 1 && has(out, "teacher: missing"), "select: a job without a teacher",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    rc = kt_kdengine(dir, &out, "select distil.json --top-k 5 --out x.txt");
    kt_check(rc == 2 && has(out, "--pool is required"), "select: --pool is required",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
}

int main(void)
{
    test_ce_skips_unlabeled();
    test_dkd_skips_unlabeled();
    snprintf(dir, sizeof dir, "/tmp/kdssld.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    static uint8_t pool_pixels[64 * 64];
    bool data = kt_write_quadrants(dir, "train", 96, 1) &&
                kt_write_quadrants(dir, "val", 64, 2) && write_pool(64, pool_pixels);
    if (kt_check(data, "setup: synthetic data and a PNG pool", "cannot write them") &&
        make_teacher()) {
        test_pool_runs();
        test_refusals();
        test_select();
    }
    kt_remove_tree(dir);
    kt_plugins_close();
    return kt_finish();
}
