/* Offline teacher labels (FKD): the label store's format, `kdengine label`
 * and the fkd loss.
 *
 * - The store: a shard and an index round-trip; a truncated or corrupt
 *   shard is an error naming the file; thousands of mutated shards and
 *   indexes parse or are refused with KD_ERR_FORMAT naming the label (run
 *   under the ASan build too); fingerprints differ by a named JSON path.
 * - `label` through the real CLI on tiny synthetic IDX data (test_job's
 *   quadrant images) with a resnet8 teacher trained for a moment: every
 *   stored row equals the top-k of the teacher's softmax recomputed here
 *   through the same loader (bit for bit: f16 values and classes), with
 *   and with mixup/cutmix in the pipeline; replayed past the labelled
 *   epochs, a training epoch's mixed batches are its view epoch's bit for
 *   bit and still match the stored rows.
 * - A student trains from the store alone (fkd loss, no teacher) past the
 *   labelled epochs, with mixup/cutmix too (with the student fixed, each
 *   step of a replayed epoch has the stored epoch's loss bit for bit); a
 *   changed transform or teacher is refused naming what differs; a
 *   truncated shard stops training with its name, and `label` says so and
 *   writes it again, byte for byte as before. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "job_fixture.h"
#include "plugin_fixture.h"
#include "../core/loader.h"
#include "../core/train/job.h"
#include "../core/train/label_store.h"
#include "../core/train/session.h"

static char dir[64];

static bool has(const char *text, const char *part) { return text && strstr(text, part); }

/* ---------------------------------------------------------------- the format */

static void fill_shard(kd_label_shard *s, uint64_t seed)
{
    kd_rng rng = kd_rng_make(seed, 1, 0);
    const kd_label_layout *l = &s->layout;
    for (int64_t i = 0; i < l->samples * l->top_k; i++) {
        s->values[i] = kd_f32_to_f16((float)kd_rng_below(&rng, 1000) / 1000.0f);
        s->indices[i] = (int32_t)kd_rng_below(&rng, (uint32_t)l->num_classes);
    }
    s->indices[0] = -1; /* a row the epoch did not visit */
}

static bool same_shard(const kd_label_shard *a, const kd_label_shard *b)
{
    size_t n = (size_t)(a->layout.samples * a->layout.top_k);
    return a->epoch == b->epoch && !memcmp(a->values, b->values, n * sizeof *a->values) &&
           !memcmp(a->indices, b->indices, n * sizeof *a->indices);
}

