/* Augmentation against timm 0.9.16: Mixup/CutMix (plugins/data/mixup),
 * RandomErasing (plugins/data/random_erasing) and RandAugment
 * (plugins/data/randaugment, on Pillow 9.4's arithmetic); all of them in a
 * job (reproducible across worker counts, bit-exact on resume, the teacher
 * seeing the mixed batch) and examples/fashion-mnist/kd-mixup.json for two
 * steps.
 *
 * Parity: tests/parity/timm_augment.py (one process for the whole file)
 * runs timm on the cases of the tables below. Mixup records what timm drew
 * and the C kernels are driven with the same draws. The sample transforms
 * get the kd_rng a loader would hand them, and timm's Python `random` (and
 * numpy choice) calls are answered from the same rng's words (KdStream in
 * the script), so both make the same decisions. Either way images and
 * targets must be equal bit for bit.
 *
 * Sampling, against timm's own generators: two-sample Kolmogorov-Smirnov
 * tests (lambdas, box sides, magnitudes, erased areas), chi-square tests
 * of op choices and two-proportion z tests (cutmix switch, ops applied),
 * all at fixed seeds and significance 0.001. Plugins: the providers
 * through the registry, replay from the rng key, errors. */
#include "config.h"

#include "harness.h"
#include "plugin_fixture.h"

#include "../plugins/data/mixup/mix_plan.h"
#include "../plugins/data/randaugment/rand_augment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool contains(const char *haystack, const char *needle)
{
    return haystack && strstr(haystack, needle) != NULL;
}

/* ------------------------------------------------------------ statistics */

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Two-sample Kolmogorov-Smirnov statistic: the largest gap between the
 * empirical distribution functions (ties stepped together). Sorts a, b. */
static double ks_statistic(double *a, int64_t na, double *b, int64_t nb)
{
    qsort(a, (size_t)na, sizeof *a, compare_doubles);
    qsort(b, (size_t)nb, sizeof *b, compare_doubles);
    int64_t i = 0, j = 0;
    double d = 0;
    while (i < na && j < nb) {
        double v = a[i] < b[j] ? a[i] : b[j];
        while (i < na && a[i] == v)
            i++;
        while (j < nb && b[j] == v)
            j++;
        double gap = fabs((double)i / (double)na - (double)j / (double)nb);
        d = gap > d ? gap : d;
    }
    return d;
}

/* The statistic's critical value at significance 0.001 (asymptotic:
 * c(alpha) = sqrt(-ln(alpha / 2) / 2) = 1.949); conservative for
 * distributions with atoms. */
static double ks_critical(int64_t na, int64_t nb)
{
    return sqrt(-log(0.001 / 2) / 2) * sqrt((double)(na + nb) / ((double)na * (double)nb));
}

/* Two-proportion z statistic. */
static double proportion_z(int64_t ka, int64_t na, int64_t kb, int64_t nb)
{
    double pa = (double)ka / (double)na, pb = (double)kb / (double)nb;
    double p = (double)(ka + kb) / (double)(na + nb);
    double se = sqrt(p * (1 - p) * (1.0 / (double)na + 1.0 / (double)nb));
    return se > 0 ? fabs(pa - pb) / se : 0;
}

/* |z| above this has probability 0.001 under the null. */
#define Z_CRITICAL 3.29

/* ------------------------------------------------------------- fixtures */

static kd_safetensors *fixtures;

static kd_tensor *fixture(const char *fmt, int i, kd_dtype dtype)
{
    char key[64];
    snprintf(key, sizeof key, fmt, i);
    kd_tensor *t = fixtures ? kd_safetensors_load(fixtures, key, dtype) : NULL;
    if (!t)
        fprintf(stderr, "fixture %s: %s\n", key, kd_last_error());
    return t;
}

/* ------------------------------------------------------------- mixup */

typedef struct mix_case {
    const char *mode;
    double mixup_alpha, cutmix_alpha, minmax[2], prob, switch_prob;
    bool correct_lam;
    double smoothing;
    int n, c, h, w, classes, seed;
} mix_case;

/* Seeds picked so that, between them, every branch runs: blends, boxes
 * (centred and min/max, clipped at borders), unmixed units. */
static const mix_case MIX_CASES[] = {
    {"batch", 1.0, 0.0, {0, 0}, 1.0, 0.5, true, 0.1, 8, 3, 16, 16, 10, 1},
    {"batch", 0.0, 1.0, {0, 0}, 1.0, 0.5, true, 0.1, 8, 3, 16, 12, 10, 2},
    {"batch", 0.8, 1.0, {0, 0}, 1.0, 0.5, true, 0.0, 6, 1, 9, 11, 7, 3},
    {"batch", 0.8, 1.0, {0, 0}, 1.0, 0.5, true, 0.2, 6, 3, 9, 11, 7, 4},
    {"batch", 0.8, 1.0, {0, 0}, 1.0, 0.5, false, 0.1, 6, 3, 9, 11, 7, 5},
    {"batch", 0.0, 0.0, {0.2, 0.8}, 1.0, 0.5, true, 0.1, 4, 2, 20, 10, 5, 6},
    {"batch", 0.3, 1.0, {0, 0}, 0.5, 0.5, true, 0.1, 4, 3, 8, 8, 3, 7},
    {"elem", 0.8, 1.0, {0, 0}, 0.7, 0.5, true, 0.1, 8, 3, 10, 10, 10, 8},
    {"elem", 0.0, 0.5, {0, 0}, 1.0, 0.5, false, 0.0, 6, 2, 7, 13, 4, 9},
    {"elem", 0.4, 0.0, {0, 0}, 0.8, 0.5, true, 0.3, 6, 3, 5, 5, 1000, 10},
    {"pair", 0.8, 1.0, {0, 0}, 0.8, 0.5, true, 0.1, 8, 3, 12, 12, 10, 11},
    {"pair", 0.8, 0.0, {0.3, 0.9}, 1.0, 0.7, true, 0.1, 6, 1, 14, 9, 10, 12},
};
#define N_MIX_CASES ((int)(sizeof MIX_CASES / sizeof MIX_CASES[0]))

static kd_mix_config config_of(const char *mode, double mixup_alpha, double cutmix_alpha,
                               const double minmax[2], double prob, double switch_prob,
                               bool correct_lam, double smoothing)
{
    kd_mix_config cfg = {mixup_alpha, cutmix_alpha, minmax[1] > 0, {minmax[0], minmax[1]},
                         prob, switch_prob, KD_MIX_BATCH, correct_lam, smoothing};
    cfg.mode = strcmp(mode, "elem") == 0 ? KD_MIX_ELEM
               : strcmp(mode, "pair") == 0 ? KD_MIX_PAIR : KD_MIX_BATCH;
    if (cfg.has_minmax)
        cfg.cutmix_alpha = 1.0;
    return cfg;
}

typedef struct mix_stat {
    double mixup_alpha, cutmix_alpha, minmax[2], prob, switch_prob;
    bool correct_lam;
    int h, w, seed;
} mix_stat;

static const mix_stat MIX_STATS[] = {
    {0.8, 1.0, {0, 0}, 1.0, 0.5, true, 32, 32, 21},
    {0.2, 0.0, {0, 0}, 0.6, 0.5, true, 32, 32, 22},
    {0.0, 0.0, {0.2, 0.8}, 1.0, 0.5, true, 40, 24, 23},
    {0.0, 0.5, {0, 0}, 0.9, 0.5, false, 32, 32, 24},
    {1.0, 0.3, {0, 0}, 1.0, 0.2, true, 17, 29, 25},
};
#define N_MIX_STATS ((int)(sizeof MIX_STATS / sizeof MIX_STATS[0]))
#define STAT_DRAWS 20000
#define BOX_ROWS 400

static void spec_mixup(FILE *f)
{
    fprintf(f, "\"mixup_cases\": [");
    for (int i = 0; i < N_MIX_CASES; i++) {
        const mix_case *c = &MIX_CASES[i];
        fprintf(f, "%s{\"mode\": \"%s\", \"mixup_alpha\": %.17g, \"cutmix_alpha\": %.17g, ",
                i ? ", " : "", c->mode, c->mixup_alpha, c->cutmix_alpha);
        if (c->minmax[1] > 0)
            fprintf(f, "\"minmax\": [%.17g, %.17g], ", c->minmax[0], c->minmax[1]);
        else
            fprintf(f, "\"minmax\": null, ");
        fprintf(f, "\"prob\": %.17g, \"switch_prob\": %.17g, \"correct_lam\": %s, "
                   "\"smoothing\": %.17g, \"shape\": [%d, %d, %d, %d], \"classes\": %d, "
                   "\"seed\": %d}",
                c->prob, c->switch_prob, c->correct_lam ? "true" : "false", c->smoothing, c->n,
                c->c, c->h, c->w, c->classes, c->seed);
    }
    fprintf(f, "], \"mixup_boxes\": {\"seed\": 31, \"count\": %d}, \"mixup_stats\": [",
            BOX_ROWS);
    for (int i = 0; i < N_MIX_STATS; i++) {
        const mix_stat *s = &MIX_STATS[i];
        fprintf(f, "%s{\"mode\": \"batch\", \"mixup_alpha\": %.17g, \"cutmix_alpha\": %.17g, ",
                i ? ", " : "", s->mixup_alpha, s->cutmix_alpha);
        if (s->minmax[1] > 0)
            fprintf(f, "\"minmax\": [%.17g, %.17g], ", s->minmax[0], s->minmax[1]);
        else
            fprintf(f, "\"minmax\": null, ");
        fprintf(f, "\"prob\": %.17g, \"switch_prob\": %.17g, \"correct_lam\": %s, "
                   "\"smoothing\": 0.1, \"image\": [%d, %d], \"draws\": %d, \"seed\": %d}",
                s->prob, s->switch_prob, s->correct_lam ? "true" : "false", s->h, s->w,
                STAT_DRAWS, s->seed);
    }
    fprintf(f, "]");
}

