/* The scalekd loss plugin, loaded through the registry:
 * - parity in f64 with tests/parity/torch_scalekd.py (one Python process):
 *   the loss, its spatial and frequency terms, gradients with respect to
 *   the student map and every projector parameter, the running statistics
 *   a step leaves; teacher taps NHWC, NCHW and tokens with a cls token,
 *   teacher parameter perception through a host forward_from, and a final
 *   stage queried by the perceived tokens;
 * - f64 central differences through the forward, both stages included;
 * - bind errors naming both taps, the tensors' names and flags;
 * - the example job (Swin teacher -> ResNet student) runs a few steps. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "loss_fixture.h"
#include "tensor_bag.h"
#include "plugin_fixture.h"

#define PARITY_TOL 1e-6
#define FD_TOL 1e-6
/* Relative errors are taken against at least this norm (a value that is 0
 * in exact arithmetic comes out of f64 sums as ~1e-17 on both sides). */
#define NORM_FLOOR 1e-9
#define MAX_CASES 8

/* ------------------------------------------------------------ plumbing */

/* The host's forward_from for perception cases: the teacher's later stage
 * is tanh(x @ M) over the channels of an NHWC map, from tap "tstage" to
 * "tnorm", so the Python side can run the same function. */
typedef struct stage_host {
    kd_tensor *m; /* [C, C2] */
    int calls;
    kd_host_services services;
} stage_host;

static kd_status stage_forward_from(void *host, kd_model_role role, const char *from,
                                    kd_tensor *input, const char *to, bool training,
                                    kd_tensor **out)
{
    stage_host *h = host;
    if (role != KD_ROLE_TEACHER || strcmp(from, "tstage") || strcmp(to, "tnorm") || training)
        return kd_error(KD_ERR_INVALID, "test host: forward_from(%d, %s, %s, training %d)",
                        (int)role, from, to, (int)training);
    h->calls++;
    *out = kd_tanh(kd_matmul(input, h->m));
    return *out ? KD_OK : kd_last_status();
}

static void stage_host_init(stage_host *h, kd_tensor *m)
{
    h->m = m;
    h->calls = 0;
    h->services = (kd_host_services){.size = sizeof(kd_host_services), .host = h,
                                     .world_size = 1, .forward_from = stage_forward_from};
}

/* One case: the student map [Cs, H, W], the teacher's token-space tap and
 * (with perception) its target tap, shapes without the batch. */
typedef struct scalekd_case {
    const char *name, *params, *layout; /* layout: "nhwc", "nchw", "tokens:P" */
    int64_t batch;
    int64_t s[3];
    int t_ndim;
    int64_t t[3];
    int64_t target_c; /* perception: the stage's output channels; 0: none */
    int64_t fin[3];   /* the final student stage's map; zeros: none */
} scalekd_case;

static const scalekd_case CASES[] = {
    {"NHWC teacher 4x4x16, student 6x4x4, 4 heads, defaults otherwise",
     "{\"student_tap\": \"s\", \"teacher_tap\": \"tstage\", \"perception\": false, "
     "\"heads\": 4}", "nhwc", 3, {6, 4, 4}, 3, {4, 4, 16}, 0, {0, 0, 0}},
    {"NCHW teacher 8x3x3 from a 6x6 student, 2 heads, scale 2, weights 1 and 0.5",
     "{\"student_tap\": \"s\", \"teacher_tap\": \"tstage\", \"perception\": false, "
     "\"heads\": 2, \"softmax_scale\": 2, \"spatial_weight\": 1, \"frequency_weight\": 0.5}",
     "nchw", 2, {5, 6, 6}, 3, {8, 3, 3}, 0, {0, 0, 0}},
    {"token teacher (cls + 2x2 grid, 12-d), 3 heads",
     "{\"student_tap\": \"s\", \"teacher_tap\": \"tstage\", \"perception\": false, "
     "\"heads\": 3}", "tokens:1", 4, {4, 3, 3}, 2, {5, 12}, 0, {0, 0, 0}},
    {"perception: NHWC 3x3x8 through the teacher stage to 6 channels, 2 heads",
     "{\"student_tap\": \"s\", \"teacher_tap\": \"tstage\", \"target_tap\": \"tnorm\", "
     "\"heads\": 2}", "nhwc", 2, {4, 5, 5}, 3, {3, 3, 8}, 6, {0, 0, 0}},
    {"two stages: perception, then a 6x3x3 final map queried by the perceived tokens",
     "{\"student_tap\": \"s\", \"final_student_tap\": \"s4\", \"teacher_tap\": \"tstage\", "
     "\"target_tap\": \"tnorm\", \"heads\": 2, \"spatial_weight\": 0.5}", "nhwc", 3,
     {4, 5, 5}, 3, {3, 3, 8}, 6, {6, 3, 3}},
};
#define N_CASES (int)(sizeof CASES / sizeof CASES[0])