static kd_status write_store(const char *store, const kd_label_layout *l, int epochs)
{
    kd_label_index index = {.layout = *l, .fingerprint = json_pack("{s:i}", "seed", 1)};
    kd_status st = KD_OK;
    for (int e = 0; st == KD_OK && e < epochs; e++) {
        kd_label_shard s;
        char name[64], path[256];
        int64_t bytes;
        uint64_t sum;
        kd_label_shard_name(e, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", store, name);
        st = kd_label_shard_alloc(l, e, &s);
        if (st == KD_OK) {
            fill_shard(&s, (uint64_t)e);
            st = kd_label_shard_write(path, &s, &bytes, &sum);
        }
        kd_label_shard_free(&s);
        if (st == KD_OK)
            st = kd_label_index_append(&index, name, bytes, sum);
    }
    if (st == KD_OK)
        st = kd_label_index_write(store, &index);
    kd_label_index_free(&index);
    return st;
}

static void test_round_trip(void)
{
    static const struct {
        const char *name;
        kd_label_layout layout;
    } rows[] = {
        {"store: i16 classes round-trip", {5, 3, 7, 2}},
        {"store: i32 classes round-trip (40000 classes)", {3, 4, 40000, 4}},
        {"store: top-k of every class", {4, 5, 5, 2}},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        char store[128];
        snprintf(store, sizeof store, "%s/rt%zu", dir, r);
        mkdir(store, 0777);
        kd_status st = write_store(store, &rows[r].layout, 2);
        kd_label_index index;
        if (st == KD_OK)
            st = kd_label_index_load(store, &index);
        bool same = st == KD_OK && index.n_shards == 2 &&
                    kd_label_layout_equal(&index.layout, &rows[r].layout);
        for (int e = 0; same && e < 2; e++) {
            kd_label_shard got, want;
            same = kd_label_shard_load(store, &index, e, &got) == KD_OK &&
                   kd_label_shard_alloc(&rows[r].layout, e, &want) == KD_OK;
            if (same) {
                fill_shard(&want, (uint64_t)e);
                same = same_shard(&got, &want);
            }
            kd_label_shard_free(&got);
            kd_label_shard_free(&want);
        }
        if (st == KD_OK)
            kd_label_index_free(&index);
        kt_check(same, rows[r].name, "%s", st == KD_OK ? "shards differ" : kd_last_error());
    }
}

/* The shard of epoch 1 of rt0, damaged by `damage`, must be refused by
 * name with `want` in the message. */
static void expect_damaged(const char *name, void (*damage)(unsigned char *, size_t *),
                           bool via_index, const char *want)
{
    char store[128], path[256];
    snprintf(store, sizeof store, "%s/rt0", dir);
    snprintf(path, sizeof path, "%s/epoch-00001.labels", store);
    size_t len;
    unsigned char *bytes = kt_read_file(path, &len), *copy = bytes ? malloc(len) : NULL;
    if (!copy) {
        kt_fail(name, "cannot read %s", path);
        free(bytes);
        return;
    }
    memcpy(copy, bytes, len);
    damage(copy, &len);
    kt_write_file(path, copy, len);
    kd_label_index index;
    kd_label_shard s = {0};
    kd_status st = kd_label_index_load(store, &index);
    /* through the index (which also checks the checksum it recorded), or
     * the parser alone for damage that keeps the checksum consistent */
    kd_status got = st != KD_OK ? st
                    : via_index ? kd_label_shard_load(store, &index, 1, &s)
                                : kd_label_shard_parse(copy, len, path, &index.layout, 1, &s);
    const char *msg = kd_last_error();
    kt_check(got == KD_ERR_FORMAT && has(msg, "epoch-00001.labels") && has(msg, want), name,
             "status %d: %s", (int)got, msg);
    kd_label_shard_free(&s);
    if (st == KD_OK)
        kd_label_index_free(&index);
    kt_write_file(path, bytes, (size_t)kd_label_shard_size(&(kd_label_layout){5, 3, 7, 2}));
    free(bytes);
    free(copy);
}

static void cut_tail(unsigned char *b, size_t *len) { (void)b, *len -= 7; }
static void flip_payload(unsigned char *b, size_t *len) { b[*len - 3] ^= 0x10; }
static void bad_class(unsigned char *b, size_t *len)
{
    /* class 9 of 7 in the last index, with a checksum to match */
    b[*len - 2] = 9;
    b[*len - 1] = 0;
    uint64_t h = kd_fnv1a64(KD_FNV1A64_INIT, b + KD_LABEL_HEADER_BYTES,
                            *len - KD_LABEL_HEADER_BYTES);
    for (int i = 0; i < 8; i++)
        b[40 + i] = (unsigned char)(h >> (8 * i));
}

static void test_damage(void)
{
    expect_damaged("store: a truncated shard names the file", cut_tail, true, "truncated");
    expect_damaged("store: a flipped bit is a corrupt shard", flip_payload, true, "corrupt");
    expect_damaged("store: an out-of-range class is refused", bad_class, false,
                   "holds class 9 of 7");
}

/* Random damage (flips, cuts, overwrites) to a valid shard and index: each
 * result parses or is a KD_ERR_FORMAT naming its label. */
static void test_fuzz(void)
{
    char store[128], path[256];
    snprintf(store, sizeof store, "%s/rt0", dir);
    snprintf(path, sizeof path, "%s/epoch-00001.labels", store);
    size_t shard_len, index_len;
    unsigned char *shard = kt_read_file(path, &shard_len);
    snprintf(path, sizeof path, "%s/index.json", store);
    unsigned char *index_text = kt_read_file(path, &index_len);
    kd_label_layout layout = {5, 3, 7, 2};
    kd_rng rng = kd_rng_make(99, 0, 0);
    int bad = 0, parsed = 0, tries = 3000;
    char why[512] = "";
    for (int t = 0; shard && index_text && t < tries && !bad; t++) {
        bool on_index = t % 2;
        size_t len = on_index ? index_len : shard_len;
        unsigned char *b = malloc(len + 1);
        memcpy(b, on_index ? index_text : shard, len);
        int edits = 1 + (int)kd_rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            uint32_t kind = kd_rng_below(&rng, 3), at = kd_rng_below(&rng, (uint32_t)len);
            if (kind == 0)
                b[at] ^= (unsigned char)(1u << kd_rng_below(&rng, 8));
            else if (kind == 1)
                len = at;
            else
                b[at] = (unsigned char)kd_rng_below(&rng, 256);
        }
        kd_status st;
        if (on_index) {
            kd_label_index ix;
            st = kd_label_index_parse((const char *)b, len, "fuzz.json", &ix);
            if (st == KD_OK)
                kd_label_index_free(&ix);
        } else {
            kd_label_shard s;
            st = kd_label_shard_parse(b, len, "fuzz.labels", &layout, 1, &s);
            kd_label_shard_free(&s);
        }
        parsed += st == KD_OK;
        if (st != KD_OK && (st != KD_ERR_FORMAT || !has(kd_last_error(), "fuzz."))) {
            bad++;
            snprintf(why, sizeof why, "try %d: status %d: %s", t, (int)st, kd_last_error());
        }
        free(b);
    }
    kt_check(shard && index_text && !bad, "store: 3000 damaged shards and indexes are parsed "
             "or refused by name", "%s", why);
    printf("  (%d of %d damaged inputs still parsed)\n", parsed, tries);
    free(shard);
    free(index_text);
}

