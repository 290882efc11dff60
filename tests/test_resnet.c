/* The resnet model plugin: state_dict names and shapes, parameter counts,
 * initialisation, forward/backward parity with a plain-torch reference
 * (tests/parity/torch_resnet.py) for every tap, the stages' pre-ReLU taps
 * included (also frozen, BN folded, in f64), forward_from (from a pre-ReLU
 * tap too), early stopping, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "plugin_fixture.h"

static const char *const PROVIDERS[] = {"resnet8",    "resnet14",  "resnet20", "resnet32",
                                        "resnet44",   "resnet56",  "resnet110", "resnet8x4",
                                        "resnet32x4", "resnet18",  "resnet34", "resnet50"};
#define N_PROVIDERS ((int)(sizeof PROVIDERS / sizeof PROVIDERS[0]))

/* A model instance with what the test needs of it. */
typedef struct model {
    const kd_model_vtable *vt;
    void *self;
    int n_tensors, n_taps;
    const kd_named_tensor *tensors;
    const kd_tap_info *taps;
} model;

/* Creates `provider` with params_json on `device` computing in `dtype`;
 * false with the status in *st (when given) and the message in
 * kd_last_error(). */
static bool model_open_dtype(model *m, const char *provider, const char *params_json,
                             uint64_t seed, kd_device device, kd_dtype dtype, kd_status *st)
{
    memset(m, 0, sizeof *m);
    const kd_vtable_header *h = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_MODEL, provider, &h);
    kd_params *p = e ? kt_params(e, params_json) : NULL;
    if (!p) {
        kd_error(KD_ERR_INVALID, "no provider or params for %s %s", provider, params_json);
        if (st)
            *st = KD_ERR_INVALID;
        return false;
    }
    m->vt = (const kd_model_vtable *)h;
    kd_create_args args = kt_create_args(e, p, seed);
    args.device = device;
    args.dtype = dtype;
    kd_status s = m->vt->create(&args, &m->self);
    kd_params_free(p);
    kd_tensor_list tl = {0};
    kd_tap_list taps = {0};
    if (s == KD_OK)
        s = m->vt->tensors(m->self, &tl);
    if (s == KD_OK)
        s = m->vt->taps(m->self, &taps);
    if (s == KD_OK && (tl.elem_size != sizeof(kd_named_tensor) ||
                       taps.elem_size != sizeof(kd_tap_info)))
        s = kd_error(KD_ERR_FORMAT, "%s: list elements of another size", provider);
    if (st)
        *st = s;
    if (s != KD_OK)
        return false;
    m->n_tensors = tl.n;
    m->tensors = tl.items;
    m->n_taps = taps.n;
    m->taps = taps.items;
    return true;
}

static bool model_open(model *m, const char *provider, const char *params_json, uint64_t seed,
                       kd_device device, kd_status *st)
{
    return model_open_dtype(m, provider, params_json, seed, device, KD_F32, st);
}

static void model_close(model *m)
{
    if (m->self)
        m->vt->destroy(m->self);
    m->self = NULL;
}

static int tap_index(const model *m, const char *name)
{
    for (int i = 0; i < m->n_taps; i++)
        if (strcmp(m->taps[i].name, name) == 0)
            return i;
    return -1;
}

static const kd_named_tensor *find_tensor(const model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

/* Runs forward (from < 0) or forward_from(from) with every tap wanted. */
static kd_status run_all(const model *m, int from, kd_tensor *input, bool training,
                         kd_tensor **taps)
{
    bool want[16];
    for (int i = 0; i < m->n_taps; i++) {
        want[i] = true;
        taps[i] = NULL;
    }
    kd_forward_args a = {sizeof a, input, training, kd_rng_make(0, 0, 0), want, taps};
    return from < 0 ? m->vt->forward(m->self, &a) : m->vt->forward_from(m->self, from, &a);
}

static kd_tensor *random_images(int64_t n, int64_t c, int64_t hw, uint64_t seed)
{
    kd_rng rng = kd_rng_make(seed, 1, 0);
    return kt_uniform(KD_F32, 4, (int64_t[]){n, c, hw, hw}, &rng, -1, 1);
}

/* ------------------------------------------------------- counts and init */

/* The big models are made once and shared by the tests that read them. */
typedef struct shared_models {
    model r8x4, r18, r50;
} shared_models;

static int64_t param_count(const model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].flags & KD_TENSOR_PARAM)
            n += kd_tensor_numel(m->tensors[i].tensor);
    return n;
}