/* timm's draws of case i, replayed through kd_mix_elem_from into a plan. */
static bool plan_from_timm(int i, const kd_mix_config *cfg, const mix_case *c,
                           kd_mix_elem *plan)
{
    kd_tensor *lam = fixture("mix%d.lam", i, KD_F64), *cut = fixture("mix%d.cut", i, KD_I64);
    kd_tensor *boxes = fixture("mix%d.box", i, KD_I64);
    if (!lam || !cut || !boxes)
        return false;
    int64_t units = kd_mix_units(cfg, c->n), used = 0;
    bool ok = lam->shape[0] == units;
    const double *l = kd_tensor_data(lam);
    const int64_t *k = kd_tensor_data(cut), *b = kd_tensor_data(boxes);
    for (int64_t u = 0; ok && u < units; u++) {
        kd_mix_draw d = {l[u] != 1.0, k[u] != 0, l[u]};
        kd_mix_box box = {0, 0, 0, 0};
        if (d.apply && d.cutmix) {
            ok = used < boxes->shape[0];
            if (ok)
                box = (kd_mix_box){b[4 * used], b[4 * used + 1], b[4 * used + 2],
                                   b[4 * used + 3]};
            used++;
        }
        kd_mix_elem_from(cfg, d, box, c->h, c->w, &plan[u]);
    }
    kd_mix_plan_expand(cfg, c->n, plan);
    ok = ok && used == boxes->shape[0];
    kd_tensor_free(lam);
    kd_tensor_free(cut);
    kd_tensor_free(boxes);
    return ok;
}

static void test_mixup_parity(void)
{
    int exact = 0, blends = 0, boxes = 0;
    for (int i = 0; i < N_MIX_CASES; i++) {
        const mix_case *c = &MIX_CASES[i];
        kd_mix_config cfg = config_of(c->mode, c->mixup_alpha, c->cutmix_alpha, c->minmax,
                                      c->prob, c->switch_prob, c->correct_lam, c->smoothing);
        kd_mix_elem plan[16];
        kd_tensor *x = fixture("mix%d.x", i, KD_F32), *labels = fixture("mix%d.labels", i, KD_I64);
        kd_tensor *want_x = fixture("mix%d.out", i, KD_F32);
        kd_tensor *want_t = fixture("mix%d.target", i, KD_F32);
        char name[96];
        snprintf(name, sizeof name, "mixup case %d (%s) against timm", i, c->mode);
        if (!x || !labels || !want_x || !want_t || !plan_from_timm(i, &cfg, c, plan)) {
            kt_fail(name, "fixtures missing or timm's draws do not fit the plan");
        } else {
            int64_t image = (int64_t)c->n * c->c * c->h * c->w;
            float *got_x = malloc((size_t)image * sizeof *got_x);
            float *got_t = malloc((size_t)c->n * (size_t)c->classes * sizeof *got_t);
            kd_mix_images(plan, c->n, c->c, c->h, c->w, kd_tensor_data(x), got_x);
            kd_status st = kd_mix_targets(&cfg, plan, c->n, c->classes, kd_tensor_data(labels),
                                          NULL, got_t);
            bool same_x = memcmp(got_x, kd_tensor_data(want_x), (size_t)image * 4) == 0;
            bool same_t = st == KD_OK && memcmp(got_t, kd_tensor_data(want_t),
                                                (size_t)c->n * (size_t)c->classes * 4) == 0;
            for (int e = 0; e < c->n; e++) {
                blends += plan[e].mixed && !plan[e].cutmix;
                boxes += plan[e].mixed && plan[e].cutmix;
            }
            exact += same_x && same_t;
            kt_check(same_x && same_t, name, "images %s, targets %s",
                     same_x ? "equal" : "differ", same_t ? "equal" : "differ");
            free(got_x);
            free(got_t);
        }
        kd_tensor_free(x);
        kd_tensor_free(labels);
        kd_tensor_free(want_x);
        kd_tensor_free(want_t);
    }
    kt_check(blends > 0 && boxes > 0, "mixup cases cover blends and boxes",
             "%d blended and %d boxed elements", blends, boxes);
    printf("  mixup: %d/%d cases bit-equal to timm (%d blended, %d boxed elements)\n", exact,
           N_MIX_CASES, blends, boxes);
}

static void test_mixup_boxes(void)
{
    kd_tensor *in = fixture("box.in", 0, KD_F64), *out = fixture("box.out", 0, KD_I64);
    if (!in || !out) {
        kt_fail("rand_bbox against timm", "fixtures missing");
        return;
    }
    const double *r = kd_tensor_data(in);
    const int64_t *want = kd_tensor_data(out);
    int64_t bad = 0;
    for (int64_t k = 0; k < in->shape[0]; k++, r += 5, want += 4) {
        kd_mix_box b = kd_mix_box_centred((int64_t)r[0], (int64_t)r[1], r[2], (int64_t)r[3],
                                          (int64_t)r[4]);
        bad += b.top != want[0] || b.bottom != want[1] || b.left != want[2] ||
               b.right != want[3];
    }
    kt_check(bad == 0, "rand_bbox against timm on 400 (size, lambda, centre) rows",
             "%lld rows differ", (long long)bad);
    kd_tensor_free(in);
    kd_tensor_free(out);
}

/* Our batch-level draws for a stat config: final lambda, cutmix ran, box
 * height. */
static kd_status our_draws(const mix_stat *s, double *lam, double *side, int64_t *cuts)
{
    kd_mix_config cfg = config_of("batch", s->mixup_alpha, s->cutmix_alpha, s->minmax, s->prob,
                                  s->switch_prob, s->correct_lam, 0.1);
    kd_rng rng = kd_rng_make((uint64_t)s->seed, 7, 0);
    *cuts = 0;
    for (int k = 0; k < STAT_DRAWS; k++) {
        kd_mix_elem e;
        kd_status st = kd_mix_plan_draw(&cfg, &rng, 1, s->h, s->w, &e);
        if (st != KD_OK)
            return st;
        lam[k] = e.mixed ? e.lam : 1.0;
        bool cut = e.mixed && e.cutmix;
        side[*cuts] = cut ? (double)(e.box.bottom - e.box.top) : 0;
        *cuts += cut;
    }
    return KD_OK;
}