static void test_fingerprint_diff(void)
{
    json_t *a = json_loads("{\"data\": {\"transforms\": [{\"name\": \"random_crop\", "
                           "\"params\": {\"padding\": 1}}]}, \"seed\": 3, "
                           "\"teacher\": {\"weights\": \"x\"}}", 0, NULL);
    json_t *b = json_loads("{\"data\": {\"transforms\": [{\"name\": \"random_crop\", "
                           "\"params\": {\"padding\": 2}}]}, \"seed\": 3}", 0, NULL);
    char why[512] = "";
    static const char *const optional[] = {"teacher", NULL};
    bool same = kd_label_fingerprint_equal(a, b, optional, why, sizeof why);
    kt_check(!same && !strcmp(why, "data.transforms[0].params.padding: 1 in the store, 2 in "
                              "this job"), "fingerprint: the first difference by JSON path",
             "%s", why);
    json_t *crop = json_array_get(json_object_get(json_object_get(b, "data"), "transforms"), 0);
    json_object_set_new(json_object_get(crop, "params"), "padding", json_integer(1));
    same = kd_label_fingerprint_equal(a, b, optional, why, sizeof why);
    kt_check(same, "fingerprint: a teacher only the store has is not compared", "%s", why);
    same = kd_label_fingerprint_equal(a, b, NULL, why, sizeof why);
    kt_check(!same && has(why, "teacher: {\"weights\":\"x\"} in the store, absent in this job"),
             "fingerprint: a missing key is a difference", "%s", why);
    json_decref(a);
    json_decref(b);
}

/* ---------------------------------------------------------------- through the CLI */

static const char *const job_template =
    "{\n"
    "  \"seed\": 5, \"threads\": 1, \"output\": \"%s/%s\",\n"
    "  \"plugin_dirs\": [\"%s\"],\n"
    "  \"data\": {\n"
    "    \"train\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/train-images.idx\",\n"
    "                            \"labels\": \"%s/train-labels.idx\", \"num_classes\": 4},\n"
    "              \"transforms\": [{\"name\": \"random_crop\", \"size\": [8], \"padding\": 1},\n"
    "                             {\"name\": \"hflip\"},\n"
    "                             {\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "              %s\n"
    "              \"batch_size\": 16, \"workers\": 2, \"drop_last\": false},\n"
    "    \"val\": {\"dataset\": {\"name\": \"idx\", \"images\": \"%s/val-images.idx\",\n"
    "                          \"labels\": \"%s/val-labels.idx\", \"num_classes\": 4},\n"
    "            \"transforms\": [{\"name\": \"normalize\", \"mean\": [0.4], \"std\": [0.25]}],\n"
    "            \"batch_size\": 32, \"workers\": 0}\n"
    "  },\n"
    "  %s\n"
    "  \"student\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1},\n"
    "  \"losses\": [%s],\n"
    "  \"optim\": {\"name\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9},\n"
    "  \"schedule\": {\"name\": \"cosine\", \"epochs\": %d},\n"
    "  \"eval\": {\"every_epochs\": 1}, \"checkpoint\": {\"every_epochs\": 1, \"keep\": 2},\n"
    "  \"log\": {\"every_steps\": 4}\n"
    "}\n";