static kd_tap_shape shape_of(int ndim, const int64_t *dims)
{
    kd_tap_shape s = {.ndim = ndim + 1};
    s.shape[0] = 1;
    for (int d = 0; d < ndim; d++)
        s.shape[d + 1] = dims[d];
    return s;
}

static kd_tap_info info_of(const char *layout, int64_t channels)
{
    kd_tap_info info = {"tap", (int)channels, 1, KD_LAYOUT_NCHW, 0};
    if (!strcmp(layout, "nhwc"))
        info.layout = KD_LAYOUT_NHWC;
    else if (!strncmp(layout, "tokens:", 7)) {
        info.layout = KD_LAYOUT_TOKENS;
        info.prefix_tokens = atoi(layout + 7);
    }
    return info;
}

/* The perception target tap: NHWC [h, w, target_c] of the token space. */
static void target_dims(const scalekd_case *c, int64_t *dims)
{
    dims[0] = c->t[0], dims[1] = c->t[1], dims[2] = c->target_c;
}

static kd_status bind_case(const kt_loss *l, const scalekd_case *c, const kd_host_services *host)
{
    int64_t td[3];
    target_dims(c, td);
    kd_tap_shape ss[2] = {shape_of(3, c->s), shape_of(3, c->fin)},
                 ts[2] = {shape_of(c->t_ndim, c->t), shape_of(3, td)};
    kd_tap_info si[2] = {info_of("nchw", c->s[0]), info_of("nchw", c->fin[0])},
                ti[2] = {info_of(c->layout, c->t[c->t_ndim - 1]), info_of("nhwc", td[2])};
    if (!strcmp(c->layout, "nchw"))
        ti[0].channels = (int)c->t[0];
    const kd_bind_args args = {sizeof args, ss, ts, si, ti, host};
    return l->vt->bind(l->self, &args);
}

static kd_tensor *batch_of(int64_t batch, int ndim, const int64_t *dims, kd_rng *rng)
{
    kd_tap_shape s = shape_of(ndim, dims);
    s.shape[0] = batch;
    return kt_uniform(KD_F64, s.ndim, s.shape, rng, -1, 2);
}

static kd_tensor_list loss_tensors(const kt_loss *l)
{
    kd_tensor_list list = {0};
    if (l->vt->tensors(l->self, &list) != KD_OK)
        list.n = 0;
    return list;
}

static void zero_param_grads(const kd_tensor_list *list)
{
    for (int i = 0; i < list->n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(list, i);
        kd_tensor_zero_grad(nt->tensor);
        kd_tensor_set_requires_grad(nt->tensor, (nt->flags & KD_TENSOR_PARAM) != 0);
    }
}

/* The loss (and its two terms) with backward when want_grad; NAN with the
 * message in kd_last_error() on failure. */
static double run_loss(const kt_loss *l, kd_tensor *const *s, kd_tensor *const *teacher,
                       bool want_grad, double *terms)
{
    const kd_loss_args args = {sizeof args, s, teacher, NULL, NULL, NULL, 0, 0, true,
                               kd_rng_make(0, 0, 0)};
    kd_scope_begin();
    kd_loss_result r = {.size = sizeof r};
    double v = NAN;
    if (l->vt->forward(l->self, &args, &r) == KD_OK &&
        (!want_grad || kd_backward(r.loss) == KD_OK)) {
        v = kd_tensor_get(r.loss, 0);
        for (int i = 0; terms && i < r.n_terms && i < 2; i++)
            terms[i] = kd_tensor_get(r.terms[i].value, 0);
    }
    kd_scope_end();
    return v;
}

