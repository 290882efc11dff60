/* The model zoo against timm 0.9.16: every row of the model table
 * (tests/model_rows.h, rows in tests/models/rows_*.c) is built by timm in
 * one Python process (tests/parity/timm_models.py), and the kdengine model
 * must load timm's state_dict by name and reproduce its logits, taps and
 * one training step. Full-size models are held to the committed timm key
 * lists without running timm. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "harness.h"
#include "model_rows.h"
#include "model_fixture.h"

static const kt_model_row *const TABLES[] = {
    kt_model_rows_resnet,
    kt_model_rows_mobilenet,
    kt_model_rows_convnext,
    kt_model_rows_vit,
    kt_model_rows_mixer,
    kt_model_rows_swin,
    kt_model_rows_beit,
};
static const kt_full_keys *const KEY_TABLES[] = {
    kt_full_keys_resnet,
    kt_full_keys_mobilenet,
    kt_full_keys_convnext,
    kt_full_keys_vit,
    kt_full_keys_mixer,
    kt_full_keys_swin,
    kt_full_keys_beit,
};
#define N_TABLES(t) ((int)(sizeof(t) / sizeof((t)[0])))

/* PyTorch's own f32 error against f64 is the yardstick for a case that
 * loses digits (train-mode BN over a few values, deep eval stacks): the
 * port may be this many times further off, or 1e-4 relative, whichever
 * is larger (issue 11's bound). */
#define KT_TORCH_ERROR_FACTOR 10
#define F32_RTOL 1e-4
/* Both sides in f64: only summation order differs. */
#define F64_RTOL 1e-9
/* Except that torch 1.13's hardsigmoid backward multiplies by the float
 * constant 1.0f / 6.0f in f64 too (3e-8 relative, measured against an
 * exact 1/6), so gradients through MobileNetV3's squeeze-excite gates
 * carry that much of torch's error. */
#define F64_GRAD_RTOL 1e-7

static const char *dtype_word(kd_dtype dt)
{
    return dt == KD_F32 ? "float32" : dt == KD_F64 ? "float64" : dt == KD_I64 ? "int64" : "?";
}

/* --------------------------------------------------------- key lists */

/* One state_dict entry of timm's. */
typedef struct ref_entry {
    char name[160];
    int ndim;
    int64_t shape[KD_MAX_DIMS];
    char dtype[16];
} ref_entry;

/* The model's tensors in order against timm's n entries; the first
 * difference goes to bad. */
static void compare_keys(const kt_model *m, const ref_entry *ref, int n, char *bad, size_t size)
{
    if (n != m->n_tensors) {
        snprintf(bad, size, "%d tensors, timm has %d", m->n_tensors, n);
        return;
    }
    for (int i = 0; i < n; i++) {
        const kd_tensor *t = m->tensors[i].tensor;
        bool same = strcmp(ref[i].name, m->tensors[i].name) == 0 && ref[i].ndim == t->ndim &&
                    strcmp(ref[i].dtype, dtype_word(t->dtype)) == 0;
        for (int d = 0; same && d < t->ndim; d++)
            same = ref[i].shape[d] == t->shape[d];
        if (!same) {
            char s[96];
            snprintf(bad, size, "entry %d: %s %s %s, timm has %s %s", i, m->tensors[i].name,
                     kd_shape_str(t, s, sizeof s), kd_dtype_name(t->dtype), ref[i].name,
                     ref[i].dtype);
            return;
        }
    }
}

/* <id>.json from timm_models.py: [[name, shape, dtype], ...]. */
static ref_entry *read_keys_json(const char *path, int *n, char *bad, size_t size)
{
    json_error_t jerr;
    json_t *all = json_load_file(path, 0, &jerr);
    if (!all || !json_is_array(all)) {
        snprintf(bad, size, "reading %s: %s", path, all ? "not a list" : jerr.text);
        json_decref(all);
        return NULL;
    }
    *n = (int)json_array_size(all);
    ref_entry *ref = calloc((size_t)*n + 1, sizeof *ref);
    for (int i = 0; ref && i < *n; i++) {
        json_t *row = json_array_get(all, (size_t)i), *shape = json_array_get(row, 1);
        const char *name = json_string_value(json_array_get(row, 0));
        const char *dtype = json_string_value(json_array_get(row, 2));
        snprintf(ref[i].name, sizeof ref[i].name, "%s", name ? name : "?");
        snprintf(ref[i].dtype, sizeof ref[i].dtype, "%s", dtype ? dtype : "?");
        ref[i].ndim = (int)json_array_size(shape);
        for (int d = 0; d < ref[i].ndim && d < KD_MAX_DIMS; d++)
            ref[i].shape[d] = json_integer_value(json_array_get(shape, (size_t)d));
    }
    json_decref(all);
    return ref;
}