static void write_job(const char *file, const char *output, const char *batch_transforms,
                      const char *teacher, const char *losses, int epochs)
{
    char text[8192], path[256];
    snprintf(text, sizeof text, job_template, dir, output, kt_plugin_dir(), dir, dir,
             batch_transforms, dir, dir, teacher, losses, epochs);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    kt_write_file(path, text, strlen(text));
}

/* The classes of one row of probabilities by descending value (ties: the
 * lower class first), written independently of label.c's selection. */
static const double *cmp_probs;
static int by_prob(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    double px = cmp_probs[x], py = cmp_probs[y];
    return px > py ? -1 : px < py ? 1 : x - y;
}

/* The bytes of a batch's f32 images and soft targets (none: one-hot
 * labels), hashed, so two epochs' batches can be compared bit for bit. */
static uint64_t batch_hash(const kd_batch_args *ba)
{
    kd_tensor *x = kd_contiguous(ba->images);
    kd_tensor *t = ba->soft_targets ? kd_contiguous(ba->soft_targets) : NULL;
    uint64_t h = kd_fnv1a64(KD_FNV1A64_INIT, kd_tensor_data(x),
                            (size_t)kd_tensor_numel(x) * sizeof(float));
    return t ? kd_fnv1a64(h, kd_tensor_data(t), (size_t)kd_tensor_numel(t) * sizeof(float)) : h;
}

#define MAX_BATCHES 8 /* 96 samples in batches of 16 */

/* Replays `train_epochs` training epochs of the job's views here: the
 * teacher of a session of the same job, eval mode, on the batches of a
 * loader built as run builds it (batch transforms keyed as runner.c keys
 * them). Past the `stored` labelled epochs the session replays them, as
 * the fkd loss asks it to (its replay_views service), and each training
 * epoch reads the shard of its view epoch. Every stored row must equal the
 * recomputed softmax's top-k; hashes[e][b] gets batch b of epoch e. */
