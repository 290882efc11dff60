/* `kdengine label`: a teacher's top-k soft labels for every training view. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "../loader.h"
#include "dirs.h"
#include "label.h"
#include "label_store.h"
#include "session.h"
#include "streams.h"
#include "threads.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The K most probable classes of one row, most probable first; a class
 * enters only when strictly more probable, so ties keep the lower class
 * first. */
static void top_k(const double *p, int classes, int k, int32_t *idx, uint16_t *values)
{
    int have = 0;
    for (int c = 0; c < classes; c++) {
        if (have == k && !(p[c] > p[idx[k - 1]]))
            continue;
        int at = have < k ? have++ : k - 1;
        while (at > 0 && p[c] > p[idx[at - 1]]) {
            idx[at] = idx[at - 1];
            at--;
        }
        idx[at] = c;
    }
    for (int j = 0; j < k; j++)
        values[j] = kd_f32_to_f16((float)p[idx[j]]);
}

typedef struct labeller {
    const kd_job *job;
    kd_session *s;
    kd_loader *loader;
    int64_t steps_per_epoch;
    bool *want; /* the teacher's logits only */
} labeller;

/* One batch as `run` would make it at this step: batch transforms, then
 * the teacher; its softmax's top-k rows go into the shard. */
static kd_status label_batch(labeller *l, const kd_batch *b, int64_t step, kd_label_shard *shard)
{
    kd_session *s = l->s;
    kd_model_run *m = &s->teacher;
    kd_batch_args ba = {.size = sizeof ba, .images = b->images, .labels = b->labels,
                        .num_classes = s->num_classes};
    kd_status st = KD_OK;
    for (int i = 0; st == KD_OK && i < s->n_batch_transforms; i++) {
        ba.rng = kd_rng_make(l->job->seed, KD_STREAM_BATCH << 8 | (uint64_t)i, (uint64_t)step);
        st = s->btvt[i]->apply(s->btself[i], &ba);
        if (st != KD_OK)
            st = kd_error_wrap(st, "data.train.batch_transforms[%d]", i);
        else if (!ba.images)
            st = kd_error(KD_ERR_FORMAT, "data.train.batch_transforms[%d] left no images", i);
    }
    if (st != KD_OK)
        return st;
    kd_tensor *images = ba.images->dtype == m->dtype ? ba.images : kd_cast(ba.images, m->dtype);
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args ta = {sizeof ta, images, l->job->teacher.train_bn,
                          kd_rng_make(l->job->seed, KD_STREAM_TEACHER, (uint64_t)step), l->want,
                          m->out};
    st = images ? m->vt->forward(m->self, &ta) : kd_error_wrap(kd_last_status(), "input");
    kd_tensor *logits = st == KD_OK ? m->out[m->logits] : NULL;
    if (st == KD_OK && !logits)
        st = kd_error(KD_ERR_FORMAT, "model '%s' did not fill tap 'logits'",
                      m->spec->entry->name);
    kd_tensor *probs = logits ? kd_contiguous(kd_cast(kd_softmax(logits, 1), KD_F64)) : NULL;
    if (st == KD_OK && !probs)
        st = kd_error_wrap(kd_last_status(), "softmax of the logits");
    if (st != KD_OK)
        return kd_error_wrap(st, "teacher forward");
    const double *p = kd_tensor_data(probs);
    const int64_t *rows = kd_tensor_data(b->indices);
    const kd_label_layout *lay = &shard->layout;
    for (int64_t i = 0; i < b->labels->shape[0]; i++) {
        for (int c = 0; c < lay->num_classes; c++)
            if (!isfinite(p[i * lay->num_classes + c]))
                return kd_error(KD_ERR_INVALID, "teacher forward: the softmax of sample %lld "
                                "is not finite (class %d)", (long long)rows[i], c);
        size_t at = (size_t)(rows[i] * lay->top_k);
        top_k(p + i * lay->num_classes, lay->num_classes, lay->top_k, shard->indices + at,
              shard->values + at);
    }
    return KD_OK;
}