static void test_mixup_sampling(void)
{
    double *ours = malloc(STAT_DRAWS * sizeof *ours), *theirs = malloc(STAT_DRAWS * sizeof *theirs);
    double *our_side = malloc(STAT_DRAWS * sizeof *our_side);
    double *their_side = malloc(STAT_DRAWS * sizeof *their_side);
    double *other = malloc(STAT_DRAWS * sizeof *other);
    double *scratch = malloc(STAT_DRAWS * sizeof *scratch);
    for (int i = 0; i < N_MIX_STATS; i++) {
        const mix_stat *s = &MIX_STATS[i];
        char name[256];
        snprintf(name, sizeof name,
                 "mixup sampling %d (mixup %g, cutmix %g, minmax [%g, %g], prob %g, switch %g) "
                 "matches timm", i, s->mixup_alpha, s->cutmix_alpha, s->minmax[0], s->minmax[1],
                 s->prob, s->switch_prob);
        kd_tensor *lam = fixture("stat%d.lam", i, KD_F64), *cut = fixture("stat%d.cut", i, KD_I64);
        kd_tensor *side = fixture("stat%d.side", i, KD_I64);
        int64_t our_cuts = 0;
        if (!lam || !cut || !side || lam->shape[0] != STAT_DRAWS ||
            our_draws(s, ours, our_side, &our_cuts) != KD_OK) {
            kt_fail(name, "fixtures missing or drawing failed: %s", kd_last_error());
        } else {
            memcpy(theirs, kd_tensor_data(lam), STAT_DRAWS * sizeof *theirs);
            const int64_t *tc = kd_tensor_data(cut), *ts = kd_tensor_data(side);
            int64_t their_cuts = 0;
            for (int k = 0; k < STAT_DRAWS; k++)
                if (tc[k])
                    their_side[their_cuts++] = (double)ts[k];
            double d_lam = ks_statistic(ours, STAT_DRAWS, theirs, STAT_DRAWS);
            double crit = ks_critical(STAT_DRAWS, STAT_DRAWS);
            double z = proportion_z(our_cuts, STAT_DRAWS, their_cuts, STAT_DRAWS);
            double d_side = 0, crit_side = 0;
            if (our_cuts > 0 && their_cuts > 0) {
                d_side = ks_statistic(our_side, our_cuts, their_side, their_cuts);
                crit_side = ks_critical(our_cuts, their_cuts);
            }
            bool ok = d_lam < crit && z < Z_CRITICAL && d_side <= crit_side &&
                      (our_cuts > 0) == (their_cuts > 0);
            printf("  mixup sampling %d: lambda D %.4f / %.4f, cutmix z %.2f / %.2f, box height "
                   "D %.4f / %.4f\n", i, d_lam, crit, z, Z_CRITICAL, d_side, crit_side);
            kt_check(ok, name,
                     "KS lambda D %.4f (critical %.4f), cutmix %lld vs %lld (z %.2f), KS box "
                     "height D %.4f (critical %.4f)",
                     d_lam, crit, (long long)our_cuts, (long long)their_cuts, z, d_side,
                     crit_side);
            if (i == 0) {
                /* The same statistic must see a wrong distribution: our draws
                 * for config 1 (mixup 0.2) against timm's for config 0. */
                int64_t cuts1;
                if (our_draws(&MIX_STATS[1], other, scratch, &cuts1) == KD_OK) {
                    memcpy(theirs, kd_tensor_data(lam), STAT_DRAWS * sizeof *theirs);
                    double d_wrong = ks_statistic(other, STAT_DRAWS, theirs, STAT_DRAWS);
                    kt_check(d_wrong > crit, "the KS test rejects another config's lambdas",
                             "D %.4f, critical %.4f", d_wrong, crit);
                }
            }
        }
        kd_tensor_free(lam);
        kd_tensor_free(cut);
        kd_tensor_free(side);
    }
    free(ours);
    free(theirs);
    free(our_side);
    free(their_side);
    free(other);
    free(scratch);
}

/* Odd batches (timm refuses them): pair mode leaves the middle element
 * alone and mirrors the rest; an earlier transform's soft targets are
 * mixed as they are (no second smoothing). */
static void test_mixup_odd_and_chained(void)
{
    kd_mix_config cfg = config_of("pair", 0.8, 1.0, (const double[]){0, 0}, 1.0, 0.5, true, 0.1);
    kd_mix_elem plan[5];
    bool mirrored = true, middle_alone = true, any = false;
    for (uint64_t k = 0; k < 50; k++) {
        kd_rng rng = kd_rng_make(8, 8, k);
        if (kd_mix_plan_draw(&cfg, &rng, 5, 6, 6, plan) != KD_OK)
            mirrored = false;
        for (int i = 0; i < 2; i++)
            mirrored = mirrored && plan[i].mixed == plan[4 - i].mixed &&
                       plan[i].lam == plan[4 - i].lam && plan[i].box.top == plan[4 - i].box.top;
        middle_alone = middle_alone && !plan[2].mixed && plan[2].lam == 1.0;
        any = any || plan[0].mixed;
    }
    kt_check(mirrored && middle_alone && any,
             "mixup pair mode, odd batch: pairs mirrored, the middle element unmixed",
             "mirrored %d, middle alone %d, any mixed %d", mirrored, middle_alone, any);

    /* lam 0.75 on rows of quarters: every product and sum is exact */
    kd_mix_elem blend[3] = {{true, false, 0.75, {0, 0, 0, 0}},
                            {false, false, 1.0, {0, 0, 0, 0}},
                            {true, false, 0.75, {0, 0, 0, 0}}};
    const float soft[9] = {1, 0, 0, 0.5f, 0.5f, 0, 0, 0.25f, 0.75f};
    const int64_t labels[3] = {0, 1, 2};
    const float want[9] = {0.75f, 0.0625f, 0.1875f, 0.5f, 0.5f, 0, 0.25f, 0.1875f, 0.5625f};
    float got[9];
    kd_status st = kd_mix_targets(&cfg, blend, 3, 3, labels, soft, got);
    kt_check(st == KD_OK && memcmp(got, want, sizeof got) == 0,
             "mixup mixes an earlier transform's soft targets as they are",
             "row 0: %g %g %g", got[0], got[1], got[2]);
    const int64_t bad[3] = {0, 3, 1};
    st = kd_mix_targets(&cfg, blend, 3, 3, bad, NULL, got);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "label 3 of batch element 1"),
             "mixup refuses a label outside the classes", "status %d: %s", st, kd_last_error());
}

/* ---------------------------------------------------- mixup as a plugin */

typedef struct batch_plugin {
    const kd_batch_transform_vtable *vt;
    void *self;
} batch_plugin;

static kd_status open_batch(const char *name, const char *json, batch_plugin *b)
{
    const kd_vtable_header *h = NULL;
    b->self = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_BATCH_TRANSFORM, name, &h);
    if (!e)
        return kd_error(KD_ERR_INVALID, "%s is not in the plugin dir", name);
    b->vt = (const kd_batch_transform_vtable *)h;
    kd_params *p = kt_params(e, json);
    if (!p)
        return kd_error(KD_ERR_INVALID, "%s: parameters %s do not validate", name, json);
    kd_create_args args = kt_create_args(e, p, 1);
    kd_status st = b->vt->create(&args, &b->self);
    kd_params_free(p);
    return st;
}

/* Applies b to a fixed random batch with the rng of (seed 9, step); copies
 * images and targets out (n 6, 3 x 8 x 8, 5 classes). */
static kd_status mix_batch(batch_plugin *b, uint64_t step, float *images, float *targets)
{
    kd_status st = kd_scope_begin();
    if (st != KD_OK)
        return st;
    kd_rng data = kd_rng_make(3, 3, 3);
    const int64_t shape[4] = {6, 3, 8, 8};
    kd_tensor *x = kt_uniform(KD_F32, 4, shape, &data, -2, 2);
    int64_t y[6] = {0, 1, 2, 3, 4, 0};
    kd_tensor *labels = kd_tensor_from_data(KD_I64, 1, (const int64_t[]){6}, y);
    kd_batch_args args = {sizeof args, x, labels, NULL, 5, kd_rng_make(9, 1, step)};
    st = x && labels ? b->vt->apply(b->self, &args) : kd_last_status();
    if (st == KD_OK) {
        memcpy(images, kd_tensor_data(args.images), 6 * 3 * 8 * 8 * sizeof *images);
        memcpy(targets, kd_tensor_data(args.soft_targets), 6 * 5 * sizeof *targets);
    }
    kd_tensor_free(labels);
    kd_scope_end();
    return st;
}

static void test_mixup_plugin(void)
{
    batch_plugin b;
    kd_status st = open_batch("mixup", "{\"mixup_alpha\": 0.8, \"cutmix_alpha\": 1.0, "
                              "\"mode\": \"elem\"}", &b);
    if (!kt_check(st == KD_OK, "mixup plugin loads", "%s", kd_last_error()))
        return;
    float a[6 * 192], a_t[30], again[6 * 192], again_t[30], other[6 * 192], other_t[30];
    st = mix_batch(&b, 4, a, a_t);
    if (st == KD_OK)
        st = mix_batch(&b, 4, again, again_t);
    if (st == KD_OK)
        st = mix_batch(&b, 5, other, other_t);
    if (kt_check(st == KD_OK, "mixup plugin applies", "%s", kd_last_error())) {
        kt_check(memcmp(a, again, sizeof a) == 0 && memcmp(a_t, again_t, sizeof a_t) == 0,
                 "mixup: the same (seed, step) mixes the same", "outputs differ");
        kt_check(memcmp(a, other, sizeof a) != 0 && memcmp(a_t, other_t, sizeof a_t) != 0,
                 "mixup: another step mixes differently", "outputs equal");
        double worst = 0;
        for (int i = 0; i < 6; i++) {
            double sum = 0;
            for (int k = 0; k < 5; k++)
                sum += a_t[i * 5 + k];
            worst = fmax(worst, fabs(sum - 1));
        }
        kt_check(worst < 1e-6, "mixup: every target row sums to 1", "off by %g", worst);
    }
    b.vt->destroy(b.self);

    /* "cutmix" pastes boxes only: every value is its own or its partner's */
    batch_plugin cut;
    st = open_batch("cutmix", "{}", &cut);
    int pasted = 0, foreign = 0;
    for (uint64_t step = 0; st == KD_OK && step < 4; step++) {
        float ref[6 * 192];
        st = mix_batch(&cut, step, a, a_t);
        if (st != KD_OK)
            break;
        /* the unmixed batch, from a mixup that never fires */
        kd_rng data = kd_rng_make(3, 3, 3);
        kd_tensor *x = kt_uniform(KD_F32, 4, (const int64_t[]){6, 3, 8, 8}, &data, -2, 2);
        memcpy(ref, kd_tensor_data(x), sizeof ref);
        kd_tensor_free(x);
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 192; k++) {
                float v = a[i * 192 + k];
                pasted += v != ref[i * 192 + k];
                foreign += v != ref[i * 192 + k] && v != ref[(5 - i) * 192 + k];
            }
    }
    kt_check(st == KD_OK && pasted > 0 && foreign == 0,
             "cutmix provider (defaults): boxes of the partner's pixels only",
             "%d values pasted, %d neither own nor partner's: %s", pasted, foreign,
             st == KD_OK ? "" : kd_last_error());
    if (cut.self)
        cut.vt->destroy(cut.self);
    batch_plugin both;
    st = open_batch("mixup_cutmix", "{}", &both);
    kt_check(st == KD_OK && mix_batch(&both, 1, a, a_t) == KD_OK, "mixup_cutmix provider applies",
             "%s", kd_last_error());
    if (both.self)
        both.vt->destroy(both.self);

    batch_plugin none;
    st = open_batch("mixup", "{\"mixup_alpha\": 0}", &none);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "nothing would be mixed"),
             "mixup: both alphas 0 is refused", "status %d: %s", st, kd_last_error());
    if (st == KD_OK)
        none.vt->destroy(none.self);
    st = open_batch("mixup", "{\"cutmix_minmax\": [0.8, 0.2]}", &none);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "cutmix_minmax"),
             "mixup: an inverted cutmix_minmax is refused", "status %d: %s", st,
             kd_last_error());
    if (st == KD_OK)
        none.vt->destroy(none.self);
}