static void check_online(const char *name, const char *job_file, const char *store, int stored,
                         int train_epochs, int top_k, uint64_t hashes[][MAX_BATCHES])
{
    char path[256], why[512] = "";
    snprintf(path, sizeof path, "%s/%s", dir, job_file);
    kd_job *job = NULL;
    kd_session *s = NULL;
    kd_loader *loader = NULL;
    kd_label_index index = {0};
    kd_status st = kd_job_load(path, 0, NULL, &job);
    if (st == KD_OK)
        st = kd_session_open(job, KD_SESSION_TRAIN, &s);
    if (st == KD_OK && train_epochs > stored)
        st = s->services.replay_views(s->services.host, stored);
    if (st == KD_OK) {
        kd_loader_config c = {s->train.vt, s->train.self, "data.train",
                              job->train.n_transforms, s->train.tvt, s->train.tself,
                              job->train.batch_size, job->train.shuffle, job->train.drop_last,
                              job->train.subset, 0, 1, job->seed, 0, 0};
        st = kd_loader_new(&c, &loader);
    }
    snprintf(path, sizeof path, "%s/%s", dir, store);
    if (st == KD_OK)
        st = kd_label_index_load(path, &index);
    int64_t rows = 0, mismatched = 0;
    int idx[4];
    bool saved = kd_set_grad_enabled(false);
    for (int e = 0; st == KD_OK && e < train_epochs; e++) {
        kd_label_shard shard;
        int64_t view = kd_session_view_epoch(s, e), per_epoch = kd_loader_batches_per_epoch(loader);
        st = kd_label_shard_load(path, &index, view, &shard);
        if (st == KD_OK)
            st = kd_loader_start(loader, view, 0);
        while (st == KD_OK) {
            kd_batch b;
            bool done;
            st = kd_loader_next(loader, &b, &done);
            if (st != KD_OK || done)
                break;
            kd_scope_begin();
            int64_t key = kd_session_view_batch(s, e, e * per_epoch + b.index, per_epoch);
            kd_batch_args ba = {.size = sizeof ba, .images = b.images, .labels = b.labels,
                                .num_classes = 4};
            for (int i = 0; st == KD_OK && i < s->n_batch_transforms; i++) {
                ba.rng = kd_rng_make(job->seed, 0x42415443ull << 8 | (uint64_t)i,
                                     (uint64_t)key);
                st = s->btvt[i]->apply(s->btself[i], &ba);
            }
            if (st == KD_OK && hashes && b.index < MAX_BATCHES)
                hashes[e][b.index] = batch_hash(&ba);
            kd_model_run *m = &s->teacher;
            memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
            bool want[16] = {false};
            want[m->logits] = true;
            kd_forward_args fa = {sizeof fa, ba.images, false, kd_rng_make(0, 0, 0), want,
                                  m->out};
            if (st == KD_OK)
                st = m->vt->forward(m->self, &fa);
            kd_tensor *p = st == KD_OK
                               ? kd_contiguous(kd_cast(kd_softmax(m->out[m->logits], 1), KD_F64))
                               : NULL;
            const int64_t *at = kd_tensor_data(b.indices);
            for (int64_t i = 0; p && i < b.labels->shape[0]; i++, rows++) {
                cmp_probs = (const double *)kd_tensor_data(p) + i * 4;
                for (int c = 0; c < 4; c++)
                    idx[c] = c;
                qsort(idx, 4, sizeof idx[0], by_prob);
                const int32_t *si = shard.indices + at[i] * top_k;
                const uint16_t *sv = shard.values + at[i] * top_k;
                for (int j = 0; j < top_k; j++)
                    if (si[j] != idx[j] || sv[j] != kd_f32_to_f16((float)cmp_probs[idx[j]])) {
                        if (!mismatched++)
                            snprintf(why, sizeof why, "epoch %d (views of %lld) sample %lld "
                                     "rank %d: stored class %d (f16 %04x), online %d (f16 "
                                     "%04x)", e, (long long)view, (long long)at[i], j,
                                     (int)si[j], sv[j], idx[j],
                                     kd_f32_to_f16((float)cmp_probs[idx[j]]));
                        break;
                    }
            }
            kd_scope_end();
        }
        kd_label_shard_free(&shard);
    }
    kd_set_grad_enabled(saved);
    if (st != KD_OK)
        snprintf(why, sizeof why, "%s", kd_last_error());
    kt_check(st == KD_OK && rows == 96 * train_epochs && mismatched == 0, name,
             "%lld rows, %lld differ: %s", (long long)rows, (long long)mismatched, why);
    kd_label_index_free(&index);
    kd_loader_free(loader);
    kd_session_close(s);
    kd_job_free(job);
}

/* timm's Mixup with CutMix switched in on half the batches. */
static const char *const mix_json = "\"batch_transforms\": [{\"name\": \"mixup_cutmix\"}],";

static const char *const teacher_json =
    "\"teacher\": {\"model\": \"resnet8\", \"num_classes\": 4, \"in_chans\": 1, "
    "\"weights\": \"teacher/best.safetensors\"},";

static void test_label(void)
{
    char *out = NULL;
    /* a teacher that learnt something, so its labels are not uniform */
    write_job("teacher.json", "teacher", "", "", "{\"name\": \"ce\"}", 2);
    int rc = kt_kdengine(dir, &out, "run teacher.json");
    kt_check(rc == 0, "setup: a resnet8 teacher trains", "exit %d: %s", rc, out);
    free(out);
    write_job("kd.json", "kd", "", teacher_json, "{\"name\": \"kd\"}", 3);
    rc = kt_kdengine(dir, &out, "plan kd.json");
    kt_check(rc == 0 && has(out, "label store (kdengine label, top-4): 16 bytes per view"),
             "plan: the label store's size per view (top-10 clipped to the 4 classes)",
             "exit %d: %s", rc, out);
    free(out);
    rc = kt_kdengine(dir, &out, "label kd.json --epochs 2 --out store --top-k 3");
    kt_check(rc == 0 && has(out, "label epoch 2: 96 views") && has(out, "(new)"),
             "label: two epochs into a new store", "exit %d: %s", rc, out);
    free(out);
    check_online("label: every stored top-3 row equals the teacher's softmax recomputed "
                 "through the same loader (bit for bit)", "kd.json", "store", 2, 2, 3, NULL);
    rc = kt_kdengine(dir, &out, "label kd.json --epochs 2 --out store --top-k 3");
    kt_check(rc == 0 && has(out, "all 2 epochs are labelled already"),
             "label: a rerun of a complete store does nothing", "exit %d: %s", rc, out);
    free(out);

    write_job("kdmix.json", "kdmix", mix_json, teacher_json, "{\"name\": \"kd\"}", 1);
    rc = kt_kdengine(dir, &out, "label kdmix.json --epochs 2 --out storemix --top-k 4");
    kt_check(rc == 0, "label: a pipeline with mixup and cutmix, two epochs", "exit %d: %s", rc,
             out);
    free(out);
    check_online("label: with mixup/cutmix, each stored row is the teacher's output on the "
                 "mixed view of its step", "kdmix.json", "storemix", 2, 2, 4, NULL);
    uint64_t hashes[3][MAX_BATCHES] = {{0}};
    check_online("replay: training epoch 2 of a 2-epoch store, mixup/cutmix drawn as in its "
                 "view epoch 0, matches the stored rows", "kdmix.json", "storemix", 2, 3, 4,
                 hashes);
    bool same02 = true, same01 = true;
    for (int b = 0; b < 6; b++) {
        same02 = same02 && hashes[2][b] == hashes[0][b] && hashes[0][b];
        same01 = same01 && hashes[1][b] == hashes[0][b];
    }
    kt_check(same02 && !same01, "replay: epoch 2's mixed images and soft targets are epoch "
             "0's bit for bit (epoch 1's are not)", "epoch 2 %s epoch 0, epoch 1 %s",
             same02 ? "equals" : "differs from", same01 ? "equals it" : "differs");
}