/* The measured counts of /work/shared/specs/models.md (default classes). */
static void test_param_counts(const shared_models *sm)
{
    const struct {
        const char *provider;
        const model *m; /* NULL: made here */
        int64_t params;
        int sd_tensors;
    } rows[] = {{"resnet20", NULL, 278324, 128},     {"resnet110", NULL, 1736564, 668},
                {"resnet8x4", &sm->r8x4, 1233540, 62}, {"resnet18", &sm->r18, 11689512, 122},
                {"resnet50", &sm->r50, 25557032, 320}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s parameter count", rows[i].provider);
        model own = {0};
        const model *m = rows[i].m;
        if (!m && model_open(&own, rows[i].provider, "{}", 1, KD_CPU, NULL))
            m = &own;
        if (!m || !m->self) {
            kt_fail(name, "%s", kd_last_error());
            continue;
        }
        int64_t n = param_count(m);
        kt_check(n == rows[i].params && m->n_tensors == rows[i].sd_tensors, name,
                 "%lld params in %d tensors, expected %lld in %d", (long long)n, m->n_tensors,
                 (long long)rows[i].params, rows[i].sd_tensors);
        model_close(&own);
    }
}

static bool same_weights(const model *a, const model *b)
{
    if (a->n_tensors != b->n_tensors)
        return false;
    for (int i = 0; i < a->n_tensors; i++) {
        const kd_tensor *x = a->tensors[i].tensor, *y = b->tensors[i].tensor;
        size_t bytes = (size_t)kd_tensor_numel(x) * kd_dtype_size(x->dtype);
        if (!kd_tensor_same_shape(x, y) || memcmp(kd_tensor_data(x), kd_tensor_data(y), bytes))
            return false;
    }
    return true;
}

static void test_determinism(void)
{
    const char *which[] = {"resnet20", "resnet8x4"};
    for (int k = 0; k < 2; k++) {
        model a = {0}, b = {0}, c = {0};
        char name[64];
        snprintf(name, sizeof name, "%s init is deterministic in the seed", which[k]);
        if (!model_open(&a, which[k], "{}", 42, KD_CPU, NULL) ||
            !model_open(&b, which[k], "{}", 42, KD_CPU, NULL) ||
            !model_open(&c, which[k], "{}", 43, KD_CPU, NULL)) {
            kt_fail(name, "%s", kd_last_error());
        } else {
            kt_check(same_weights(&a, &b), name, "two creates with seed 42 differ");
            snprintf(name, sizeof name, "%s init differs across seeds", which[k]);
            kt_check(!same_weights(&a, &c), name, "seeds 42 and 43 give the same weights");
        }
        model_close(&a);
        model_close(&b);
        model_close(&c);
    }
}

/* Model tensors are contiguous f32 (I64 for the counters). */
static void moments(const kd_tensor *t, double *mean, double *std)
{
    int64_t n = kd_tensor_numel(t);
    const float *x = kd_tensor_data(t);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
}