/* The inputs of a case, made from its seed. */
typedef struct case_data {
    kd_tensor *s[2], *teacher[2], *m; /* s: the student's map and final map */
    stage_host host;
} case_data;

static void case_data_make(const scalekd_case *c, int index, case_data *d)
{
    kd_rng rng = kd_rng_make(900 + (uint64_t)index, 1, 0);
    int64_t td[3], md[2] = {c->t[2], c->target_c};
    target_dims(c, td);
    d->s[0] = batch_of(c->batch, 3, c->s, &rng);
    d->s[1] = c->fin[0] ? batch_of(c->batch, 3, c->fin, &rng) : NULL;
    d->teacher[0] = batch_of(c->batch, c->t_ndim, c->t, &rng);
    d->teacher[1] = c->target_c ? batch_of(c->batch, 3, td, &rng) : NULL;
    d->m = c->target_c ? kt_uniform(KD_F64, 2, md, &rng, -0.5, 0.5) : NULL;
    stage_host_init(&d->host, d->m);
}

static void case_data_free(case_data *d)
{
    kd_tensor_free(d->s[0]);
    kd_tensor_free(d->s[1]);
    kd_tensor_free(d->teacher[0]);
    kd_tensor_free(d->teacher[1]);
    kd_tensor_free(d->m);
}

static void run_case(int c, kt_bag *in, kt_bag *mine, char *error, size_t error_size)
{
    const scalekd_case *sc = &CASES[c];
    kt_loss l;
    case_data d;
    case_data_make(sc, c, &d);
    if (!kt_loss_open(sc->name, "scalekd", sc->params, KD_F64, 300 + (uint64_t)c, &l)) {
        snprintf(error, error_size, "did not load");
        case_data_free(&d);
        return;
    }
    if (bind_case(&l, sc, &d.host.services) != KD_OK) {
        snprintf(error, error_size, "bind: %s", kd_last_error());
        goto done;
    }
    kd_tensor_list list = loss_tensors(&l);
    for (int i = 0; i < list.n; i++)
        kt_bag_add(in, kd_tensor_list_at(&list, i)->tensor, "k%d.init.%s", c,
                kd_tensor_list_at(&list, i)->name);
    kt_bag_add(in, d.s[0], "k%d.s", c);
    if (d.s[1])
        kt_bag_add(in, d.s[1], "k%d.fin", c);
    kt_bag_add(in, d.teacher[0], "k%d.t", c);
    if (d.m) {
        kt_bag_add(in, d.teacher[1], "k%d.target", c);
        kt_bag_add(in, d.m, "k%d.stage", c);
    }
    zero_param_grads(&list);
    for (int i = 0; i < 2; i++)
        if (d.s[i])
            kd_tensor_set_requires_grad(d.s[i], true);
    double terms[2] = {NAN, NAN};
    double v = run_loss(&l, d.s, d.teacher, true, terms);
    if (isnan(v))
        snprintf(error, error_size, "%s", kd_last_error());
    else if (d.m && d.host.calls != 2)
        snprintf(error, error_size, "perception called forward_from %d times, not 2",
                 d.host.calls);
    char key[64];
    snprintf(key, sizeof key, "k%d.value", c);
    kt_bag_add_value(mine, v, key);
    snprintf(key, sizeof key, "k%d.spatial", c);
    kt_bag_add_value(mine, terms[0], key);
    snprintf(key, sizeof key, "k%d.frequency", c);
    kt_bag_add_value(mine, terms[1], key);
    kt_bag_add(mine, d.s[0]->grad, "k%d.grad.s", c);
    if (d.s[1])
        kt_bag_add(mine, d.s[1]->grad, "k%d.grad.fin", c);
    for (int i = 0; i < list.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        if (nt->flags & KD_TENSOR_PARAM)
            kt_bag_add(mine, nt->tensor->grad, "k%d.grad.%s", c, nt->name);
        else
            kt_bag_add(mine, nt->tensor, "k%d.final.%s", c, nt->name);
    }
done:
    kt_loss_close(&l);
    case_data_free(&d);
}