/* The loss's value, through the real plugin bound by a session of the fkd
 * job, against FKD's recovery of the target computed here in double: the
 * f32 loss of O(1) terms over 4 classes is within 1e-5 (a few ulps of
 * each log-softmax term). Epoch 2 reads epoch 0's row (2 labelled). */
static void check_loss_value(const char *name, const char *rest)
{
    char path[256], set[64], why[256] = "";
    snprintf(path, sizeof path, "%s/fkd.json", dir);
    snprintf(set, sizeof set, "losses[0].rest=%s", rest);
    const char *sets[] = {set};
    kd_job *job = NULL;
    kd_session *s = NULL;
    kd_label_index index = {0};
    kd_label_shard shard[2];
    memset(shard, 0, sizeof shard);
    kd_status st = kd_job_load(path, 1, sets, &job);
    if (st == KD_OK)
        st = kd_session_open(job, KD_SESSION_TRAIN, &s);
    snprintf(path, sizeof path, "%s/store", dir);
    if (st == KD_OK)
        st = kd_label_index_load(path, &index);
    for (int e = 0; st == KD_OK && e < 2; e++)
        st = kd_label_shard_load(path, &index, e, &shard[e]);
    bool ok = st == KD_OK;
    if (ok && strcmp(rest, "smoothing") == 0)
        kt_check(s->view_epochs == 2 && kd_session_view_epoch(s, 2) == 0 &&
                     kd_session_view_epoch(s, 3) == 1,
                 "fkd: at bind it asks the host to replay the 2 labelled epochs' views",
                 "view_epochs %lld", (long long)s->view_epochs);
    kd_rng rng = kd_rng_make(11, 0, 0);
    int64_t zshape[2] = {5, 4}, rows[5] = {0, 17, 42, 95, 60};
    for (int epoch = 0; ok && epoch < 3; epoch++) {
        kd_scope_begin();
        kd_tensor *z = kt_uniform(KD_F32, 2, zshape, &rng, -3, 3);
        kd_tensor *idx = kd_tensor_from_data(KD_I64, 1, (int64_t[]){5}, rows);
        kd_loss_run *l = &s->losses[0];
        kd_loss_args la = {sizeof la, &z, NULL, NULL, NULL, idx, epoch, 0, true,
                           kd_rng_make(0, 0, 0)};
        kd_loss_result res = {.size = sizeof res};
        st = l->vt->forward(l->self, &la, &res);
        double want = 0;
        const kd_label_shard *sh = &shard[epoch % 2];
        for (int i = 0; st == KD_OK && i < 5; i++) {
            double t[4], zr[4], mx = -1e300, lse = 0, sum = 0;
            for (int c = 0; c < 4; c++)
                mx = (zr[c] = kd_tensor_get(z, i * 4 + c)) > mx ? zr[c] : mx;
            for (int c = 0; c < 4; c++)
                lse += exp(zr[c] - mx);
            lse = mx + log(lse);
            const int32_t *ci = sh->indices + rows[i] * 3;
            const uint16_t *cv = sh->values + rows[i] * 3;
            for (int j = 0; j < 3; j++)
                sum += kd_f16_to_f32(cv[j]);
            for (int c = 0; c < 4; c++)
                t[c] = strcmp(rest, "renorm") ? (1 - sum) / (4 - 3) : 0.0;
            for (int j = 0; j < 3; j++)
                t[ci[j]] = strcmp(rest, "renorm") ? kd_f16_to_f32(cv[j])
                                                  : kd_f16_to_f32(cv[j]) / sum;
            for (int c = 0; c < 4; c++)
                want -= t[c] * (zr[c] - lse) / 5.0;
        }
        double got = st == KD_OK ? kd_tensor_get(res.loss, 0) : NAN;
        if (st != KD_OK || !(fabs(got - want) <= 1e-5)) {
            ok = false;
            snprintf(why, sizeof why, "epoch %d: loss %.9g, want %.9g: %s", epoch, got, want,
                     st == KD_OK ? "" : kd_last_error());
        }
        kd_scope_end();
    }
    if (st != KD_OK && !why[0])
        snprintf(why, sizeof why, "%s", kd_last_error());
    kt_check(ok, name, "%s", why);
    kd_label_shard_free(&shard[0]);
    kd_label_shard_free(&shard[1]);
    kd_label_index_free(&index);
    kd_session_close(s);
    kd_job_free(job);
}