/* ------------------------------------------------------ sample transforms */

typedef struct sample_plugin {
    const kd_transform_vtable *vt;
    void *self;
} sample_plugin;

static kd_status open_sample(const char *name, const char *json, sample_plugin *t)
{
    const kd_vtable_header *h = NULL;
    t->self = NULL;
    const kd_registry_entry *e = kt_provider(KD_KIND_TRANSFORM, name, &h);
    if (!e)
        return kd_error(KD_ERR_INVALID, "%s is not in the plugin dir", name);
    t->vt = (const kd_transform_vtable *)h;
    kd_params *p = kt_params(e, json);
    if (!p)
        return kd_error(KD_ERR_INVALID, "%s: parameters %s do not validate", name, json);
    kd_create_args args = kt_create_args(e, p, 1);
    kd_status st = t->vt->create(&args, &t->self);
    kd_params_free(p);
    return st;
}

/* The 32-bit words of rng from its counter on, for the Python side. */
static void spec_words(FILE *f, kd_rng rng, int count)
{
    fprintf(f, "\"words\": [");
    for (int k = 0; k < count; k++)
        fprintf(f, "%s%u", k ? ", " : "", kd_rng_u32(&rng));
    fprintf(f, "]");
}

/* ------------------------------------------------------- random erasing */

typedef struct erase_case {
    double probability, min_area, max_area, min_aspect, max_aspect;
    const char *mode;
    int min_count, max_count, c, h, w;
} erase_case;

static const erase_case ERASE_CASES[] = {
    {1.0, 0.02, 1.0 / 3, 0.3, 0, "const", 1, 0, 3, 10, 12},
    {0.5, 0.02, 1.0 / 3, 0.3, 0, "const", 1, 0, 3, 10, 12},
    {1.0, 0.1, 0.4, 0.5, 3.0, "rand", 1, 3, 3, 16, 9},
    {1.0, 0.02, 1.0 / 3, 0.3, 0, "pixel", 1, 0, 3, 10, 12},
    {1.0, 0.02, 1.0 / 3, 0.3, 0, "pixel", 2, 4, 1, 14, 14},
    {1.0, 0.5, 0.9, 0.3, 0, "const", 1, 0, 2, 6, 6},
    {0.8, 0.02, 0.25, 0.2, 0, "rand", 1, 2, 3, 32, 32},
};
#define N_ERASE_CASES ((int)(sizeof ERASE_CASES / sizeof ERASE_CASES[0]))
#define ERASE_REPEATS 6 /* keys per case */
#define ERASE_WORDS 3072

static kd_rng erase_key(int i, int r) { return kd_rng_make(17, 11, (uint64_t)(i * 100 + r)); }

static void spec_erasing(FILE *f)
{
    fprintf(f, "\"erasing_cases\": [");
    for (int i = 0; i < N_ERASE_CASES; i++)
        for (int r = 0; r < ERASE_REPEATS; r++) {
            const erase_case *c = &ERASE_CASES[i];
            fprintf(f, "%s{\"probability\": %.17g, \"min_area\": %.17g, \"max_area\": %.17g, "
                       "\"min_aspect\": %.17g, \"max_aspect\": %.17g, \"mode\": \"%s\", "
                       "\"min_count\": %d, \"max_count\": %d, \"shape\": [%d, %d, %d], "
                       "\"seed\": %d, ",
                    i + r ? ", " : "", c->probability, c->min_area, c->max_area, c->min_aspect,
                    c->max_aspect, c->mode, c->min_count, c->max_count, c->c, c->h, c->w,
                    100 + i * ERASE_REPEATS + r);
            spec_words(f, erase_key(i, r), ERASE_WORDS);
            fprintf(f, "}");
        }
    fprintf(f, "]");
}

static void test_erasing_parity(void)
{
    for (int i = 0; i < N_ERASE_CASES; i++) {
        const erase_case *c = &ERASE_CASES[i];
        char json[512], name[128];
        snprintf(json, sizeof json,
                 "{\"probability\": %.17g, \"min_area\": %.17g, \"max_area\": %.17g, "
                 "\"min_aspect\": %.17g, \"max_aspect\": %.17g, \"mode\": \"%s\", "
                 "\"min_count\": %d, \"max_count\": %d}",
                 c->probability, c->min_area, c->max_area, c->min_aspect, c->max_aspect, c->mode,
                 c->min_count, c->max_count);
        snprintf(name, sizeof name, "random_erasing case %d (%s, count %d..%d) equals timm", i,
                 c->mode, c->min_count, c->max_count ? c->max_count : c->min_count);
        sample_plugin t;
        if (open_sample("random_erasing", json, &t) != KD_OK) {
            kt_fail(name, "%s", kd_last_error());
            continue;
        }
        int equal = 0, erased = 0;
        for (int r = 0; r < ERASE_REPEATS; r++) {
            int k = i * ERASE_REPEATS + r;
            kd_tensor *x = fixture("erase%d.x", k, KD_F32);
            kd_tensor *want = fixture("erase%d.out", k, KD_F32);
            size_t n = (size_t)c->c * (size_t)c->h * (size_t)c->w;
            kd_sample in = {c->h, c->w, c->c, KD_F32, x ? kd_tensor_data(x) : NULL, n * 4};
            kd_sample out = {0, 0, 0, KD_U8, NULL, 0};
            kd_rng rng = erase_key(i, r);
            if (x && want && t.vt->apply(t.self, &in, &out, &rng) == KD_OK) {
                equal += memcmp(out.data, kd_tensor_data(want), n * 4) == 0;
                erased += memcmp(out.data, in.data, n * 4) != 0;
            }
            free(out.data);
            kd_tensor_free(x);
            kd_tensor_free(want);
        }
        kt_check(equal == ERASE_REPEATS && (c->probability < 1 || erased > 0), name,
                 "%d of %d keys equal, %d erased", equal, ERASE_REPEATS, erased);
        t.vt->destroy(t.self);
    }
}

/* Erased fractions of our draws against timm's with Python's own
 * generator (a KS test, as for mixup). */
static const erase_case ERASE_STATS[] = {
    {0.5, 0.02, 1.0 / 3, 0.3, 0, "const", 1, 0, 3, 32, 32},
    {1.0, 0.1, 0.4, 0.5, 0, "const", 1, 3, 1, 24, 40},
};
#define N_ERASE_STATS 2
#define ERASE_DRAWS 4000

static void spec_erasing_stats(FILE *f)
{
    fprintf(f, "\"erasing_stats\": [");
    for (int i = 0; i < N_ERASE_STATS; i++) {
        const erase_case *c = &ERASE_STATS[i];
        fprintf(f, "%s{\"probability\": %.17g, \"min_area\": %.17g, \"max_area\": %.17g, "
                   "\"min_aspect\": %.17g, \"min_count\": %d, \"max_count\": %d, "
                   "\"shape\": [%d, %d, %d], \"draws\": %d, \"seed\": %d}",
                i ? ", " : "", c->probability, c->min_area, c->max_area, c->min_aspect,
                c->min_count, c->max_count, c->c, c->h, c->w, ERASE_DRAWS, 60 + i);
    }
    fprintf(f, "]");
}