/* tests/parity/timm_keys/<name>.txt: "key<TAB>(d0, d1)<TAB>dtype" lines. */
static ref_entry *read_keys_txt(const char *path, int *n, char *bad, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(bad, size, "cannot read %s", path);
        return NULL;
    }
    int cap = 0;
    ref_entry *ref = NULL;
    char line[512];
    *n = 0;
    while (fgets(line, sizeof line, f)) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            ref_entry *grown = realloc(ref, (size_t)cap * sizeof *ref);
            if (!grown)
                break;
            ref = grown;
        }
        ref_entry *e = &ref[*n];
        memset(e, 0, sizeof *e);
        char *shape = strchr(line, '\t'), *dtype = shape ? strchr(shape + 1, '\t') : NULL;
        if (!dtype) {
            snprintf(bad, size, "%s:%d: not key<TAB>shape<TAB>dtype", path, *n + 1);
            break;
        }
        snprintf(e->name, sizeof e->name, "%.*s", (int)(shape - line), line);
        snprintf(e->dtype, sizeof e->dtype, "%.*s", (int)strcspn(dtype + 1, "\r\n"), dtype + 1);
        for (char *p = shape + 1; p < dtype && e->ndim < KD_MAX_DIMS;) {
            p += strcspn(p, "0123456789");
            if (p >= dtype)
                break;
            e->shape[e->ndim++] = strtoll(p, &p, 10);
        }
        (*n)++;
    }
    fclose(f);
    if (bad[0]) {
        free(ref);
        return NULL;
    }
    return ref;
}

static void test_full_keys(const kt_full_keys *row)
{
    char name[160], path[512], bad[1200] = "";
    snprintf(name, sizeof name, "%s at full size has timm's %s state_dict", row->provider,
             row->timm_name);
    char rel[200];
    snprintf(rel, sizeof rel, "tests/parity/timm_keys/%s.txt", row->timm_name);
    kt_source_path(rel, path, sizeof path);
    int n = 0;
    ref_entry *ref = read_keys_txt(path, &n, bad, sizeof bad);
    kt_model m;
    if (ref && !kt_model_open(&m, row->provider, "{}", KD_F32, 11, NULL))
        snprintf(bad, sizeof bad, "%s", kd_last_error());
    else if (ref) {
        compare_keys(&m, ref, n, bad, sizeof bad);
        kt_model_close(&m);
    }
    kt_check(!bad[0], name, "%s", bad);
    free(ref);
}

/* --------------------------------------------------------- comparisons */

static kd_tensor *load(const kd_safetensors *f, const char *key, kd_dtype dtype)
{
    return kd_safetensors_find(f, key) ? kd_safetensors_load(f, key, dtype) : NULL;
}

/* Relative norm error of t against reference `key`, within tol; shapes
 * must agree. The first failure goes to bad. */
static void expect_close(const kd_tensor *t, const kd_safetensors *f, const char *key,
                         double tol, const char *what, char *bad, size_t size)
{
    if (bad[0])
        return;
    kd_tensor *ref = load(f, key, KD_F64);
    char s[96], r[96];
    if (!ref) {
        snprintf(bad, size, "%s: the reference file has no %s", what, key);
        return;
    }
    if (!t) {
        snprintf(bad, size, "%s: not computed", what);
        return;
    }
    if (!kd_tensor_same_shape(t, ref)) {
        snprintf(bad, size, "%s: shape %s, timm %s", what, kd_shape_str(t, s, sizeof s),
                 kd_shape_str(ref, r, sizeof r));
        return;
    }
    double e = kt_rel_error(t, ref);
    if (!(e <= tol))
        snprintf(bad, size, "%s: relative error %.3g > %.3g", what, e, tol);
}