/* The fkd term of each step's train line (log.every_steps 1) into
 * loss[epoch][batch]; false when the file is unreadable or lacks a step. */
static bool step_losses(const char *metrics, double loss[][MAX_BATCHES], int epochs)
{
    size_t len;
    char *text = (char *)kt_read_file(metrics, &len);
    int seen = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(o, "type"));
        json_int_t step = json_integer_value(json_object_get(o, "step"));
        if (type && !strcmp(type, "train") && step >= 1 && step <= epochs * 6) {
            json_t *fkd = json_object_get(json_object_get(json_object_get(o, "loss_terms"),
                                                          "losses[0]"), "fkd");
            loss[(step - 1) / 6][(step - 1) % 6] = json_real_value(fkd);
            seen += fkd != NULL;
        }
        json_decref(o);
    }
    free(text);
    return seen == epochs * 6;
}

/* FKD's cycling with batch transforms, through `run`: a student run from
 * the 2-epoch mixup/cutmix store for 3 epochs with the loss at weight 0
 * and no weight decay (its gradients are exactly 0, so it stays the same
 * function of its input) gives each step of epoch 3 exactly the fkd term
 * of the same step of epoch 1: the same mixed images and the same stored
 * rows, which the loss found for every sample it read. */
static void test_replayed_run(void)
{
    char *out = NULL, path[256];
    write_job("fkdmix.json", "fkdmix", mix_json, "", "{\"name\": \"fkd\", \"labels\": "
              "\"storemix\", \"weight\": 0}", 3);
    int rc = kt_kdengine(dir, &out, "run fkdmix.json --set optim.weight_decay=0 "
                         "--set log.every_steps=1");
    kt_check(rc == 0 && has(out, "done: 18 steps"),
             "fkd: with mixup/cutmix, a run cycles past the 2 labelled epochs", "exit %d: %s",
             rc, out);
    free(out);
    double loss[3][MAX_BATCHES] = {{0}};
    snprintf(path, sizeof path, "%s/fkdmix/metrics.jsonl", dir);
    bool read = step_losses(path, loss, 3);
    bool same02 = read, same01 = read;
    for (int b = 0; b < 6; b++) {
        same02 = same02 && loss[2][b] == loss[0][b];
        same01 = same01 && loss[1][b] == loss[0][b];
    }
    kt_check(same02 && !same01, "fkd: with the student fixed, each step of epoch 3 has the fkd "
             "loss of the same step of epoch 1 bit for bit (epoch 2's differ)",
             "%s; epoch 3 step 1: %.17g, epoch 1 step 1: %.17g, epoch 2 step 1: %.17g",
             read ? "read" : "metrics unreadable", loss[2][0], loss[0][0], loss[1][0]);
}