static void test_erasing_sampling(void)
{
    for (int i = 0; i < N_ERASE_STATS; i++) {
        const erase_case *c = &ERASE_STATS[i];
        char json[256], name[160];
        snprintf(json, sizeof json,
                 "{\"probability\": %.17g, \"min_area\": %.17g, \"max_area\": %.17g, "
                 "\"min_aspect\": %.17g, \"min_count\": %d, \"max_count\": %d}",
                 c->probability, c->min_area, c->max_area, c->min_aspect, c->min_count,
                 c->max_count);
        snprintf(name, sizeof name,
                 "random_erasing sampling (p %g, area [%g, %g], count %d..%d) matches timm's",
                 c->probability, c->min_area, c->max_area, c->min_count,
                 c->max_count ? c->max_count : c->min_count);
        sample_plugin t;
        kd_tensor *theirs = fixture("erase_stat%d", i, KD_F64);
        if (!theirs || open_sample("random_erasing", json, &t) != KD_OK) {
            kt_fail(name, "fixtures missing or plugin refused: %s", kd_last_error());
            kd_tensor_free(theirs);
            continue;
        }
        size_t n = (size_t)c->c * (size_t)c->h * (size_t)c->w;
        float *ones = malloc(n * sizeof *ones);
        double *ours = malloc(ERASE_DRAWS * sizeof *ours);
        for (size_t k = 0; k < n; k++)
            ones[k] = 1;
        kd_sample in = {c->h, c->w, c->c, KD_F32, ones, n * sizeof *ones}, out = {0};
        for (int k = 0; k < ERASE_DRAWS; k++) {
            kd_rng rng = kd_rng_make(61, 12, (uint64_t)k);
            size_t zeros = 0;
            if (t.vt->apply(t.self, &in, &out, &rng) == KD_OK)
                for (size_t v = 0; v < n; v++)
                    zeros += ((const float *)out.data)[v] == 0;
            ours[k] = (double)zeros / (double)n;
        }
        double d = ks_statistic(ours, ERASE_DRAWS, kd_tensor_data(theirs), theirs->shape[0]);
        double crit = ks_critical(ERASE_DRAWS, theirs->shape[0]);
        printf("  random_erasing sampling %d: erased fraction D %.4f / %.4f\n", i, d, crit);
        kt_check(theirs->shape[0] == ERASE_DRAWS && d < crit, name,
                 "KS erased fraction D %.4f (critical %.4f)", d, crit);
        free(out.data);
        free(ones);
        free(ours);
        kd_tensor_free(theirs);
        t.vt->destroy(t.self);
    }
}

static void test_erasing_plugin(void)
{
    sample_plugin t;
    kd_status st = open_sample("random_erasing", "{\"probability\": 1, \"mode\": \"pixel\"}", &t);
    if (!kt_check(st == KD_OK, "random_erasing loads", "%s", kd_last_error()))
        return;
    float x[3 * 20 * 20];
    for (int k = 0; k < 3 * 20 * 20; k++)
        x[k] = (float)k;
    kd_sample in = {20, 20, 3, KD_F32, x, sizeof x};
    kd_sample a = {0}, b = {0}, c = {0};
    kd_rng r1 = kd_rng_make(5, 1, 2), r2 = kd_rng_make(5, 1, 2), r3 = kd_rng_make(5, 1, 3);
    st = t.vt->apply(t.self, &in, &a, &r1);
    if (st == KD_OK)
        st = t.vt->apply(t.self, &in, &b, &r2);
    if (st == KD_OK)
        st = t.vt->apply(t.self, &in, &c, &r3);
    if (kt_check(st == KD_OK, "random_erasing applies", "%s", kd_last_error())) {
        kt_check(memcmp(a.data, b.data, sizeof x) == 0,
                 "random_erasing: the same key erases the same",
                 "outputs differ");
        kt_check(memcmp(a.data, c.data, sizeof x) != 0,
                 "random_erasing: another key erases differently",
                 "outputs equal");
    }
    uint8_t pixels[12] = {0};
    kd_sample u8 = {2, 2, 3, KD_U8, pixels, sizeof pixels};
    kd_rng r4 = kd_rng_make(5, 1, 4);
    st = t.vt->apply(t.self, &u8, &c, &r4);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "after normalize"),
             "random_erasing refuses u8 images, naming the order", "status %d: %s", st,
             kd_last_error());
    free(a.data);
    free(b.data);
    free(c.data);
    t.vt->destroy(t.self);
}

/* ---------------------------------------------------------- randaugment */

typedef struct ra_shape {
    int h, w, c;
    int fill[3]; /* img_mean */
} ra_shape;

static const ra_shape RA_SHAPES[] = {
    {13, 17, 3, {124, 116, 104}},
    {12, 10, 1, {73, 0, 0}},
    {16, 16, 3, {128, 128, 128}},
    {1, 2, 3, {10, 20, 30}},
    {3, 1, 1, {200, 0, 0}},
    {64, 80, 3, {124, 116, 104}},
    {96, 128, 3, {124, 116, 104}},
};
static const double RA_MAGNITUDES[] = {0, 4, 9, 10};
static const char *const RA_FILTERS[] = {"random", "nearest", "bilinear", "bicubic"};
#define N_RA_MAGNITUDES 4
#define RA_WORDS 96

/* Every op x the first two shapes x magnitudes x (geometric ops) filters,
 * and on the tiny shapes (one pixel row or column: Pillow's edge rules)
 * and a 64 x 80 image at magnitudes 4 and 10. */
typedef struct ra_op_case {
    kd_ra_op op;
    int shape;
    double magnitude;
    int filter; /* index in RA_FILTERS */
} ra_op_case;

static int ra_op_cases(ra_op_case *cases)
{
    int n = 0;
    static const int shapes[] = {0, 1, 3, 4, 5};
    for (int op = 0; op < KD_RA_OP_COUNT; op++)
        for (int sh = 0; sh < 5; sh++)
            for (int m = shapes[sh] > 2 ? 1 : 0; m < N_RA_MAGNITUDES; m += shapes[sh] > 2 ? 2 : 1)
                for (int f = 0; f < (kd_ra_is_geometric((kd_ra_op)op) ? 4 : 1); f++) {
                    if (cases)
                        cases[n] = (ra_op_case){(kd_ra_op)op, shapes[sh], RA_MAGNITUDES[m], f};
                    n++;
                }
    return n;
}

typedef struct ra_case {
    const char *config;
    int shape;
    const char *filter;
    double translate_pct; /* 0: timm's default */
} ra_case;

static const ra_case RA_CASES[] = {
    {"rand-m9-mstd0.5-inc1", 0, "random", 0},
    {"rand-m9-mstd0.5-inc1", 1, "random", 0},
    {"rand-m9-n3", 0, "random", 0},
    {"rand-m7-n2-p1.0", 2, "bilinear", 0.3},
    {"rand-m10-mstd101-inc1", 0, "bicubic", 0},
    {"rand-m15-mmax20-n4-mstd2", 1, "nearest", 0},
    {"rand-m5-n2-inc0", 0, "random", 0},
    {"rand-m30-mmax30-n2-p1", 2, "random", 0},
    {"rand-m9-n2-mstd1-incx-foo", 0, "random", 0},
    {"rand-m9-n3-tweights-mstd0.5", 0, "random", 0},
    {"rand-m8-n5-tweights-p0.9", 1, "bicubic", 0},
    {"rand-m9-n2-t3a", 0, "random", 0},
    {"rand-m7-n3-t3aw-mstd0.5", 2, "random", 0},
    {"rand-m10-n2-t3a-p1", 1, "random", 0},
    {"rand-m9-mstd0.5-inc1", 6, "random", 0},
    {"rand-m12-mstd3-mmax15-mstd0-mmax10-m8", 0, "random", 0},
    {"rand-n0", 1, "random", 0},
};
#define N_RA_CASES ((int)(sizeof RA_CASES / sizeof RA_CASES[0]))
#define RA_KEYS 12

static const char *const RA_STAT_CONFIGS[] = {"rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.8-mstd101",
                                              "rand-m9-mstd3-mmax12", "rand-m9-n3-tweights",
                                              "rand-m9-t3aw-mstd1", "rand-m6-n3-t3a"};
#define N_RA_STATS 6
#define RA_STAT_IMAGES 10000

static kd_rng ra_op_key(int i) { return kd_rng_make(23, 5, (uint64_t)i); }
static kd_rng ra_key(int i, int k) { return kd_rng_make(29, 6, (uint64_t)(i * 1000 + k)); }

static void spec_ra_hparams(FILE *f, const ra_shape *s, const char *filter, double pct)
{
    fprintf(f, "\"shape\": [%d, %d, %d], \"img_mean\": [%d", s->h, s->w, s->c, s->fill[0]);
    for (int c = 1; c < s->c; c++)
        fprintf(f, ", %d", s->fill[c]);
    fprintf(f, "], \"interpolation\": \"%s\", ", filter);
    if (pct > 0)
        fprintf(f, "\"translate_pct\": %.17g, ", pct);
}