static bool all_equal(const kd_tensor *t, double v)
{
    for (int64_t i = 0, n = kd_tensor_numel(t); i < n; i++)
        if (kd_tensor_get(t, i) != v)
            return false;
    return true;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

/* A BN weight timm zeroes: the last BN of a residual branch. */
static bool zero_init_last(const char *provider, const char *name)
{
    if (strncmp(name, "layer", 5) != 0)
        return false;
    if (strcmp(provider, "resnet50") == 0)
        return ends_with(name, ".bn3.weight");
    return (strcmp(provider, "resnet18") == 0 || strcmp(provider, "resnet34") == 0) &&
           ends_with(name, ".bn2.weight");
}

/* Convs kaiming normal (fan_out), fc uniform +-1/sqrt(fan_in), BN 1/0 (0
 * for timm's last BN of a block), running stats 0/1. */
static void test_init_statistics(const model *m, const char *provider, int want_zeroed)
{
    char name[80];
    snprintf(name, sizeof name, "%s init statistics", provider);
    char bad[256] = "";
    int zeroed = 0;
    for (int i = 0; i < m->n_tensors && !bad[0]; i++) {
        const kd_named_tensor *nt = &m->tensors[i];
        const kd_tensor *t = nt->tensor;
        double mean, std;
        if (t->ndim == 4) {
            double want = sqrt(2.0 / (double)(t->shape[0] * t->shape[2] * t->shape[3]));
            moments(t, &mean, &std);
            if (kd_tensor_numel(t) >= 2048 &&
                (fabs(std / want - 1) > 0.1 || fabs(mean) > 0.1 * want))
                snprintf(bad, sizeof bad, "%s: mean %g std %g, want std %g", nt->name, mean, std,
                         want);
        } else if (strncmp(nt->name, "fc.", 3) == 0) {
            double bound = 1 / sqrt((double)find_tensor(m, "fc.weight")->tensor->shape[1]);
            const float *v = kd_tensor_data(t);
            for (int64_t j = 0; j < kd_tensor_numel(t); j++)
                if (fabs(v[j]) > bound)
                    snprintf(bad, sizeof bad, "%s beyond +-%g", nt->name, bound);
            moments(t, &mean, &std);
            if (t->ndim == 2 && fabs(std / (bound / sqrt(3.0)) - 1) > 0.05)
                snprintf(bad, sizeof bad, "%s std %g for uniform +-%g", nt->name, std, bound);
        } else if (ends_with(nt->name, ".weight")) {
            bool zero = zero_init_last(provider, nt->name);
            zeroed += zero;
            if (!all_equal(t, zero ? 0.0 : 1.0))
                snprintf(bad, sizeof bad, "%s is not all %d", nt->name, zero ? 0 : 1);
        } else if (ends_with(nt->name, "running_var")) {
            if (!all_equal(t, 1.0))
                snprintf(bad, sizeof bad, "%s is not one", nt->name);
        } else if (!all_equal(t, 0.0)) {
            snprintf(bad, sizeof bad, "%s is not zero", nt->name);
        }
    }
    kt_check(!bad[0] && zeroed == want_zeroed, name, "%s (%d zero-initialised BNs, want %d)",
             bad[0] ? bad : "ok", zeroed, want_zeroed);
}

static void test_flags(const model *m, const char *provider)
{
    char name[64], bad[160] = "";
    snprintf(name, sizeof name, "%s tensor flags", provider);
    for (int i = 0; i < m->n_tensors && !bad[0]; i++) {
        const kd_named_tensor *nt = &m->tensors[i];
        uint32_t want;
        if (ends_with(nt->name, "num_batches_tracked"))
            want = KD_TENSOR_BUFFER | KD_TENSOR_OPTIONAL;
        else if (ends_with(nt->name, "running_mean") || ends_with(nt->name, "running_var"))
            want = KD_TENSOR_BUFFER;
        else if (nt->tensor->ndim == 1)
            want = KD_TENSOR_PARAM | KD_TENSOR_NO_DECAY;
        else
            want = KD_TENSOR_PARAM;
        if (nt->flags != want || nt->tensor->requires_grad != ((want & KD_TENSOR_PARAM) != 0))
            snprintf(bad, sizeof bad, "%s: flags %u, want %u", nt->name, nt->flags, want);
    }
    kt_check(!bad[0], name, "%s", bad);
}

static void test_taps(const model *m, const char *provider, int n, const kd_tap_info *want)
{
    char name[64];
    snprintf(name, sizeof name, "%s taps", provider);
    bool ok = m->n_taps == n;
    int i = 0;
    for (; ok && i < n; i++)
        ok = strcmp(m->taps[i].name, want[i].name) == 0 &&
             m->taps[i].channels == want[i].channels &&
             m->taps[i].reduction == want[i].reduction && m->taps[i].layout == want[i].layout &&
             m->taps[i].prefix_tokens == want[i].prefix_tokens;
    kt_check(ok, name, "%d taps; first difference at tap %d", m->n_taps, i - 1);
}

/* ------------------------------------------------- forward_from, stopping */

static void test_forward_from(const model *m, const char *provider, int64_t hw)
{
    char name[96];
    snprintf(name, sizeof name, "%s forward_from every tap matches the full forward", provider);
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    kd_tensor *x = random_images(2, 3, hw, 5);
    kd_tensor *full[16], *part[16];
    kd_status st = run_all(m, -1, x, false, full);
    char bad[200] = "";
    for (int from = 0; st == KD_OK && from < m->n_taps - 1 && !bad[0]; from++) {
        st = run_all(m, from, full[from], false, part);
        for (int t = from + 1; st == KD_OK && t < m->n_taps && !bad[0]; t++)
            if (!part[t] || kt_max_abs_diff(part[t], full[t]) != 0)
                snprintf(bad, sizeof bad, "from %s: %s differs", m->taps[from].name,
                         m->taps[t].name);
    }
    kt_check(st == KD_OK && !bad[0], name, "%s", st != KD_OK ? kd_last_error() : bad);
    kd_set_grad_enabled(prev);
    kd_scope_end();
}

/* A request for stage1 alone runs no later layer: the later BNs' counters
 * stay put and the later taps stay unset. */
static void test_early_stop(void)
{
    const char *name = "resnet20 stops after the last wanted tap";
    model m;
    if (!model_open(&m, "resnet20", "{}", 3, KD_CPU, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *x = random_images(2, 3, 16, 6);
    bool want[16] = {false};
    kd_tensor *taps[16] = {0};
    int stage1 = tap_index(&m, "stage1"), stage2pre = tap_index(&m, "stage2.preact");
    want[stage1] = true;
    kd_forward_args a = {sizeof a, x, true, kd_rng_make(0, 0, 0), want, taps};
    kd_status st = stage1 > 0 && stage2pre > 0 ? m.vt->forward(m.self, &a) : KD_ERR_INVALID;
    const kd_named_tensor *l1 = find_tensor(&m, "layer1.2.bn2.num_batches_tracked");
    const kd_named_tensor *l2 = find_tensor(&m, "layer2.0.bn1.num_batches_tracked");
    bool ok = st == KD_OK && taps[stage1] && taps[stage1]->shape[1] == 16 &&
              !taps[stage2pre] && !taps[m.n_taps - 1] && l1 && l2 &&
              kd_tensor_get(l1->tensor, 0) == 1 && kd_tensor_get(l2->tensor, 0) == 0;
    kt_check(ok, name, "%s", st != KD_OK ? kd_last_error() : "later layers ran or taps missing");
    kd_scope_end();
    model_close(&m);
}

/* ---------------------------------------------------------------- errors */

static void expect_error(const char *name, kd_status st, kd_status want, const char *needle)
{
    kt_check(st == want && strstr(kd_last_error(), needle), name, "status %s, message '%s'",
             kd_status_name(st), kd_last_error());
}

static void test_errors(void)
{
    model m;
    kd_status st;
    model_open(&m, "resnet20", "{}", 1, KD_CUDA, &st);
    expect_error("resnet20 on CUDA is refused", st, KD_ERR_UNSUPPORTED, "resnet20: only the CPU");
    model_close(&m);
    model_open(&m, "resnet8", "{\"in_chans\": 7}", 1, KD_CPU, &st);
    expect_error("in_chans 7 fails the schema", st, KD_ERR_INVALID, "no provider or params");

    if (!model_open(&m, "resnet8", "{\"in_chans\": 1}", 1, KD_CPU, NULL)) {
        kt_fail("resnet8 with in_chans 1", "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    kd_tensor *taps[16];
    st = run_all(&m, -1, random_images(2, 3, 8, 1), false, taps);
    expect_error("forward on 3 channels for in_chans 1", st, KD_ERR_INVALID,
                 "resnet8: input [2, 3, 8, 8] is not [N, 1, H, W]");
    st = run_all(&m, 8, random_images(2, 1, 8, 1), false, taps);
    expect_error("forward_from the logits tap", st, KD_ERR_INVALID,
                 "resnet8: forward_from tap 8 is out of range");
    bool want[16] = {true, true, true, true, true, true, true, true, true};
    kd_forward_args a = {sizeof a, random_images(2, 1, 8, 1), false, kd_rng_make(0, 0, 0),
                         want, taps};
    st = m.vt->forward_from(m.self, -1, &a);
    expect_error("forward_from a negative tap", st, KD_ERR_INVALID, "out of range");
    st = run_all(&m, tap_index(&m, "stage2"), random_images(2, 16, 8, 1), false, taps);
    expect_error("forward_from stage2 with stage1's channels", st, KD_ERR_INVALID,
                 "resnet8: forward_from stage2: input [2, 16, 8, 8] is not [N, 32, H, W]");
    st = run_all(&m, tap_index(&m, "pre_logits"), random_images(2, 64, 1, 1), false, taps);
    expect_error("forward_from pre_logits with a map", st, KD_ERR_INVALID, "is not [N, 64]");
    kd_tensor *f64 = kd_tensor_zeros(KD_F64, KD_CPU, 4, (int64_t[]){1, 1, 4, 4});
    st = run_all(&m, -1, f64, false, taps);
    expect_error("forward on f64 input", st, KD_ERR_UNSUPPORTED, "takes f32 CPU tensors");
    /* one value per channel at stage3: batch statistics are undefined */
    st = run_all(&m, -1, random_images(1, 1, 4, 1), true, taps);
    expect_error("training on a 1x1 map with batch 1", st, KD_ERR_INVALID,
                 "resnet8: layer3.0: batch_norm");
    kd_scope_end();
    model_close(&m);
}

/* ------------------------------------------------------------ key lists */

static void test_keys(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/keys.json", dir);
    json_error_t jerr;
    json_t *all = json_load_file(path, 0, &jerr);
    if (!all) {
        kt_fail("key lists", "reading %s: %s", path, jerr.text);
        return;
    }
    for (int p = 0; p < N_PROVIDERS; p++) {
        char name[80];
        snprintf(name, sizeof name, "%s tensors match the reference state_dict", PROVIDERS[p]);
        json_t *ref = json_object_get(all, PROVIDERS[p]);
        model m;
        if (!ref || !model_open(&m, PROVIDERS[p], "{}", 1, KD_CPU, NULL)) {
            kt_fail(name, "%s", ref ? kd_last_error() : "no reference list");
            continue;
        }
        char bad[256] = "";
        if ((int)json_array_size(ref) != m.n_tensors)
            snprintf(bad, sizeof bad, "%d tensors, reference %d", m.n_tensors,
                     (int)json_array_size(ref));
        for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
            json_t *row = json_array_get(ref, (size_t)i);
            const char *rname = json_string_value(json_array_get(row, 0));
            json_t *rshape = json_array_get(row, 1);
            const char *rdtype = json_string_value(json_array_get(row, 2));
            const kd_tensor *t = m.tensors[i].tensor;
            bool same = rname && rdtype && strcmp(rname, m.tensors[i].name) == 0 &&
                        (int)json_array_size(rshape) == t->ndim &&
                        strcmp(rdtype, t->dtype == KD_I64 ? "int64" : t->dtype == KD_F32
                                                                          ? "float32"
                                                                          : "?") == 0;
            for (int d = 0; same && d < t->ndim; d++)
                same = json_integer_value(json_array_get(rshape, (size_t)d)) == t->shape[d];
            if (!same) {
                char s[64];
                snprintf(bad, sizeof bad, "entry %d: %s %s %s, reference %s %s", i,
                         m.tensors[i].name, kd_shape_str(t, s, sizeof s),
                         kd_dtype_name(t->dtype), rname ? rname : "?", rdtype ? rdtype : "?");
            }
        }
        kt_check(!bad[0], name, "%s", bad);
        model_close(&m);
    }
    json_decref(all);
}

/* --------------------------------------------------------------- parity */

typedef struct parity_case {
    const char *provider;
    int num_classes, in_chans, batch, size;
} parity_case;

static const parity_case CASES[] = {
    {"resnet8", 100, 3, 2, 32},   {"resnet8", 10, 1, 2, 28},   {"resnet20", 100, 3, 2, 32},
    {"resnet20", 10, 1, 2, 28},   {"resnet8x4", 100, 3, 2, 32}, {"resnet8x4", 10, 1, 2, 28},
    {"resnet18", 1000, 3, 2, 64}, {"resnet50", 1000, 3, 2, 64},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* The reference is f64 (tests/parity/torch_resnet.py), so these bound the
 * port's own f32 error. Forward outputs: relative norm error. */
#define FORWARD_TOL 1e-5
/* Gradients: a train-mode BN backward subtracts the channel means of the
 * upstream gradient and of its product with the normalised input, and
 * where those nearly cancel f32 keeps fewer digits; the worst measured here
 * is 3e-5, and torch's own f32 backward is as far from f64 (5e-5). */
#define BACKWARD_TOL 1e-4

static double norm(const kd_tensor *t)
{
    double s = 0;
    for (int64_t i = 0, n = kd_tensor_numel(t); i < n; i++)
        s += kd_tensor_get(t, i) * kd_tensor_get(t, i);
    return sqrt(s);
}

/* ||t - ref|| / max(||ref||, floor) <= tol for reference `key`; the first
 * failure is written to bad. */
static void compare(const kd_tensor *t, const kd_safetensors *f, const char *key, double floor,
                    double tol, char *bad, size_t size)
{
    if (bad[0])
        return;
    kd_tensor *ref = kd_safetensors_load(f, key, t ? t->dtype : KD_F32);
    if (!t || !ref) {
        snprintf(bad, size, "%s: %s", key, t ? kd_last_error() : "not computed");
        return;
    }
    double e = t->dtype == KD_I64 ? kt_max_abs_diff(t, ref)
                                  : kt_rel_error(t, ref) * norm(ref) / fmax(norm(ref), floor);
    if (!(e <= tol))
        snprintf(bad, size, "%s: relative error %.3g > %.0e", key, e, tol);
}

/* A train-mode BN cancels any per-channel constant, so the bias gradient
 * of a BN that reaches the next train-mode BN through an everywhere-on
 * ReLU and a 1x1 conv (resnet50's bn2) is zero in exact arithmetic and
 * rounding noise in f32: a BN bias gradient is measured against the size
 * of its BN's weight gradient too. */
static double grad_floor(const kd_safetensors *f, const char *name)
{
    size_t n = strlen(name);
    if (n < 5 || strcmp(name + n - 5, ".bias") != 0 || strcmp(name, "fc.bias") == 0)
        return 0;
    char key[160];
    snprintf(key, sizeof key, "grad.%.*sweight", (int)(n - 4), name);
    kd_tensor *w = kd_safetensors_load(f, key, KD_F32);
    return w ? norm(w) : 0;
}

static void parity_case_run(int c, const char *dir)
{
    const parity_case *pc = &CASES[c];
    char label[96], name[160], path[256], params[96], key[160];
    snprintf(label, sizeof label, "%s %dx%dx%d batch %d", pc->provider, pc->in_chans, pc->size,
             pc->size, pc->batch);
    snprintf(path, sizeof path, "%s/case%d.safetensors", dir, c);
    snprintf(params, sizeof params, "{\"num_classes\": %d, \"in_chans\": %d}", pc->num_classes,
             pc->in_chans);
    kd_safetensors *f = NULL;
    model m;
    snprintf(name, sizeof name, "%s: load the reference weights", label);
    if (kd_safetensors_open(path, &f) != KD_OK || !model_open(&m, pc->provider, params, 9,
                                                               KD_CPU, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        kd_safetensors_close(f);
        return;
    }
    kd_scope_begin();
    char bad[320] = "";
    for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
        snprintf(key, sizeof key, "w.%s", m.tensors[i].name);
        kd_tensor *w = kd_safetensors_load(f, key, m.tensors[i].tensor->dtype);
        if (!w || kd_tensor_copy_(m.tensors[i].tensor, w) != KD_OK)
            snprintf(bad, sizeof bad, "%s: %s", key, kd_last_error());
    }
    kt_check(!bad[0], name, "%s", bad);

    kd_tensor *x = kd_safetensors_load(f, "input", KD_F32);
    kd_tensor *taps[16];
    kd_status st = run_all(&m, -1, x, false, taps);
    for (int t = 0; st == KD_OK && t < m.n_taps; t++) {
        snprintf(key, sizeof key, "eval.%s", m.taps[t].name);
        compare(taps[t], f, key, 0, FORWARD_TOL, bad, sizeof bad);
    }
    snprintf(name, sizeof name, "%s: eval taps match torch", label);
    kt_check(st == KD_OK && !bad[0], name, "%s", st != KD_OK ? kd_last_error() : bad);

    kd_tensor_set_requires_grad(x, true);
    st = run_all(&m, -1, x, true, taps);
    for (int t = 0; st == KD_OK && t < m.n_taps; t++) {
        snprintf(key, sizeof key, "train.%s", m.taps[t].name);
        compare(taps[t], f, key, 0, FORWARD_TOL, bad, sizeof bad);
    }
    snprintf(name, sizeof name, "%s: train taps match torch", label);
    kt_check(st == KD_OK && !bad[0], name, "%s", st != KD_OK ? kd_last_error() : bad);

    if (st == KD_OK)
        st = kd_backward_with(taps[m.n_taps - 1], kd_safetensors_load(f, "upstream", KD_F32));
    compare(x->grad, f, "grad.input", 0, BACKWARD_TOL, bad, sizeof bad);
    for (int i = 0; st == KD_OK && i < m.n_tensors; i++) {
        const kd_named_tensor *nt = &m.tensors[i];
        if (nt->flags & KD_TENSOR_PARAM) {
            snprintf(key, sizeof key, "grad.%s", nt->name);
            compare(nt->tensor->grad, f, key, grad_floor(f, nt->name), BACKWARD_TOL, bad,
                    sizeof bad);
        } else {
            snprintf(key, sizeof key, "after.%s", nt->name);
            compare(nt->tensor, f, key, 0, FORWARD_TOL, bad, sizeof bad);
        }
    }
    snprintf(name, sizeof name, "%s: gradients and updated running stats match torch", label);
    kt_check(st == KD_OK && !bad[0], name, "%s", st != KD_OK ? kd_last_error() : bad);
    kd_scope_end();
    model_close(&m);
    kd_safetensors_close(f);
}

/* Frozen taps bound the f64 port's error against torch's f64: both sum
 * the same products in another order, and freeze() folds each BN into its
 * convolution (one rounding more per weight), so they differ by a few
 * hundred ulps of the sums through the depth, far below this. */
#define FROZEN_F64_TOL 1e-10

/* A pre-ReLU tap must differ from its ReLU by at least this share of its
 * norm (an identity shortcut adds a non-negative map, so the share is a
 * few percent at the least): a port tapping after the ReLU is then off by
 * millions of times FROZEN_F64_TOL. */
#define PREACT_MIN_NEGATIVE 1e-3

/* The frozen model an eval-mode teacher is (freeze(): every BN folded into
 * its convolution) in float64, on the case's weights with the last BNs'
 * shifts around 0 (fz.*) and input: every eval tap, each stage's pre-ReLU
 * tap included, equals torch's f64 taps (frozen.*), and the pre-ReLU taps
 * are not their ReLUs. */
static void frozen_case(int c, const char *dir)
{
    const parity_case *pc = &CASES[c];
    char name[160], path[256], params[96], key[160], bad[320] = "";
    snprintf(name, sizeof name, "%s %dx%dx%d: frozen (BN folded) f64 eval taps, stageN.preact "
             "included, match torch's f64", pc->provider, pc->in_chans, pc->size, pc->size);
    snprintf(path, sizeof path, "%s/case%d.safetensors", dir, c);
    snprintf(params, sizeof params, "{\"num_classes\": %d, \"in_chans\": %d}", pc->num_classes,
             pc->in_chans);
    kd_safetensors *f = NULL;
    model m;
    if (kd_safetensors_open(path, &f) != KD_OK ||
        !model_open_dtype(&m, pc->provider, params, 9, KD_CPU, KD_F64, NULL)) {
        kt_fail(name, "%s", kd_last_error());
        kd_safetensors_close(f);
        return;
    }
    kd_scope_begin();
    bool prev = kd_set_grad_enabled(false);
    for (int i = 0; i < m.n_tensors && !bad[0]; i++) {
        const kd_named_tensor *nt = &m.tensors[i];
        snprintf(key, sizeof key, "fz.%s", nt->name);
        if (!kd_safetensors_find(f, key))
            snprintf(key, sizeof key, "w.%s", nt->name);
        kd_tensor *w = kd_safetensors_load(f, key, nt->tensor->dtype);
        if (!w || kd_tensor_copy_(nt->tensor, w) != KD_OK)
            snprintf(bad, sizeof bad, "%s: %s", key, kd_last_error());
    }
    kd_status st = bad[0] ? KD_ERR_INVALID : m.vt->freeze(m.self);
    kd_tensor *taps[16];
    if (st == KD_OK)
        st = run_all(&m, -1, kd_safetensors_load(f, "input", KD_F64), false, taps);
    int preacts = 0;
    for (int t = 0; st == KD_OK && t < m.n_taps; t++) {
        snprintf(key, sizeof key, "frozen.%s", m.taps[t].name);
        compare(taps[t], f, key, 0, FROZEN_F64_TOL, bad, sizeof bad);
        if (!strstr(m.taps[t].name, ".preact") || bad[0])
            continue;
        preacts++;
        kd_tensor *pre = kd_safetensors_load(f, key, KD_F64);
        double share = pre ? norm(kd_sub(pre, kd_relu(pre))) / norm(pre) : 0;
        if (!(share >= PREACT_MIN_NEGATIVE))
            snprintf(bad, sizeof bad, "%s: its negative part is %.3g of its norm (< %g): it "
                     "does not tell pre-ReLU from post-ReLU", key, share, PREACT_MIN_NEGATIVE);
    }
    if (st == KD_OK && !bad[0] && preacts != m.n_taps / 2 - 1)
        snprintf(bad, sizeof bad, "%d preact taps for %d taps", preacts, m.n_taps);
    kt_check(st == KD_OK && !bad[0], name, "%s", st != KD_OK ? kd_last_error() : bad);
    kd_set_grad_enabled(prev);
    kd_scope_end();
    model_close(&m);
    kd_safetensors_close(f);
}

/* `kdengine forward` on the case's weights (as a state_dict file) and input,
 * in float64: every tap equals the reference's f64 taps up to their
 * rounding to f32 in the fixture (2^-24 relative), so the command, its
 * weight loading and its output file are checked end to end. */
static void forward_cli_case(int c, const char *dir)
{
    const parity_case *pc = &CASES[c];
    char name[128], weights[256], input[256], out_path[256], key[160];
    snprintf(name, sizeof name, "%s: kdengine forward --dtype float64 writes torch's taps",
             pc->provider);
    snprintf(key, sizeof key, "%s/case%d.safetensors", dir, c);
    snprintf(weights, sizeof weights, "%s/weights%d.safetensors", dir, c);
    snprintf(input, sizeof input, "%s/input%d.safetensors", dir, c);
    snprintf(out_path, sizeof out_path, "%s/forward%d.safetensors", dir, c);
    kd_safetensors *f = NULL, *o = NULL;
    char bad[320] = "";
    if (kd_safetensors_open(key, &f) != KD_OK) {
        kt_fail(name, "%s", kd_last_error());
        return;
    }
    kd_scope_begin();
    int n = kd_safetensors_count(f), n_w = 0;
    const char **names = calloc((size_t)n, sizeof *names);
    kd_tensor **ws = calloc((size_t)n, sizeof *ws);
    for (int i = 0; names && ws && i < n; i++) {
        const kd_safetensors_entry *e = kd_safetensors_at(f, i);
        if (strncmp(e->name, "w.", 2) == 0) {
            names[n_w] = e->name + 2;
            ws[n_w++] = kd_safetensors_load(f, e->name, (kd_dtype)e->dtype);
        }
    }
    kd_tensor *x = kd_safetensors_load(f, "input", KD_F32);
    const char *input_name = "input";
    if (!names || !ws || kd_safetensors_save(weights, n_w, names, ws, 0, NULL) != KD_OK ||
        kd_safetensors_save(input, 1, &input_name, &x, 0, NULL) != KD_OK)
        snprintf(bad, sizeof bad, "writing the inputs: %s", kd_last_error());
    char cmd[2048], *text = NULL;
    snprintf(cmd, sizeof cmd, "KDENGINE_PLUGIN_PATH=%s %s/kdengine forward %s --params "
             "'{\"num_classes\": %d, \"in_chans\": %d}' --weights %s --input %s --taps all "
             "--dtype float64 --out %s 2>&1", kt_plugin_dir(), KD_BUILDDIR, pc->provider,
             pc->num_classes, pc->in_chans, weights, input, out_path);
    int rc = bad[0] ? 0 : kt_run_command(cmd, &text);
    if (!bad[0] && (rc != 0 || kd_safetensors_open(out_path, &o) != KD_OK))
        snprintf(bad, sizeof bad, "exit %d: %s", rc, text ? text : kd_last_error());
    for (int i = 0; !bad[0] && i < kd_safetensors_count(o); i++) {
        const char *tap = kd_safetensors_at(o, i)->name;
        snprintf(key, sizeof key, "eval.%s", tap);
        compare(kd_safetensors_load(o, tap, KD_F64), f, key, 0, 2e-7, bad, sizeof bad);
    }
    if (!bad[0] && kd_safetensors_count(o) != 11)
        snprintf(bad, sizeof bad, "%d taps written, not 11", kd_safetensors_count(o));
    kt_check(!bad[0], name, "%s", bad);
    free(text);
    free(names);
    free(ws);
    kd_scope_end();
    kd_safetensors_close(o);
    kd_safetensors_close(f);
    unlink(weights);
    unlink(input);
    unlink(out_path);
}

static bool torch_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

static void parity(void)
{
    if (!torch_available()) {
        kt_skip("resnet key lists and torch parity",
                "torch is not importable by %s (install python3-torch)", KD_TORCH_PYTHON);
        return;
    }
    char dir[] = "/tmp/kdresnet.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("resnet parity", "cannot make a temporary directory");
        return;
    }
    char script[512], cmd[2048];
    kt_source_path("tests/parity/torch_resnet.py", script, sizeof script);
    int used = snprintf(cmd, sizeof cmd, "%s %s %s", KD_TORCH_PYTHON, script, dir);
    for (int c = 0; c < N_CASES; c++)
        used += snprintf(cmd + used, sizeof cmd - (size_t)used, " %s,%d,%d,%d,%d",
                         CASES[c].provider, CASES[c].num_classes, CASES[c].in_chans,
                         CASES[c].batch, CASES[c].size);
    if (system(cmd) != 0) {
        kt_fail("resnet parity", "the torch reference failed: %s", cmd);
    } else {
        test_keys(dir);
        for (int c = 0; c < N_CASES; c++) {
            parity_case_run(c, dir);
            frozen_case(c, dir);
        }
        forward_cli_case(N_CASES - 1, dir);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/keys.json", dir);
    unlink(path);
    for (int c = 0; c < N_CASES; c++) {
        snprintf(path, sizeof path, "%s/case%d.safetensors", dir, c);
        unlink(path);
    }
    rmdir(dir);
}

static void test_shared_models(void)
{
    shared_models sm;
    if (!model_open(&sm.r8x4, "resnet8x4", "{}", 7, KD_CPU, NULL) ||
        !model_open(&sm.r18, "resnet18", "{}", 7, KD_CPU, NULL) ||
        !model_open(&sm.r50, "resnet50", "{}", 7, KD_CPU, NULL)) {
        kt_fail("resnet8x4, resnet18 and resnet50 create", "%s", kd_last_error());
        model_close(&sm.r8x4);
        model_close(&sm.r18);
        return;
    }
    test_param_counts(&sm);
    test_init_statistics(&sm.r8x4, "resnet8x4", 0);
    test_init_statistics(&sm.r50, "resnet50", 16);
    test_flags(&sm.r50, "resnet50");
#define MAP KD_LAYOUT_NCHW
#define VEC KD_LAYOUT_NC
    static const kd_tap_info r50_taps[] = {
        {"stem", 64, 4, MAP, 0},
        {"stage1.preact", 256, 4, MAP, 0},   {"stage1", 256, 4, MAP, 0},
        {"stage2.preact", 512, 8, MAP, 0},   {"stage2", 512, 8, MAP, 0},
        {"stage3.preact", 1024, 16, MAP, 0}, {"stage3", 1024, 16, MAP, 0},
        {"stage4.preact", 2048, 32, MAP, 0}, {"stage4", 2048, 32, MAP, 0},
        {"pre_logits", 2048, 1, VEC, 0},     {"logits", 1000, 1, VEC, 0}};
    static const kd_tap_info r8x4_taps[] = {
        {"stem", 32, 1, MAP, 0},
        {"stage1.preact", 64, 1, MAP, 0},    {"stage1", 64, 1, MAP, 0},
        {"stage2.preact", 128, 2, MAP, 0},   {"stage2", 128, 2, MAP, 0},
        {"stage3.preact", 256, 4, MAP, 0},   {"stage3", 256, 4, MAP, 0},
        {"pre_logits", 256, 1, VEC, 0},      {"logits", 100, 1, VEC, 0}};
#undef MAP
#undef VEC
    test_taps(&sm.r50, "resnet50", 11, r50_taps);
    test_taps(&sm.r8x4, "resnet8x4", 9, r8x4_taps);
    test_forward_from(&sm.r8x4, "resnet8x4", 16);
    test_forward_from(&sm.r18, "resnet18", 32);
    model_close(&sm.r8x4);
    model_close(&sm.r18);
    model_close(&sm.r50);
}

int main(int argc, char **argv)
{
    bool no_parity = argc > 1 && strcmp(argv[1], "--no-parity") == 0;
    test_shared_models();
    test_determinism();
    test_early_stop();
    test_errors();
    if (no_parity)
        kt_skip("resnet key lists and torch parity", "--no-parity");
    else
        parity();
    kt_plugins_close();
    return kt_finish();
}