/* ------------------------------------------------------------ parity */

static double norm_of(const kd_tensor *t)
{
    double norm = 0;
    for (int64_t i = 0; i < kd_tensor_numel(t); i++)
        norm += kd_tensor_get(t, i) * kd_tensor_get(t, i);
    return sqrt(norm);
}

/* ||a - b|| / max(||b||, floor). */
static double rel_error(const kd_tensor *a, const kd_tensor *b, double floor)
{
    double diff = 0;
    for (int64_t i = 0; i < kd_tensor_numel(b); i++) {
        double x = kd_tensor_get(a, i), y = kd_tensor_get(b, i);
        diff += (x - y) * (x - y);
    }
    return sqrt(diff) / fmax(norm_of(b), floor);
}

/* The norm a bias gradient is measured against: its layer's weight
 * gradient's. Some are 0 in exact arithmetic (the key bias shifts every
 * logit of a softmax row alike; fc2's bias is a constant the frequency
 * view's mean removal cancels) and come out of f64 sums as the rounding
 * of the per-position terms that layer's weight gradient sums, so that is
 * their scale. */
static double bias_floor(const char *name, const kd_safetensors *ref)
{
    size_t len = strlen(name);
    if (len < 5 || strcmp(name + len - 5, ".bias") != 0)
        return NORM_FLOOR;
    char weight[192];
    snprintf(weight, sizeof weight, "%.*s.weight", (int)(len - 5), name);
    kd_tensor *w = kd_safetensors_find(ref, weight) ? kd_safetensors_load(ref, weight, KD_F64)
                                                    : NULL;
    double floor = w ? fmax(norm_of(w), NORM_FLOOR) : NORM_FLOOR;
    kd_tensor_free(w);
    return floor;
}

/* Every tensor of `mine` under prefix against the reference's: one result
 * per case, its worst relative error. */
static void compare_case(const char *name, const char *prefix, const char *error,
                         const kt_bag *mine, const kd_safetensors *ref)
{
    if (error[0]) {
        kt_fail(name, "kdengine: %s", error);
        return;
    }
    char key[64];
    snprintf(key, sizeof key, "%serror", prefix);
    const char *err = kd_safetensors_metadata(ref, key);
    if (err) {
        kt_fail(name, "torch: %s", err);
        return;
    }
    double worst = 0;
    const char *where = "";
    int compared = 0;
    for (int i = 0; i < mine->n; i++) {
        if (strncmp(mine->names[i], prefix, strlen(prefix)) != 0)
            continue;
        kd_tensor *want = kd_safetensors_find(ref, mine->names[i])
                              ? kd_safetensors_load(ref, mine->names[i], KD_F64)
                              : NULL;
        double e = want && mine->t[i] && kd_tensor_same_shape(want, mine->t[i])
                       ? rel_error(mine->t[i], want, bias_floor(mine->names[i], ref))
                       : INFINITY;
        if (!(e <= worst)) {
            worst = e;
            where = mine->names[i];
        }
        compared++;
        kd_tensor_free(want);
    }
    kt_check(compared > 0 && worst <= PARITY_TOL, name,
             "%d tensors compared, worst relative error %.3g at %s (limit %g)", compared, worst,
             where, PARITY_TOL);
}