static void spec_randaugment(FILE *f)
{
    int n = ra_op_cases(NULL);
    ra_op_case *cases = malloc((size_t)n * sizeof *cases);
    ra_op_cases(cases);
    fprintf(f, "\"ra_ops\": [");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s{\"op\": \"%s\", \"magnitude\": %.17g, \"seed\": %d, ", i ? ", " : "",
                kd_ra_op_name(cases[i].op), cases[i].magnitude, 300 + i);
        spec_ra_hparams(f, &RA_SHAPES[cases[i].shape], RA_FILTERS[cases[i].filter], 0);
        spec_words(f, ra_op_key(i), RA_WORDS);
        fprintf(f, "}");
    }
    free(cases);
    fprintf(f, "], \"ra_cases\": [");
    for (int i = 0; i < N_RA_CASES; i++)
        for (int k = 0; k < RA_KEYS; k++) {
            const ra_case *c = &RA_CASES[i];
            fprintf(f, "%s{\"config\": \"%s\", \"seed\": %d, ", i + k ? ", " : "", c->config,
                    900 + i * RA_KEYS + k);
            spec_ra_hparams(f, &RA_SHAPES[c->shape], c->filter, c->translate_pct);
            spec_words(f, ra_key(i, k), RA_WORDS);
            fprintf(f, "}");
        }
    fprintf(f, "], \"ra_stats\": [");
    for (int i = 0; i < N_RA_STATS; i++)
        fprintf(f, "%s{\"config\": \"%s\", \"draws\": %d, \"seed\": %d}", i ? ", " : "",
                RA_STAT_CONFIGS[i], RA_STAT_IMAGES, 41 + i);
    fprintf(f, "]");
}

static int filter_of(const char *name)
{
    return strcmp(name, "nearest") == 0    ? KD_PIL_NEAREST
           : strcmp(name, "bilinear") == 0 ? KD_PIL_BILINEAR
           : strcmp(name, "bicubic") == 0  ? KD_PIL_BICUBIC
                                           : KD_RA_RANDOM_FILTER;
}

/* Differences between two u8 images: count and largest. */
static int64_t u8_diff(const uint8_t *a, const uint8_t *b, size_t n, int *largest)
{
    int64_t count = 0;
    *largest = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        count += d != 0;
        *largest = d > *largest ? d : *largest;
    }
    return count;
}

static void test_ra_ops(void)
{
    int n = ra_op_cases(NULL);
    ra_op_case *cases = malloc((size_t)n * sizeof *cases);
    ra_op_cases(cases);
    int per_op_cases[KD_RA_OP_COUNT] = {0}, per_op_exact[KD_RA_OP_COUNT] = {0};
    int64_t per_op_pixels[KD_RA_OP_COUNT] = {0};
    int per_op_largest[KD_RA_OP_COUNT] = {0};
    for (int i = 0; i < n; i++) {
        const ra_op_case *c = &cases[i];
        const ra_shape *s = &RA_SHAPES[c->shape];
        kd_ra_config cfg;
        kd_ra_parse("rand", &cfg);
        cfg.translate_pct = 0.45;
        cfg.filter = filter_of(RA_FILTERS[c->filter]);
        for (int k = 0; k < 3; k++)
            cfg.fill[k] = (uint8_t)s->fill[s->c == 1 ? 0 : k];
        kd_tensor *in = fixture("ra_op%d.in", i, KD_U8), *want = fixture("ra_op%d.out", i, KD_U8);
        size_t bytes = (size_t)s->h * (size_t)s->w * (size_t)s->c;
        per_op_cases[c->op]++;
        if (!in || !want) {
            kd_tensor_free(in);
            kd_tensor_free(want);
            continue;
        }
        uint8_t *got = malloc(bytes), *scratch = malloc(bytes);
        kd_rng rng = ra_op_key(i);
        kd_ra_step step;
        kd_ra_draw_step(&cfg, c->op, c->magnitude, &rng, &step);
        kd_pil_image im = {s->h, s->w, s->c, kd_tensor_data(in)};
        int largest = 0;
        int64_t differ = -1;
        if (kd_ra_apply_step(&cfg, &step, &im, got, scratch) == KD_OK)
            differ = u8_diff(got, kd_tensor_data(want), bytes, &largest);
        per_op_exact[c->op] += differ == 0;
        per_op_pixels[c->op] += differ < 0 ? (int64_t)bytes : differ;
        if (largest > per_op_largest[c->op])
            per_op_largest[c->op] = largest;
        if (differ != 0)
            fprintf(stderr, "  %s m %g %s %dx%dx%d: %lld values differ (largest %d)\n",
                    kd_ra_op_name(c->op), c->magnitude, RA_FILTERS[c->filter], s->h, s->w, s->c,
                    (long long)differ, largest);
        free(got);
        free(scratch);
        kd_tensor_free(in);
        kd_tensor_free(want);
    }
    for (int op = 0; op < KD_RA_OP_COUNT; op++) {
        char name[128];
        snprintf(name, sizeof name, "randaugment %s equals timm/PIL on %d cases",
                 kd_ra_op_name((kd_ra_op)op), per_op_cases[op]);
        kt_check(per_op_exact[op] == per_op_cases[op], name,
                 "%d of %d cases exact; %lld values differ, by up to %d", per_op_exact[op],
                 per_op_cases[op], (long long)per_op_pixels[op], per_op_largest[op]);
    }
    free(cases);
}

static void test_ra_pipeline(void)
{
    for (int i = 0; i < N_RA_CASES; i++) {
        const ra_case *c = &RA_CASES[i];
        const ra_shape *s = &RA_SHAPES[c->shape];
        char json[512], name[160];
        int used = snprintf(json, sizeof json,
                            "{\"config\": \"%s\", \"interpolation\": \"%s\", \"img_mean\": [%d",
                            c->config, c->filter, s->fill[0]);
        for (int k = 1; k < s->c; k++)
            used += snprintf(json + used, sizeof json - (size_t)used, ", %d", s->fill[k]);
        snprintf(json + used, sizeof json - (size_t)used, "], \"translate_pct\": %.17g}",
                 c->translate_pct > 0 ? c->translate_pct : 0.45);
        snprintf(name, sizeof name, "randaugment '%s' (%s, %dx%dx%d) equals timm on %d keys",
                 c->config, c->filter, s->h, s->w, s->c, RA_KEYS);
        sample_plugin t;
        if (open_sample("randaugment", json, &t) != KD_OK) {
            kt_fail(name, "%s", kd_last_error());
            continue;
        }
        int equal = 0, changed = 0;
        int64_t differ = 0;
        int largest = 0;
        for (int k = 0; k < RA_KEYS; k++) {
            int id = i * RA_KEYS + k;
            kd_tensor *x = fixture("ra%d.in", id, KD_U8), *want = fixture("ra%d.out", id, KD_U8);
            size_t n = (size_t)s->h * (size_t)s->w * (size_t)s->c;
            kd_sample in = {s->h, s->w, s->c, KD_U8, x ? kd_tensor_data(x) : NULL, n};
            kd_sample out = {0, 0, 0, KD_U8, NULL, 0};
            kd_rng rng = ra_key(i, k);
            if (x && want && t.vt->apply(t.self, &in, &out, &rng) == KD_OK) {
                int big;
                int64_t d = u8_diff(out.data, kd_tensor_data(want), n, &big);
                equal += d == 0;
                differ += d;
                largest = big > largest ? big : largest;
                changed += memcmp(out.data, in.data, n) != 0;
            }
            free(out.data);
            kd_tensor_free(x);
            kd_tensor_free(want);
        }
        kd_ra_config parsed;
        bool changes = kd_ra_parse(c->config, &parsed) == KD_OK && parsed.num_layers > 0;
        kt_check(equal == RA_KEYS && (changed > 0) == changes, name,
                 "%d of %d keys equal (%lld values differ, by up to %d), %d changed the image",
                 equal, RA_KEYS, (long long)differ, largest, changed);
        t.vt->destroy(t.self);
    }
}

/* Chi-square statistic of a 2 x k table of counts (homogeneity). */
static double chi_square(const int64_t *a, const int64_t *b, int k)
{
    int64_t na = 0, nb = 0;
    for (int j = 0; j < k; j++) {
        na += a[j];
        nb += b[j];
    }
    double x2 = 0;
    for (int j = 0; j < k; j++) {
        double col = (double)(a[j] + b[j]);
        if (col == 0)
            continue;
        double ea = col * (double)na / (double)(na + nb), eb = col * (double)nb / (double)(na + nb);
        x2 += ((double)a[j] - ea) * ((double)a[j] - ea) / ea +
              ((double)b[j] - eb) * ((double)b[j] - eb) / eb;
    }
    return x2;
}

/* The chi-square distribution's 0.999 quantiles, by degrees of freedom
 * (op count - 1). */
static const double CHI2_CRITICAL[] = {0,      10.828, 13.816, 16.266, 18.467, 20.515,
                                       22.458, 24.322, 26.124, 27.877, 29.588, 31.264,
                                       32.909, 34.528, 36.123};