/* The f32 tolerance for reference key "<kind>64.<rest>": PyTorch's own f32
 * error ("<kind>32.<rest>" against it) times the factor, at least 1e-4. */
static double f32_tol(const kd_safetensors *f, const char *key64)
{
    char key32[256];
    const char *dot = strchr(key64, '.');
    snprintf(key32, sizeof key32, "%.*s32%s", (int)(dot - key64 - 2), key64, dot);
    kd_tensor *a = load(f, key32, KD_F64), *b = load(f, key64, KD_F64);
    double torch_error = a && b ? kt_rel_error(a, b) : INFINITY;
    return fmax(F32_RTOL, KT_TORCH_ERROR_FACTOR * torch_error);
}

static double tol_for(const kd_safetensors *f, const char *key64, kd_dtype dt)
{
    if (dt == KD_F32)
        return f32_tol(f, key64);
    return strncmp(key64, "grad64.", 7) == 0 ? F64_GRAD_RTOL : F64_RTOL;
}

/* ----------------------------------------------------------- one row */

/* Copies every w.<name> into the model's tensor of that name: each model
 * tensor must be there with its shape, and every w. entry must be used. */
static void load_weights(const kt_model *m, const kd_safetensors *f, char *bad, size_t size)
{
    int in_file = 0;
    for (int i = 0; i < kd_safetensors_count(f); i++)
        in_file += strncmp(kd_safetensors_at(f, i)->name, "w.", 2) == 0;
    if (in_file != m->n_tensors) {
        snprintf(bad, size, "the model has %d tensors, timm's state_dict %d", m->n_tensors,
                 in_file);
        return;
    }
    for (int i = 0; i < m->n_tensors && !bad[0]; i++) {
        char key[200], s[96], r[96];
        kd_tensor *t = m->tensors[i].tensor;
        snprintf(key, sizeof key, "w.%s", m->tensors[i].name);
        kd_tensor *w = load(f, key, t->dtype);
        if (!w)
            snprintf(bad, size, "timm has no tensor %s", m->tensors[i].name);
        else if (!kd_tensor_same_shape(t, w))
            snprintf(bad, size, "%s: shape %s, timm %s", m->tensors[i].name,
                     kd_shape_str(t, s, sizeof s), kd_shape_str(w, r, sizeof r));
        else if (kd_tensor_copy_(t, w) != KD_OK)
            snprintf(bad, size, "%s: %s", m->tensors[i].name, kd_last_error());
    }
}

/* Eval logits and every row tap against timm, with the tap's layout. */
static void check_eval(const kt_model_row *row, const kt_model *m, const kd_safetensors *f,
                       kd_tensor *x, kd_tensor **taps, char *bad, size_t size)
{
    kd_dtype dt = x->dtype;
    bool prev = kd_set_grad_enabled(false);
    kd_status st = kt_model_run(m, -1, x, false, NULL, taps);
    kd_set_grad_enabled(prev);
    if (st != KD_OK) {
        snprintf(bad, size, "forward: %s", kd_last_error());
        return;
    }
    expect_close(taps[m->n_taps - 1], f, "eval64.logits", tol_for(f, "eval64.logits", dt),
                 "logits", bad, size);
    for (const kt_tap_map *tm = row->taps; tm->tap && !bad[0]; tm++) {
        int t = kt_model_tap(m, tm->tap);
        char key[200];
        snprintf(key, sizeof key, "eval64.%s", tm->module);
        if (t < 0)
            snprintf(bad, size, "no tap %s", tm->tap);
        else if (m->taps[t].layout != tm->layout)
            snprintf(bad, size, "tap %s declares layout %d, timm's %s gives %d", tm->tap,
                     (int)m->taps[t].layout, tm->module, (int)tm->layout);
        else
            expect_close(taps[t], f, key, tol_for(f, key, dt), tm->tap, bad, size);
    }
}

/* One train-mode step: logits, the gradients timm wrote (first and last
 * layers, input) and the buffers after it. */