static void test_train(void)
{
    char *out = NULL;
    write_job("fkd.json", "fkd", "", "",
              "{\"name\": \"fkd\", \"labels\": \"store\"}, {\"name\": \"ce\", \"weight\": 0.5}",
              3);
    int rc = kt_kdengine(dir, &out, "run fkd.json");
    kt_check(rc == 0 && has(out, "training resnet8") && has(out, "done: 18 steps") &&
                 has(out, "eval epoch 3"),
             "fkd: a student trains from the stored labels, without a teacher, cycling past "
             "the 2 labelled epochs", "exit %d: %s", rc, out);
    free(out);
    check_loss_value("fkd: the loss is FKD's soft cross-entropy with marginal smoothing of "
                     "the stored top-3 (epoch 3 reads epoch 1's labels)", "smoothing");
    check_loss_value("fkd: rest=renorm scales the stored top-3 to sum to 1", "renorm");

    rc = kt_kdengine(dir, &out, "validate fkd.json --set data.train.transforms[0].padding=2");
    kt_check(rc == 1 && has(out, "was labelled from another pipeline: "
                                 "data.transforms[0].params.padding: 1 in the store, 2 in "
                                 "this job"),
             "fkd: a changed transform is refused, naming the parameter", "exit %d: %s", rc,
             out);
    free(out);
    rc = kt_kdengine(dir, &out, "validate fkd.json --set seed=6");
    kt_check(rc == 1 && has(out, "seed: 5 in the store, 6 in this job"),
             "fkd: another seed is refused", "exit %d: %s", rc, out);
    free(out);
    rc = kt_kdengine(dir, &out, "validate fkd.json --set data.train.subset=64");
    kt_check(rc == 1 && has(out, "for 96 samples; this job has 4 classes and 64 training"),
             "fkd: a subset of the labelled data is refused", "exit %d: %s", rc, out);
    free(out);

    test_replayed_run();

    /* a teacher with other weights may not continue a store */
    rc = kt_kdengine(dir, &out, "export teacher.json --out other.safetensors");
    free(out);
    rc = rc ? rc : kt_kdengine(dir, &out, "label kd.json --epochs 3 --out store --top-k 3 "
                                  "--set teacher.weights=other.safetensors");
    kt_check(rc == 1 && has(out, "holds labels of another pipeline or teacher") &&
                 has(out, "teacher.weights: \"fnv1a64:"),
             "label: a changed teacher is refused, naming its weights", "exit %d: %s", rc, out);
    free(out);
}

static void test_truncated(void)
{
    char path[256], *out = NULL;
    snprintf(path, sizeof path, "%s/store/epoch-00001.labels", dir);
    size_t len;
    unsigned char *whole = kt_read_file(path, &len);
    if (!whole || !kt_write_file(path, whole, len / 2)) {
        kt_fail("truncated: setup", "cannot rewrite %s", path);
        free(whole);
        return;
    }
    int rc = kt_kdengine(dir, &out, "run fkd.json --set output=fkd2");
    kt_check(rc == 1 && has(out, "store/epoch-00001.labels: truncated"),
             "fkd: a truncated shard stops training, naming the file", "exit %d: %s", rc, out);
    free(out);
    rc = kt_kdengine(dir, &out, "label kd.json --epochs 2 --out store --top-k 3");
    size_t again_len;
    unsigned char *again = kt_read_file(path, &again_len);
    kt_check(rc == 0 && has(out, "epoch-00001.labels: truncated") &&
                 has(out, "labelling from epoch 2 again") && again && again_len == len &&
                 !memcmp(again, whole, len),
             "label: resumes a truncated shard, writing it again byte for byte", "exit %d: %s",
             rc, out);
    free(out);
    free(again);
    free(whole);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/kdfkd.XXXXXX");
    if (!mkdtemp(dir)) {
        kt_fail("setup", "mkdtemp failed");
        return kt_finish();
    }
    kd_set_num_threads(1);
    if (chdir(dir) != 0) { /* job files name their data relative to it */
        kt_fail("setup", "cannot enter %s", dir);
        return kt_finish();
    }
    test_round_trip();
    test_damage();
    test_fuzz();
    test_fingerprint_diff();
    if (!kt_write_quadrants(dir, "train", 96, 1) || !kt_write_quadrants(dir, "val", 64, 2)) {
        kt_fail("setup", "cannot write the synthetic data");
        return kt_finish();
    }
    test_label();
    test_train();
    test_truncated();
    kt_remove_tree(dir);
    return kt_finish();
}