static void test_ra_sampling(void)
{
    for (int i = 0; i < N_RA_STATS; i++) {
        char name[160];
        snprintf(name, sizeof name, "randaugment sampling '%s' matches timm's", RA_STAT_CONFIGS[i]);
        kd_tensor *op = fixture("ra_stat%d.op", i, KD_I64);
        kd_tensor *applied = fixture("ra_stat%d.applied", i, KD_I64);
        kd_tensor *mag = fixture("ra_stat%d.magnitude", i, KD_F64);
        kd_ra_config cfg;
        if (!op || !applied || !mag || kd_ra_parse(RA_STAT_CONFIGS[i], &cfg) != KD_OK) {
            kt_fail(name, "fixtures missing or config refused: %s", kd_last_error());
            kd_tensor_free(op);
            kd_tensor_free(applied);
            kd_tensor_free(mag);
            continue;
        }
        cfg.translate_pct = 0.45;
        cfg.filter = KD_RA_RANDOM_FILTER;
        int64_t theirs_n = op->shape[0], ours_n = (int64_t)RA_STAT_IMAGES * cfg.num_layers;
        int64_t our_ops[KD_RA_OP_COUNT] = {0}, their_ops[KD_RA_OP_COUNT] = {0};
        int64_t our_applied = 0, their_applied = 0, our_m = 0, their_m = 0;
        double *our_mag = malloc((size_t)ours_n * sizeof *our_mag);
        double *their_mag = malloc((size_t)theirs_n * sizeof *their_mag);
        for (int k = 0; k < RA_STAT_IMAGES; k++) {
            kd_rng rng = kd_rng_make(43, 9, (uint64_t)k);
            kd_ra_plan plan;
            kd_ra_draw(&cfg, &rng, &plan);
            for (int s = 0; s < plan.n; s++) {
                int index = 0;
                while (cfg.ops[index] != plan.steps[s].op)
                    index++;
                our_ops[index]++;
                our_applied += plan.steps[s].applied;
                kd_ra_op o = plan.steps[s].op;
                if (plan.steps[s].applied && o != KD_RA_AUTOCONTRAST && o != KD_RA_EQUALIZE &&
                    o != KD_RA_INVERT)
                    our_mag[our_m++] = plan.steps[s].magnitude;
            }
        }
        const int64_t *to = kd_tensor_data(op), *ta = kd_tensor_data(applied);
        const double *tm = kd_tensor_data(mag);
        for (int64_t k = 0; k < theirs_n; k++) {
            their_ops[to[k]]++;
            their_applied += ta[k];
            if (tm[k] >= 0)
                their_mag[their_m++] = tm[k];
        }
        double x2 = chi_square(our_ops, their_ops, cfg.n_ops);
        double z = proportion_z(our_applied, ours_n, their_applied, theirs_n);
        double d = ks_statistic(our_mag, our_m, their_mag, their_m);
        double crit = ks_critical(our_m, their_m);
        double x2_crit = CHI2_CRITICAL[cfg.n_ops - 1];
        printf("  randaugment sampling '%s': op chi2 %.2f / %.2f, applied z %.2f / %.2f, "
               "magnitude D %.4f / %.4f\n", RA_STAT_CONFIGS[i], x2, x2_crit, z, Z_CRITICAL, d,
               crit);
        kt_check(theirs_n == ours_n && x2 < x2_crit && z < Z_CRITICAL && d < crit, name,
                 "%lld vs %lld chosen ops, op counts chi2 %.2f (critical %.2f), applied %lld vs "
                 "%lld (z %.2f), magnitude KS D %.4f (critical %.4f)",
                 (long long)ours_n, (long long)theirs_n, x2, x2_crit,
                 (long long)our_applied, (long long)their_applied, z, d, crit);
        free(our_mag);
        free(their_mag);
        kd_tensor_free(op);
        kd_tensor_free(applied);
        kd_tensor_free(mag);
    }
}

static void test_ra_plugin(void)
{
    sample_plugin t;
    kd_status st = open_sample("randaugment", "{\"config\": \"rand-m9-mstd0.5-inc1\"}", &t);
    if (!kt_check(st == KD_OK, "randaugment loads", "%s", kd_last_error()))
        return;
    uint8_t x[20 * 20 * 3];
    for (int k = 0; k < (int)sizeof x; k++)
        x[k] = (uint8_t)(k * 7 + k / 60);
    kd_sample in = {20, 20, 3, KD_U8, x, sizeof x};
    kd_sample a = {0}, b = {0}, c = {0};
    int same = 0, differ = 0;
    for (int k = 0; k < 8; k++) {
        kd_rng r1 = kd_rng_make(5, 2, (uint64_t)k), r2 = kd_rng_make(5, 2, (uint64_t)k);
        kd_rng r3 = kd_rng_make(5, 2, (uint64_t)k + 100);
        if (t.vt->apply(t.self, &in, &a, &r1) != KD_OK ||
            t.vt->apply(t.self, &in, &b, &r2) != KD_OK ||
            t.vt->apply(t.self, &in, &c, &r3) != KD_OK)
            break;
        same += memcmp(a.data, b.data, sizeof x) == 0;
        differ += memcmp(a.data, c.data, sizeof x) != 0;
    }
    kt_check(same == 8, "randaugment: the same key augments the same", "%d of 8", same);
    kt_check(differ >= 6, "randaugment: other keys augment differently", "%d of 8 differ", differ);
    float f[12] = {0};
    kd_sample tensor = {2, 2, 3, KD_F32, f, sizeof f};
    kd_rng r4 = kd_rng_make(5, 2, 9);
    st = t.vt->apply(t.self, &tensor, &c, &r4);
    kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), "before to_tensor"),
             "randaugment refuses f32 samples, naming the order", "status %d: %s", st,
             kd_last_error());
    free(a.data);
    free(b.data);
    free(c.data);
    t.vt->destroy(t.self);

    static const char *const bad[][2] = {
        {"{\"config\": \"rand-m9-x3\"}", "unknown section"},
        {"{\"config\": \"auto-m9\"}", "must start with 'rand'"},
        {"{\"config\": \"rand-m9-n15-t3aw\"}", "distinct ops"},
        {"{\"config\": \"rand-n17\"}", "outside [0, 16]"},
        {"{\"img_mean\": [1, 2]}", "img_mean takes 1 value or 3"},
    };
    for (int i = 0; i < 5; i++) {
        sample_plugin none;
        char label[128];
        snprintf(label, sizeof label, "randaugment refuses %s", bad[i][0]);
        st = open_sample("randaugment", bad[i][0], &none);
        kt_check(st == KD_ERR_INVALID && contains(kd_last_error(), bad[i][1]), label,
                 "status %d: %s", st, kd_last_error());
        if (st == KD_OK)
            none.vt->destroy(none.self);
    }
}

/* ------------------------------------------------------------------ jobs */

/* IDX files of 8x8 images: 4 classes, one bright quadrant each, noise. */
static bool write_idx_pair(const char *dir, const char *name, uint32_t count, uint64_t seed)
{
    uint8_t *images = malloc(16 + (size_t)count * 64), *labels = malloc(8 + (size_t)count);
    if (!images || !labels) {
        free(images);
        free(labels);
        return false;
    }
    const uint8_t image_head[16] = {0, 0, 8, 3, (uint8_t)(count >> 24), (uint8_t)(count >> 16),
                                    (uint8_t)(count >> 8), (uint8_t)count, 0, 0, 0, 8, 0, 0, 0, 8};
    memcpy(images, image_head, 16);
    memcpy(labels, image_head, 8);
    labels[3] = 1;
    kd_rng rng = kd_rng_make(seed, 7, 0);
    for (uint32_t i = 0; i < count; i++) {
        labels[8 + i] = (uint8_t)(i % 4);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int q = (y >= 4) * 2 + (x >= 4);
                images[16 + i * 64 + (uint32_t)(y * 8 + x)] =
                    (uint8_t)((q == (int)(i % 4) ? 160 : 40) + (int)kd_rng_below(&rng, 80));
            }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images.idx", dir, name);
    bool ok = kt_write_file(path, images, 16 + (size_t)count * 64);
    snprintf(path, sizeof path, "%s/%s-labels.idx", dir, name);
    ok = ok && kt_write_file(path, labels, 8 + (size_t)count);
    free(images);
    free(labels);
    return ok;
}

/* Every augmentation of this change in one supervised job on 8x8 data. */
static const char *const AUG_JOB =
    "{\"seed\": 5, \"threads\": 1, \"output\": \"%s/%s\", \"plugin_dirs\": [\"%s\"],\n"
    " \"data\": {\n"
    "  \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
    "                         \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
    "            \"transforms\": [{\"name\": \"randaugment\", \"config\": \"rand-m9-mstd0.5-inc1\","
    "                              \"img_mean\": [100]},\n"
    "                             {\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]},\n"
    "                             {\"name\": \"random_erasing\", \"mode\": \"pixel\"}],\n"
    "            \"batch_transforms\": [{\"name\": \"mixup\", \"mixup_alpha\": 0.8,\n"
    "                                   \"cutmix_alpha\": 1.0, \"mode\": \"elem\"}],\n"
    "            \"batch_size\": 16, \"workers\": %d},\n"
    "  \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
    "                       \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
    "          \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "          \"batch_size\": 32, \"workers\": 0}},\n"
    " \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
    " \"losses\": [{\"name\": \"ce\"}],\n"
    " \"optim\": {\"name\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9},\n"
    " \"schedule\": {\"name\": \"cosine\", \"epochs\": 3},\n"
    " \"eval\": {\"every_epochs\": 3}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 5},\n"
    " \"log\": {\"every_steps\": 2}}\n";