static void check_train(const kt_model *m, const kd_safetensors *f, kd_tensor *x, char *bad,
                        size_t size)
{
    kd_dtype dt = x->dtype;
    kd_tensor *taps[KT_MAX_TAPS];
    bool want[KT_MAX_TAPS] = {0};
    want[m->n_taps - 1] = true;
    kd_tensor_set_requires_grad(x, true);
    kd_status st = kt_model_run(m, -1, x, true, want, taps);
    kd_tensor *logits = taps[m->n_taps - 1];
    if (st == KD_OK)
        st = kd_backward_with(logits, load(f, "upstream", dt));
    if (st != KD_OK) {
        snprintf(bad, size, "train step: %s", kd_last_error());
        return;
    }
    expect_close(logits, f, "train64.logits", tol_for(f, "train64.logits", dt), "train logits",
                 bad, size);
    expect_close(x->grad, f, "grad64.input", tol_for(f, "grad64.input", dt), "input gradient",
                 bad, size);
    int grads = 0, want_grads = -1; /* grad64.input is not a parameter */
    for (int i = 0; i < kd_safetensors_count(f); i++)
        want_grads += strncmp(kd_safetensors_at(f, i)->name, "grad64.", 7) == 0;
    for (int i = 0; i < m->n_tensors && !bad[0]; i++) {
        const kd_named_tensor *nt = &m->tensors[i];
        char key[200], what[200];
        snprintf(key, sizeof key, "%s64.%s", nt->flags & KD_TENSOR_PARAM ? "grad" : "after",
                 nt->name);
        snprintf(what, sizeof what, "%s %s", nt->flags & KD_TENSOR_PARAM ? "gradient of" :
                 "after the step,", nt->name);
        if (nt->flags & KD_TENSOR_PARAM) {
            if (!kd_safetensors_find(f, key))
                continue;
            grads++;
            expect_close(nt->tensor->grad, f, key, tol_for(f, key, dt), what, bad, size);
        } else if (nt->tensor->dtype == KD_I64) {
            kd_tensor *ref = load(f, key, KD_I64);
            if (!ref || kt_max_abs_diff(nt->tensor, ref) != 0)
                snprintf(bad, size, "%s differs from timm's", what);
        } else {
            /* a running stat: one f32 batch statistic mixed in */
            expect_close(nt->tensor, f, key, dt == KD_F64 ? F64_RTOL : F32_RTOL, what, bad,
                         size);
        }
    }
    if (!bad[0] && grads != want_grads)
        snprintf(bad, size, "%d of timm's %d parameter gradients found by name", grads,
                 want_grads);
}

static const kt_refused_start *const REFUSED_TABLES[] = {
    kt_refused_starts_vit,
};

static bool refuses_forward_from(const kt_model_row *row, const char *tap)
{
    for (int t = 0; t < N_TABLES(REFUSED_TABLES); t++)
        for (const kt_refused_start *r = REFUSED_TABLES[t]; r->provider; r++)
            if (strcmp(r->provider, row->provider) == 0 && strcmp(r->tap, tap) == 0)
                return true;
    return false;
}

/* forward_from each tap, on the tap the full forward made, gives the later
 * taps bit for bit (or an error, for the refused starts of the tables). */
static void check_forward_from(const kt_model_row *row, const kt_model *m, kd_tensor *x,
                               char *bad, size_t size)
{
    kd_tensor *full[KT_MAX_TAPS], *part[KT_MAX_TAPS];
    bool prev = kd_set_grad_enabled(false);
    kd_status st = kt_model_run(m, -1, x, false, NULL, full);
    for (int from = 0; st == KD_OK && from < m->n_taps - 1 && !bad[0]; from++) {
        if (refuses_forward_from(row, m->taps[from].name)) {
            if (kt_model_run(m, from, full[from], false, NULL, part) == KD_OK)
                snprintf(bad, size, "forward_from %s should be refused", m->taps[from].name);
            continue;
        }
        st = kt_model_run(m, from, full[from], false, NULL, part);
        for (int t = from + 1; st == KD_OK && t < m->n_taps && !bad[0]; t++)
            if (!part[t] || !kd_tensor_same_shape(part[t], full[t]) ||
                kt_max_abs_diff(part[t], full[t]) != 0)
                snprintf(bad, size, "from %s: %s differs", m->taps[from].name, m->taps[t].name);
    }
    if (st != KD_OK)
        snprintf(bad, size, "%s", kd_last_error());
    kd_set_grad_enabled(prev);
}