static void test_parity(void)
{
    static char errors[N_CASES][512];
    kt_bag in = {0}, mine = {0};
    char keys[2 * N_CASES][32], count[16];
    const char *meta[4 * N_CASES + 2];
    int nmeta = 0;
    for (int c = 0; c < N_CASES; c++) {
        run_case(c, &in, &mine, errors[c], sizeof errors[c]);
        snprintf(keys[2 * c], sizeof keys[0], "k%d.params", c);
        snprintf(keys[2 * c + 1], sizeof keys[0], "k%d.layout", c);
        meta[2 * nmeta] = keys[2 * c];
        meta[2 * nmeta++ + 1] = CASES[c].params;
        meta[2 * nmeta] = keys[2 * c + 1];
        meta[2 * nmeta++ + 1] = CASES[c].layout;
    }
    snprintf(count, sizeof count, "%d", N_CASES);
    meta[2 * nmeta] = "cases";
    meta[2 * nmeta++ + 1] = count;

    kd_safetensors *ref = NULL;
    if (!kt_bag_run_reference("scalekd parity", "tests/parity/torch_scalekd.py", &in, nmeta, meta, &ref))
        goto cleanup;
    for (int c = 0; c < N_CASES; c++) {
        char name[192], prefix[16];
        snprintf(name, sizeof name, "parity scalekd %s", CASES[c].name);
        snprintf(prefix, sizeof prefix, "k%d.", c);
        compare_case(name, prefix, errors[c], &mine, ref);
    }
cleanup:
    kd_safetensors_close(ref);
    kt_bag_free(&in);
    kt_bag_free(&mine);
}

/* ------------------------------------------------------------ gradients */

/* Central differences at up to 12 evenly spaced elements of each probe,
 * against the gradient backward left in it: steps h = 1e-5 and h / 2,
 * Richardson-combined so the h² truncation cancels (the sharpened
 * attention's third derivatives are large) while rounding stays at
 * ~eps · f / h. A ReLU kink
 * within a step of the probe makes the difference meaningless there; such
 * an element shows as one-sided slopes that differ by far more than the
 * curvature allows (1e-3 against ~1e-6 · f''), is counted and passed
 * over, and at most one in twenty may be. */
static void test_gradients(int c)
{
    const scalekd_case *sc = &CASES[c];
    char name[192];
    snprintf(name, sizeof name, "f64 gradient vs finite differences: %s", sc->name);
    kt_loss l;
    case_data d;
    case_data_make(sc, c, &d);
    if (!kt_loss_open(name, "scalekd", sc->params, KD_F64, 50 + (uint64_t)c, &l)) {
        case_data_free(&d);
        return;
    }
    if (bind_case(&l, sc, &d.host.services) != KD_OK) {
        kt_fail(name, "bind: %s", kd_last_error());
        goto done;
    }
    kd_tensor_list list = loss_tensors(&l);
    kd_tensor *probe[2 + 4 * 24] = {d.s[0], d.s[1]};
    const char *labels[2 + 4 * 24] = {"student map", "final student map"};
    int n = d.s[1] ? 2 : 1, params = 0;
    for (int i = 0; i < list.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        if (nt->flags & KD_TENSOR_PARAM) {
            probe[n] = nt->tensor;
            labels[n++] = nt->name;
            params++;
        }
    }
    zero_param_grads(&list);
    for (int i = 0; i < 2; i++)
        if (d.s[i])
            kd_tensor_set_requires_grad(d.s[i], true);
    double at = run_loss(&l, d.s, d.teacher, true, NULL);
    if (isnan(at)) {
        kt_fail(name, "%s", kd_last_error());
        goto done;
    }
    const double h = 1e-5;
    double worst = 0;
    int kinks = 0, probed = 0;
    char where[160] = "";
    for (int i = 0; i < n; i++) {
        kd_tensor *t = probe[i];
        int64_t numel = kd_tensor_numel(t), stride = numel > 12 ? numel / 12 : 1;
        double *x = kd_tensor_data(t);
        for (int64_t e = 0; e < numel; e += stride) {
            double analytic = t->grad ? kd_tensor_get(t->grad, e) : NAN, keep = x[e];
            double f[4]; /* at +h, -h, +h/2, -h/2 */
            static const double steps[4] = {1, -1, 0.5, -0.5};
            for (int k = 0; k < 4; k++) {
                x[e] = keep + steps[k] * h;
                f[k] = run_loss(&l, d.s, d.teacher, false, NULL);
            }
            x[e] = keep;
            double wide = (f[0] - f[1]) / (2 * h), narrow = (f[2] - f[3]) / h;
            double numeric = (4 * narrow - wide) / 3;
            probed++;
            if (fabs((f[0] - at) - (at - f[1])) / h > 1e-3 * fmax(1, fabs(numeric))) {
                kinks++;
                continue;
            }
            double err = fabs(analytic - numeric) / fmax(1, fabs(numeric));
            if (!(err <= worst)) {
                worst = err;
                snprintf(where, sizeof where, "%s[%lld]: %.9g vs %.9g", labels[i],
                         (long long)e, analytic, numeric);
            }
        }
    }
    /* 22 parameters a projector, 21 without a query table */
    int want_params = sc->fin[0] ? 2 * 22 + 2 * 21 : 2 * 22;
    kt_check(params == want_params && worst <= FD_TOL && 20 * kinks <= probed, name,
             "%d parameters probed, %d of %d elements at a kink, worst error %.3g at %s "
             "(limit %g)", params, kinks, probed, worst, where, FD_TOL);
done:
    kt_loss_close(&l);
    case_data_free(&d);
}