static int run_kdengine(const char *dir, char **out, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine %s 2>&1", dir, KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

/* Every tensor of two checkpoints, bit for bit (their metadata names the
 * run folder, which differs). */
static bool same_files(const char *a_path, const char *b_path)
{
    kd_safetensors *a = NULL, *b = NULL;
    bool same = kd_safetensors_open(a_path, &a) == KD_OK &&
                kd_safetensors_open(b_path, &b) == KD_OK &&
                kd_safetensors_count(a) == kd_safetensors_count(b) && kd_safetensors_count(a) > 0;
    for (int i = 0; same && i < kd_safetensors_count(a); i++) {
        const kd_safetensors_entry *ea = kd_safetensors_at(a, i);
        const kd_safetensors_entry *eb = kd_safetensors_find(b, ea->name);
        same = eb && ea->nbytes == eb->nbytes && !memcmp(ea->data, eb->data, ea->nbytes);
        if (!same)
            fprintf(stderr, "  %s differs between %s and %s\n", ea->name, a_path, b_path);
    }
    kd_safetensors_close(a);
    kd_safetensors_close(b);
    return same;
}

/* The loss metrics.jsonl logged at `step` of run folder dir/run; NAN if
 * none. */
static double logged_loss(const char *dir, const char *run, int step)
{
    char path[512], want[64];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    snprintf(want, sizeof want, "\"step\":%d,", step);
    size_t len = 0;
    char *text = (char *)kt_read_file(path, &len), *copy = text ? realloc(text, len + 1) : NULL;
    if (!copy) {
        free(text);
        return NAN;
    }
    copy[len] = '\0';
    const char *line = strstr(copy, want), *loss = line ? strstr(line, "\"loss\":") : NULL;
    double v = loss ? atof(loss + 7) : NAN;
    free(copy);
    return v;
}

/* The teacher must see the mixed batch the student sees: with the
 * student's own initial weights and batch statistics (train_bn), KD at the
 * first step is KL(p || p) = 0 up to float32 rounding (measured 7e-9 with
 * mixup, 4e-9 without), which holds only if both models got the same
 * images; the control, a teacher of another seed, gives 0.41. */
static void test_teacher_sees_mixed(const char *dir)
{
    char *out = NULL;
    int rc = run_kdengine(dir, &out, "export aug.json --out init.safetensors");
    free(out);
    rc = rc ? rc : run_kdengine(dir, &out, "export aug.json --set seed=9 --out other.safetensors");
    free(out);
    const char *runs[2] = {"same", "other"};
    for (int i = 0; rc == 0 && i < 2; i++) {
        char args[1024];
        snprintf(args, sizeof args,
                 "run aug.json --set output=%s --set schedule.epochs=1 --set log.every_steps=1 "
                 "--set teacher='{\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1, "
                 "\"weights\": \"%s.safetensors\", \"train_bn\": true}' "
                 "--set losses='[{\"name\": \"kd\", \"temperature\": 1}]'",
                 runs[i], i == 0 ? "init" : "other");
        rc = run_kdengine(dir, &out, args);
        free(out);
    }
    double same = logged_loss(dir, "same", 1), other = logged_loss(dir, "other", 1);
    kt_check(rc == 0 && fabs(same) < 1e-6 && other > 1e-2,
             "job: the teacher sees the mixed batch (KD of the student's own init at step 1 is 0)",
             "exit %d; KD at step 1: same init %.3g, another seed %.3g", rc, same, other);
}

static void test_augmented_job(void)
{
    char dir[] = "/tmp/kdaugjob.XXXXXX";
    if (!mkdtemp(dir) || !write_idx_pair(dir, "train", 96, 1)) {
        kt_fail("augmented job", "cannot write the synthetic data");
        return;
    }
    char text[4096], path[512], other[512], *out = NULL;
    const char *names[] = {"aug", "aug3", "augr"};
    int workers[] = {0, 3, 1};
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof text, AUG_JOB, dir, names[i], kt_plugin_dir(), dir, dir,
                 workers[i], dir, dir);
        snprintf(path, sizeof path, "%s/%s.json", dir, names[i]);
        kt_write_file(path, text, strlen(text));
    }
    int rc = run_kdengine(dir, &out, "run aug.json");
    kt_check(rc == 0 && contains(out, "done: 18 steps"),
             "job: randaugment, random_erasing and mixup train end to end", "exit %d: %s", rc,
             out ? out : "(none)");
    free(out);
    snprintf(path, sizeof path, "%s/aug/checkpoints/step-000000018.safetensors", dir);

    rc = run_kdengine(dir, &out, "run aug3.json");
    free(out);
    snprintf(other, sizeof other, "%s/aug3/checkpoints/step-000000018.safetensors", dir);
    kt_check(rc == 0 && same_files(path, other),
             "job: augmented run reproducible to the bit with 0 and 3 loader workers",
             "exit %d", rc);

    /* resume from the epoch-1 checkpoint: the same end, bit for bit */
    rc = run_kdengine(dir, &out, "run augr.json");
    free(out);
    for (int step = 12; step <= 18; step += 6) {
        snprintf(other, sizeof other, "%s/augr/checkpoints/step-%09d.safetensors", dir, step);
        unlink(other);
    }
    rc = rc == 0 ? run_kdengine(dir, &out, "run augr.json --resume") : rc;
    bool resumed = rc == 0 && contains(out, "resuming from") && contains(out, "step 6");
    free(out);
    snprintf(other, sizeof other, "%s/augr/checkpoints/step-000000018.safetensors", dir);
    kt_check(resumed && same_files(path, other),
             "job: augmented run resumed at epoch 1 equals the uninterrupted one", "exit %d", rc);
    test_teacher_sees_mixed(dir);
    kt_remove_tree(dir);
}

/* examples/fashion-mnist/kd-mixup.json for two steps on a subset. */
static void test_example_job(void)
{
    const char *name = "examples/fashion-mnist/kd-mixup.json runs (2 steps)";
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
        kt_skip(name, "no Fashion-MNIST (scripts/setup installs it)");
        return;
    }
    char dir[] = "/tmp/kdaugex.XXXXXX", root[512], cmd[2048], *out = NULL;
    if (!mkdtemp(dir)) {
        kt_fail(name, "cannot make a temporary directory");
        return;
    }
    kt_source_path("", root, sizeof root);
    snprintf(cmd, sizeof cmd,
             "cd %s && KDENGINE_PLUGIN_PATH=%s %s/kdengine run "
             "examples/fashion-mnist/kd-mixup.json "
             "--set schedule.epochs=1 --set data.train.subset=64 --set data.train.batch_size=32 "
             "--set data.val.subset=100 --set output=%s/run 2>&1",
             root, kt_plugin_dir(), KD_BUILDDIR, dir);
    int rc = kt_run_command(cmd, &out);
    kt_check(rc == 0 && contains(out, "done: 2 steps") && contains(out, "kd "), name,
             "exit %d: %s", rc, out ? out : "(none)");
    free(out);
    kt_remove_tree(dir);
}

/* ------------------------------------------------------------------ main */

static bool torch_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import timm' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

/* Writes the spec, runs the timm script once and opens its fixtures. */
static bool make_fixtures(const char *dir)
{
    char path[512], script[512], cmd[1536];
    snprintf(path, sizeof path, "%s/spec.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fprintf(f, "{");
    spec_mixup(f);
    fprintf(f, ", ");
    spec_erasing(f);
    fprintf(f, ", ");
    spec_erasing_stats(f);
    fprintf(f, ", ");
    spec_randaugment(f);
    fprintf(f, "}\n");
    if (fclose(f) != 0)
        return false;
    kt_source_path("tests/parity/timm_augment.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s", KD_TORCH_PYTHON, script, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "the timm reference failed: %s\n", cmd);
        return false;
    }
    snprintf(path, sizeof path, "%s/augment.safetensors", dir);
    return kd_safetensors_open(path, &fixtures) == KD_OK;
}

int main(void)
{
    test_mixup_plugin();
    test_mixup_odd_and_chained();
    test_erasing_plugin();
    test_ra_plugin();
    test_augmented_job();
    test_example_job();
    if (!torch_available()) {
        kt_skip("augmentation parity against timm", "timm is not importable by %s",
                KD_TORCH_PYTHON);
    } else {
        char dir[] = "/tmp/kdaugment.XXXXXX";
        if (!mkdtemp(dir)) {
            kt_fail("augmentation parity against timm", "cannot make a temporary directory");
        } else if (!make_fixtures(dir)) {
            kt_fail("augmentation parity against timm", "no fixtures: %s", kd_last_error());
        } else {
            test_mixup_parity();
            test_mixup_boxes();
            test_mixup_sampling();
            test_erasing_parity();
            test_erasing_sampling();
            test_ra_ops();
            test_ra_pipeline();
            test_ra_sampling();
        }
        if (fixtures)
            kd_safetensors_close(fixtures);
        kt_remove_tree(dir);
    }
    kt_plugins_close();
    return kt_finish();
}