static void run_row(const kt_model_row *row, int id, const char *dir)
{
    char label[200], name[300], path[512], bad[1200];
    snprintf(label, sizeof label, "%s %s (timm %s %s) batch %d at %d", row->provider,
             row->params, row->timm_name, row->timm_kwargs, row->batch, row->size);
    snprintf(path, sizeof path, "%s/row%d.safetensors", dir, id);
    kd_safetensors *f = NULL;
    if (kd_safetensors_open(path, &f) != KD_OK) {
        kt_fail(label, "%s", kd_last_error());
        return;
    }
    for (int d = 0; d < 2; d++) {
        kd_dtype dt = d == 0 ? KD_F32 : KD_F64;
        const char *dn = kd_dtype_name(dt);
        kt_model m;
        bad[0] = 0;
        snprintf(name, sizeof name, "%s: %s, timm's tensors load by name", label, dn);
        if (!kt_model_open(&m, row->provider, row->params, dt, 11, NULL)) {
            kt_fail(name, "%s", kd_last_error());
            continue;
        }
        if (dt == KD_F32) {
            int n = 0;
            snprintf(path, sizeof path, "%s/row%d.json", dir, id);
            ref_entry *ref = read_keys_json(path, &n, bad, sizeof bad);
            if (ref)
                compare_keys(&m, ref, n, bad, sizeof bad);
            free(ref);
        }
        kd_scope_begin();
        load_weights(&m, f, bad, sizeof bad);
        if (!kt_check(!bad[0], name, "%s", bad)) {
            kd_scope_end();
            kt_model_close(&m);
            continue;
        }
        kd_tensor *x = load(f, "input", dt), *taps[KT_MAX_TAPS];
        snprintf(name, sizeof name, "%s: %s eval logits and taps match timm", label, dn);
        check_eval(row, &m, f, x, taps, bad, sizeof bad);
        kt_check(!bad[0], name, "%s", bad);
        if (dt == KD_F32) {
            bad[0] = 0;
            snprintf(name, sizeof name, "%s: forward_from every tap gives the rest", label);
            check_forward_from(row, &m, x, bad, sizeof bad);
            kt_check(!bad[0], name, "%s", bad);
        }
        bad[0] = 0;
        snprintf(name, sizeof name, "%s: %s train step (logits, first/last layer and input "
                 "gradients, buffers) matches timm", label, dn);
        check_train(&m, f, kd_safetensors_load(f, "input", dt), bad, sizeof bad);
        kt_check(!bad[0], name, "%s", bad);
        kd_scope_end();
        kt_model_close(&m);
    }
    kd_safetensors_close(f);
}

/* ------------------------------------------------------------- driver */

static bool timm_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import timm' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

/* cases.json for timm_models.py, one case per row, id "row<i>". */
static bool write_cases(const char *path, const kt_model_row *const *rows, int n)
{
    json_t *cases = json_array();
    bool ok = cases != NULL;
    for (int i = 0; ok && i < n; i++) {
        const kt_model_row *row = rows[i];
        char id[32];
        snprintf(id, sizeof id, "row%d", i);
        json_error_t jerr;
        json_t *kwargs = json_loads(row->timm_kwargs, 0, &jerr), *taps = json_array();
        for (const kt_tap_map *tm = row->taps; taps && tm->tap; tm++)
            json_array_append_new(taps, json_string(tm->module));
        json_t *c = json_pack("{s:s, s:s, s:o*, s:i, s:i, s:o*, s:i}", "id", id, "timm_name",
                              row->timm_name, "kwargs", kwargs, "batch", row->batch, "size",
                              row->size, "taps", taps, "seed", i + 1);
        ok = kwargs && taps && c && json_array_append_new(cases, c) == 0;
        if (!kwargs)
            fprintf(stderr, "row %d: bad timm kwargs %s: %s\n", i, row->timm_kwargs, jerr.text);
    }
    ok = ok && json_dump_file(cases, path, 0) == 0;
    json_decref(cases);
    return ok;
}