/* ------------------------------------------------------------ errors */

static void test_bind_errors(void)
{
    static const struct {
        const char *name, *params, *part1, *part2;
        scalekd_case c;
    } bad[] = {
        {"bind: a pooled student vector names both taps", "{\"student_tap\": \"pre_logits\", "
         "\"teacher_tap\": \"stage3\", \"perception\": false}", "'pre_logits' [1, 8]",
         "'stage3'", {NULL, NULL, "nhwc", 1, {8, 1, 1}, 3, {2, 2, 8}, 0, {0, 0, 0}}},
        {"bind: tokens off a square grid name both taps", "{\"student_tap\": \"stage3\", "
         "\"teacher_tap\": \"blocks.3\", \"perception\": false, \"heads\": 2}", "'stage3'",
         "'blocks.3' [1, 7, 8]", {NULL, NULL, "tokens:1", 1, {4, 3, 3}, 2, {7, 8}, 0, {0, 0, 0}}},
        {"bind: heads that do not divide the channels", "{\"student_tap\": \"stage3\", "
         "\"teacher_tap\": \"tstage\", \"perception\": false, \"heads\": 3}", "heads 3",
         "'tstage'", {NULL, NULL, "nhwc", 1, {4, 3, 3}, 3, {2, 2, 8}, 0, {0, 0, 0}}},
        {"bind: perception without forward_from", "{\"student_tap\": \"stage3\", "
         "\"teacher_tap\": \"tstage\", \"target_tap\": \"tnorm\", \"heads\": 2}",
         "forward_from", "'tstage'", {NULL, NULL, "nhwc", 1, {4, 3, 3}, 3, {2, 2, 8}, 4, {0, 0, 0}}},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        kt_loss l;
        if (!kt_loss_open(bad[k].name, "scalekd", bad[k].params, KD_F64, 1, &l))
            continue;
        const scalekd_case *c = &bad[k].c;
        kd_status st;
        if (k == 0) { /* an [N, C] student tap */
            kd_tap_shape ss = {2, {1, 8}}, ts = shape_of(3, c->t);
            kd_tap_info si = {"pre_logits", 8, 1, KD_LAYOUT_NC, 0}, ti = info_of("nhwc", 8);
            const kd_bind_args args = {sizeof args, &ss, &ts, &si, &ti, NULL};
            st = l.vt->bind(l.self, &args);
        } else {
            st = bind_case(&l, c, NULL);
        }
        kt_expect_error(bad[k].name, st, bad[k].part1, bad[k].part2);
        if (k == 0)
            kt_expect_error("bind: the pooled-vector error names the teacher tap", st,
                         bad[k].part2, "[1, 2, 2, 8]");
        kt_loss_close(&l);
    }
}