static kd_status label_epoch(labeller *l, int64_t epoch, kd_label_shard *shard, FILE *progress)
{
    bool tty = progress && isatty(fileno(progress));
    double t0 = now_s(), last_draw = 0;
    int64_t images = 0;
    kd_status st = kd_loader_start(l->loader, epoch, 0);
    bool saved = kd_set_grad_enabled(false);
    while (st == KD_OK) {
        kd_batch b;
        bool done;
        st = kd_loader_next(l->loader, &b, &done);
        if (st != KD_OK || done)
            break;
        kd_scope_begin();
        st = label_batch(l, &b, epoch * l->steps_per_epoch + b.index, shard);
        kd_scope_end();
        if (st != KD_OK)
            st = kd_error_wrap(st, "epoch %lld, batch %lld", (long long)epoch,
                               (long long)b.index);
        images += b.labels->shape[0];
        double now = now_s();
        if (st == KD_OK && tty && now - last_draw > 0.25) {
            fprintf(progress, "\r\033[Klabel epoch %lld: batch %lld/%lld, %.0f img/s",
                    (long long)epoch + 1, (long long)b.index + 1, (long long)l->steps_per_epoch,
                    (double)images / (now - t0 > 1e-9 ? now - t0 : 1e-9));
            fflush(progress);
            last_draw = now;
        }
    }
    kd_set_grad_enabled(saved);
    double dt = now_s() - t0;
    if (st == KD_OK && progress)
        fprintf(progress, "%slabel epoch %lld: %lld views in %.1f s (%.0f img/s)\n",
                tty ? "\r\033[K" : "", (long long)epoch + 1, (long long)images, dt,
                (double)images / (dt > 1e-9 ? dt : 1e-9));
    return st;
}

/* What a rerun into `dir` keeps: an index made by the same pipeline and
 * teacher with the same layout, and its leading shards that read whole. */
static kd_status resume_index(const char *dir, json_t *fingerprint,
                              const kd_label_layout *layout, kd_label_index *index,
                              FILE *progress)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, KD_LABEL_INDEX_FILE);
    if (access(path, F_OK) != 0) {
        /* a new store (the folder may hold a shard a crash left before the
         * first index: it is rewritten) */
        index->layout = *layout;
        index->fingerprint = json_incref(fingerprint);
        return KD_OK;
    }
    kd_status st = kd_label_index_load(dir, index);
    if (st != KD_OK)
        return st;
    char why[1024];
    if (!kd_label_fingerprint_equal(index->fingerprint, fingerprint, NULL, why, sizeof why))
        return kd_error(KD_ERR_INVALID, "%s holds labels of another pipeline or teacher (%s); "
                        "label into a new folder", dir, why);
    if (!kd_label_layout_equal(&index->layout, layout))
        return kd_error(KD_ERR_INVALID, "%s holds top-%d labels of %d classes for %lld samples; "
                        "this job makes top-%d of %d for %lld", dir, index->layout.top_k,
                        index->layout.num_classes, (long long)index->layout.samples,
                        layout->top_k, layout->num_classes, (long long)layout->samples);
    for (int64_t e = 0; e < index->n_shards; e++) {
        kd_label_shard shard;
        st = kd_label_shard_load(dir, index, e, &shard);
        kd_label_shard_free(&shard);
        if (st != KD_OK) {
            if (progress)
                fprintf(progress, "%s; labelling from epoch %lld again\n", kd_last_error(),
                        (long long)e + 1);
            kd_label_index_truncate(index, e);
            break;
        }
    }
    return KD_OK;
}