/* Rows and key lists of providers starting with `only` (NULL: all). */
static bool selected(const char *provider, const char *only)
{
    return !only || strncmp(provider, only, strlen(only)) == 0;
}

static void parity(const char *only)
{
    const kt_model_row *rows[256];
    int n = 0;
    for (int t = 0; t < N_TABLES(TABLES); t++)
        for (const kt_model_row *r = TABLES[t]; r->provider && n < 256; r++)
            if (selected(r->provider, only))
                rows[n++] = r;
    if (!timm_available()) {
        kt_skip("timm parity of the model table",
                "%d rows: timm is not importable by %s (scripts/setup installs timm 0.9.16)", n,
                KD_TORCH_PYTHON);
        return;
    }
    char dir[] = "/tmp/kdtimm.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("timm parity", "cannot make a temporary directory");
        return;
    }
    char cases[600], script[512], cmd[2048];
    snprintf(cases, sizeof cases, "%s/cases.json", dir);
    kt_source_path("tests/parity/timm_models.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, dir, cases);
    if (!write_cases(cases, rows, n))
        kt_fail("timm parity", "cannot write %s", cases);
    else if (system(cmd) != 0)
        kt_fail("timm parity", "the timm reference failed: %s", cmd);
    else
        for (int i = 0; i < n; i++)
            run_row(rows[i], i, dir);
    kt_remove_tree(dir);
}

/* usage: test_timm_models [PROVIDER_PREFIX]: the prefix runs only those
 * providers' rows ("mobilenet", "convnext"). */
/* Multiply-adds of one 224x224 image (what `plan` prints) against timm's:
 * convolutions, Linear layers and matrix products counted with hooks on
 * timm (the spec's summary.json for the models it lists; forward hooks on
 * timm 0.9.16's convolutions and Linear layers for the CNNs). The
 * transformers' counts may differ from timm's in how an attention product
 * is counted, hence issue 11's 1%; the CNNs' are exact. */
typedef struct macs_row {
    const char *provider;
    int64_t timm_macs;
    double rtol;
} macs_row;

static const macs_row MACS[] = {
    {"resnet50", 4089184256LL, 0},
    {"mobilenetv2_100", 300774272LL, 0},
    {"mobilenetv3_large_100", 216589760LL, 0},
    {"mobilenetv3_small_100", 56510400LL, 0},
    {"convnext_atto", 547332480LL, 0},
    {"convnext_tiny", 4455531264LL, 0},
    {"deit_tiny_patch16_224", 1253683200LL, 0.01},
    {"mixer_s16_224", 3776958464LL, 0.01},
    {"swin_tiny_patch4_window7_224", 4490566656LL, 0.01},
};

static void test_macs(const macs_row *row)
{
    char name[160];
    snprintf(name, sizeof name, "%s at 224x224: timm's %lld multiply-adds", row->provider,
             (long long)row->timm_macs);
    kt_model m;
    if (!kt_model_open(&m, row->provider, "{}", KD_F32, 1, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    kd_tensor *taps[KT_MAX_TAPS];
    kd_tensor *x = kd_tensor_zeros(KD_F32, KD_CPU, 4, (int64_t[]){1, 3, 224, 224});
    kd_macs_take();
    kd_status st = kt_model_run(&m, -1, x, false, NULL, taps);
    int64_t macs = kd_macs_take();
    double err = fabs((double)macs / (double)row->timm_macs - 1);
    kt_check(st == KD_OK && (row->rtol == 0 ? macs == row->timm_macs : err <= row->rtol), name,
             "%s: %lld (%.3g%% off)", st == KD_OK ? "counted" : kd_last_error(),
             (long long)macs, 100 * err);
    kd_set_grad_enabled(prev);
    kd_scope_end();
    kt_model_close(&m);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    for (int t = 0; t < N_TABLES(KEY_TABLES); t++)
        for (const kt_full_keys *k = KEY_TABLES[t]; k->provider; k++)
            if (selected(k->provider, only))
                test_full_keys(k);
    for (int i = 0; i < N_TABLES(MACS); i++)
        if (selected(MACS[i].provider, only))
            test_macs(&MACS[i]);
    parity(only);
    kt_plugins_close();
    return kt_finish();
}