static void test_tensors(void)
{
    const char *name = "tensors: two projectors of 24, BN statistics as buffers, sized at bind";
    kt_loss l;
    if (!kt_loss_open(name, "scalekd", CASES[0].params, KD_F64, 1, &l))
        return;
    bool ok = bind_case(&l, &CASES[0], NULL) == KD_OK;
    kd_tensor_list list = loss_tensors(&l);
    ok = ok && list.n == 48;
    for (int i = 0; ok && i < list.n; i++) {
        const kd_named_tensor *nt = kd_tensor_list_at(&list, i);
        bool stat = strstr(nt->name, "running_") != NULL;
        ok = (nt->flags & (stat ? KD_TENSOR_BUFFER : KD_TENSOR_PARAM)) != 0;
        if (!strcmp(nt->name, "frequency.k.weight"))
            ok = ok && nt->tensor->shape[0] == 16 && nt->tensor->shape[1] == 6;
        if (!strcmp(nt->name, "spatial.pos_embed"))
            ok = ok && nt->tensor->shape[1] == 6 && nt->tensor->shape[2] == 4;
        if (!strcmp(nt->name, "spatial.query"))
            ok = ok && nt->tensor->shape[0] == 16 && nt->tensor->shape[1] == 16;
    }
    kt_check(ok, name, "%d tensors", list.n);
    kt_loss_close(&l);
}

/* ------------------------------------------------------------ the job */

static int kdengine(char **out, const char *args)
{
    char root[512], cmd[4096];
    kt_source_path("", root, sizeof root);
    snprintf(cmd, sizeof cmd, "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine %s 2>&1", root,
             kt_plugin_dir(), KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

/* The ViT teacher's initial weights (kdengine export of vit-teacher.json),
 * then 2 steps of examples/fashion-mnist/scalekd.json on them. */
static void test_example(const char *jobdir)
{
    const char *name = "examples/fashion-mnist/scalekd.json runs 2 steps from an exported ViT";
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_skip(name, "no Fashion-MNIST (scripts/setup installs it)");
        return;
    }
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "export examples/fashion-mnist/vit-teacher.json --out "
             "%s/teacher.safetensors", jobdir);
    int rc = kdengine(&out, args);
    if (!kt_check(rc == 0, "kdengine export: the ViT teacher's initial weights", "exit %d: %s",
                  rc, out ? out : "(none)")) {
        free(out);
        return;
    }
    free(out);
    out = NULL;
    snprintf(args, sizeof args, "run examples/fashion-mnist/scalekd.json --set "
             "data.train.subset=32 --set data.train.batch_size=16 --set data.val.subset=16 "
             "--set schedule.epochs=1 --set log.every_steps=1 --set teacher.weights=%s/teacher"
             ".safetensors --set output=%s/run", jobdir, jobdir);
    rc = kdengine(&out, args);
    kt_check(rc == 0 && out && strstr(out, "done: 2 steps") && strstr(out, "scalekd "), name,
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    out = NULL;
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/run/checkpoints/step-000000002.safetensors", jobdir);
    kd_safetensors *f = NULL;
    bool saved = kd_safetensors_open(ckpt, &f) == KD_OK &&
                 kd_safetensors_find(f, "loss.2.spatial.query") &&
                 kd_safetensors_find(f, "loss.2.final_frequency.q.weight") &&
                 !kd_safetensors_find(f, "loss.2.final_frequency.query") &&
                 kd_safetensors_find(f, "loss.2.frequency.bn.running_var");
    kd_safetensors_close(f);
    kt_check(saved, "the run's checkpoint holds the four projectors (no table for the final two)",
             "%s: %s", ckpt, kd_last_error());
    snprintf(args, sizeof args, "validate examples/fashion-mnist/scalekd.json --set "
             "teacher.weights=%s/teacher.safetensors --set losses[2].student_tap=pre_logits",
             jobdir);
    rc = kdengine(&out, args);
    kt_check(rc == 1 && out && strstr(out, "losses[2]") &&
             strstr(out, "'pre_logits' [1, 64]") && strstr(out, "'blocks.2' [1, 65, 192]"),
             "validate: a pooled student tap is refused naming both taps and shapes",
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
}

int main(void)
{
    test_parity();
    test_gradients(0);
    test_gradients(2);
    test_gradients(3);
    test_gradients(4);
    test_bind_errors();
    test_tensors();
    char jobdir[] = "/tmp/kdscalekdjob.XXXXXX";
    if (mkdtemp(jobdir)) {
        test_example(jobdir);
        kt_remove_tree(jobdir);
    } else {
        kt_fail("example job", "mkdtemp failed");
    }
    kt_plugins_close();
    return kt_finish();
}