static kd_status label_all(labeller *l, const kd_label_options *o, FILE *progress)
{
    kd_session *s = l->s;
    const char *text;
    kd_status st = kd_session_fingerprint(s, &text);
    json_t *fingerprint = st == KD_OK ? json_loads(text, 0, NULL) : NULL;
    if (st == KD_OK && !fingerprint)
        st = kd_error(KD_ERR_NOMEM, "fingerprint: out of memory");
    int classes = s->num_classes;
    kd_label_layout layout = {kd_loader_samples_per_epoch(l->loader),
                              o->top_k < classes ? o->top_k : classes, classes,
                              kd_label_index_bytes(classes)};
    kd_label_index index = {0};
    if (st == KD_OK)
        st = kd_make_dirs(o->out);
    if (st == KD_OK)
        st = resume_index(o->out, fingerprint, &layout, &index, progress);
    json_decref(fingerprint);
    if (st == KD_OK && progress)
        fprintf(progress, "%s: teacher '%s' labels %lld epochs x %lld views (top-%d of %d "
                "classes, %lld bytes per view) into %s%s\n", l->job->file,
                l->job->teacher.entry->name, (long long)o->epochs, (long long)layout.samples,
                layout.top_k, classes, (long long)layout.top_k * (2 + layout.index_bytes),
                o->out, index.n_shards ? "" : " (new)");
    if (st == KD_OK && index.n_shards >= o->epochs && progress)
        fprintf(progress, "%s: all %lld epochs are labelled already\n", o->out,
                (long long)index.n_shards);
    for (int64_t e = index.n_shards; st == KD_OK && e < o->epochs; e++) {
        kd_label_shard shard;
        char name[64], path[4200];
        int64_t bytes;
        uint64_t checksum;
        kd_label_shard_name(e, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", o->out, name);
        st = kd_label_shard_alloc(&layout, e, &shard);
        if (st == KD_OK)
            st = label_epoch(l, e, &shard, progress);
        if (st == KD_OK)
            st = kd_label_shard_write(path, &shard, &bytes, &checksum);
        kd_label_shard_free(&shard);
        if (st == KD_OK)
            st = kd_label_index_append(&index, name, bytes, checksum);
        if (st == KD_OK)
            st = kd_label_index_write(o->out, &index);
    }
    kd_label_index_free(&index);
    return st;
}

kd_status kd_label(const kd_job *job, const kd_label_options *o, FILE *progress)
{
    if (!job->teacher.present)
        return kd_error(KD_ERR_INVALID, "teacher: missing (label runs the job's teacher)");
    if (o->epochs < 1 || o->top_k < 1)
        return kd_error(KD_ERR_INVALID, "label: %s must be at least 1",
                        o->epochs < 1 ? "--epochs" : "--top-k");
    labeller l = {.job = job};
    kd_status st = kd_threads_apply(job, NULL);
    if (st == KD_OK)
        st = kd_session_open(job, KD_SESSION_TRAIN, &l.s);
    if (st == KD_OK) {
        kd_loader_config c = {
            .dataset = l.s->train.vt,
            .dataset_self = l.s->train.self,
            .label = job->train.path,
            .n_transforms = job->train.n_transforms,
            .transforms = l.s->train.tvt,
            .transform_selves = l.s->train.tself,
            .batch_size = job->train.batch_size,
            .shuffle = job->train.shuffle,
            .drop_last = job->train.drop_last,
            .subset = job->train.subset,
            .workers = kd_threads_workers(&job->train),
            .prefetch = job->train.prefetch,
            .seed = job->seed,
        };
        st = kd_loader_new(&c, &l.loader);
    }
    if (st == KD_OK) {
        l.steps_per_epoch = kd_loader_batches_per_epoch(l.loader);
        l.want = calloc((size_t)l.s->teacher.n_taps, sizeof *l.want);
        if (!l.want)
            st = kd_error(KD_ERR_NOMEM, "label: out of memory");
        else
            l.want[l.s->teacher.logits] = true;
    }
    if (st == KD_OK)
        st = label_all(&l, o, progress);
    free(l.want);
    kd_loader_free(l.loader);
    kd_session_close(l.s);
    return st;
}
