/* `kdengine label`: a teacher's top-k soft labels for every training view. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "../loader.h"
#include "dirs.h"
#include "dist.h"
#include "label.h"
#include "label_store.h"
#include "session.h"
#include "streams.h"
#include "teachers.h"
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
    int64_t first_batch, end_batch; /* this rank's block of every epoch */
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
    if (images) /* at the teacher's input size and normalisation */
        images = kd_teacher_input(&s->teachers[0], images);
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
    kd_status st = kd_loader_start(l->loader, epoch, l->first_batch);
    bool saved = kd_set_grad_enabled(false);
    for (int64_t k = l->first_batch; st == KD_OK && k < l->end_batch; k++) {
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
    char share[64] = ""; /* distributed: rank 0 counts its own views */
    if (kd_dist().world > 1)
        snprintf(share, sizeof share, " on rank 0 of %d", kd_dist().world);
    if (st == KD_OK && progress)
        fprintf(progress, "%slabel epoch %lld: %lld views%s in %.1f s (%.0f img/s)\n",
                tty ? "\r\033[K" : "", (long long)epoch + 1, (long long)images, share, dt,
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

/* One process: the epoch's shard, then the index listing it. */
static kd_status store_epoch(const char *dir, const kd_label_shard *shard, kd_label_index *index)
{
    char name[64], path[4200];
    int64_t bytes;
    uint64_t checksum;
    kd_label_shard_name(shard->epoch, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    kd_status st = kd_label_shard_write(path, shard, &bytes, &checksum);
    if (st == KD_OK)
        st = kd_label_index_append(index, name, bytes, checksum);
    if (st == KD_OK)
        st = kd_label_index_write(dir, index);
    return st;
}

/* ------------------------------------------------ distributed over ranks */

/* Every rank's outcome of a stage: its own error, or else the lowest
 * failed rank's, named. */
static kd_status agree(const char *what, kd_status st)
{
    bool stop;
    kd_status agreed = kd_dist_agree(what, st != KD_OK, false, &stop);
    return st != KD_OK ? st : agreed;
}

/* Rank 0 read the store: every rank learns whether that failed, and the
 * first epoch to label. */
static kd_status agree_on_start(kd_status st, int64_t *start)
{
    st = agree("reading the label store", st);
    if (st != KD_OK)
        return st;
    double first = kd_dist().rank == 0 ? (double)*start : 0;
    st = kd_dist_all_reduce_f64(&first, 1, KD_DIST_MAX);
    *start = (int64_t)first;
    return st;
}

static void part_path(const char *dir, int64_t epoch, int rank, int world, char *buf,
                      size_t size)
{
    snprintf(buf, size, "%s/epoch-%05lld.part-%d-of-%d", dir, (long long)epoch, rank, world);
}

/* The ranks' parts of one epoch in one shard, each row from the one part
 * that labelled it; rows no rank visited keep index -1, as in a shard one
 * process writes. */
static kd_status merge_parts(const char *dir, const kd_label_layout *layout, int64_t epoch,
                             int world, kd_label_shard *out)
{
    kd_status st = kd_label_shard_alloc(layout, epoch, out);
    size_t k = (size_t)layout->top_k;
    for (int r = 0; st == KD_OK && r < world; r++) {
        char path[4200];
        part_path(dir, epoch, r, world, path, sizeof path);
        kd_label_shard part;
        st = kd_label_shard_read(path, layout, epoch, &part);
        for (int64_t i = 0; st == KD_OK && i < layout->samples; i++) {
            size_t at = (size_t)i * k;
            if (part.indices[at] < 0)
                continue;
            if (out->indices[at] >= 0) {
                st = kd_error(KD_ERR_STATE, "%s: sample %lld was labelled by a lower rank too",
                              path, (long long)i);
            } else {
                memcpy(out->values + at, part.values + at, k * sizeof *out->values);
                memcpy(out->indices + at, part.indices + at, k * sizeof *out->indices);
            }
        }
        kd_label_shard_free(&part);
    }
    if (st != KD_OK)
        kd_label_shard_free(out);
    return st;
}

/* Removes every part of the epoch, those a crashed run with another
 * process count left included. */
static kd_status remove_parts(const char *dir, int64_t epoch)
{
    char prefix[64], path[4200];
    snprintf(prefix, sizeof prefix, "epoch-%05lld.part-", (long long)epoch);
    DIR *d = opendir(dir);
    if (!d)
        return kd_error(KD_ERR_IO, "%s: %s", dir, strerror(errno));
    kd_status st = KD_OK;
    for (struct dirent *e; st == KD_OK && (e = readdir(d));) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            st = kd_error(KD_ERR_IO, "%s: cannot remove it: %s", path, strerror(errno));
    }
    closedir(d);
    return st;
}

/* Each rank writes the rows it labelled as a part file (other rows -1);
 * once every part is written, rank 0 merges them into the epoch's shard
 * (the one a single process writes), lists it in the index and removes
 * the parts. `st` is this rank's labelling of the epoch: a failure on any
 * rank stops every one. */
static kd_status store_epoch_of_ranks(const char *dir, kd_status st, const kd_label_shard *shard,
                                      kd_label_index *index)
{
    kd_dist_info d = kd_dist();
    char path[4200], what[96];
    int64_t bytes;
    uint64_t checksum;
    part_path(dir, shard->epoch, d.rank, d.world, path, sizeof path);
    if (st == KD_OK)
        st = kd_label_shard_write(path, shard, &bytes, &checksum);
    snprintf(what, sizeof what, "labelling epoch %lld", (long long)shard->epoch + 1);
    st = agree(what, st);
    if (st == KD_OK && d.rank == 0) {
        kd_label_shard merged;
        st = merge_parts(dir, &shard->layout, shard->epoch, d.world, &merged);
        if (st == KD_OK)
            st = store_epoch(dir, &merged, index);
        kd_label_shard_free(&merged);
        if (st == KD_OK)
            st = remove_parts(dir, shard->epoch);
    }
    snprintf(what, sizeof what, "writing the shard of epoch %lld", (long long)shard->epoch + 1);
    return agree(what, st);
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
    bool distributed = kd_dist().world > 1;
    if (st == KD_OK)
        st = kd_make_dirs(o->out);
    /* rank 0 alone reads and writes the index */
    if (st == KD_OK && kd_dist().rank == 0)
        st = resume_index(o->out, fingerprint, &layout, &index, progress);
    json_decref(fingerprint);
    int64_t start = index.n_shards;
    if (distributed)
        st = agree_on_start(st, &start);
    if (st == KD_OK && progress)
        fprintf(progress, "%s: teacher '%s' labels %lld epochs x %lld views (top-%d of %d "
                "classes, %lld bytes per view) into %s%s\n", l->job->file,
                l->job->teacher.entry->name, (long long)o->epochs, (long long)layout.samples,
                layout.top_k, classes, (long long)layout.top_k * (2 + layout.index_bytes),
                o->out, start ? "" : " (new)");
    if (st == KD_OK && start >= o->epochs && progress)
        fprintf(progress, "%s: all %lld epochs are labelled already\n", o->out,
                (long long)start);
    for (int64_t e = start; st == KD_OK && e < o->epochs; e++) {
        kd_label_shard shard;
        st = kd_label_shard_alloc(&layout, e, &shard);
        if (st == KD_OK)
            st = label_epoch(l, e, &shard, progress);
        if (distributed)
            st = store_epoch_of_ranks(o->out, st, &shard, &index);
        else if (st == KD_OK)
            st = store_epoch(o->out, &shard, &index);
        kd_label_shard_free(&shard);
    }
    kd_label_index_free(&index);
    return st;
}

kd_status kd_label(const kd_job *job, const kd_label_options *o, FILE *progress)
{
    if (!job->teacher.present)
        return kd_error(KD_ERR_INVALID, "teacher: missing (label runs the job's teacher)");
    kd_status one = kd_job_one_teacher(job, "label");
    if (one != KD_OK)
        return one;
    if (o->epochs < 1 || o->top_k < 1)
        return kd_error(KD_ERR_INVALID, "label: %s must be at least 1",
                        o->epochs < 1 ? "--epochs" : "--top-k");
    kd_status st = kd_dist_init();
    if (st != KD_OK)
        return st;
    kd_dist_info d = kd_dist();
    if (d.rank != 0) /* rank 0 tells the progress */
        progress = NULL;
    labeller l = {.job = job};
    st = kd_threads_apply(job, NULL); /* the machine's cores shared by its ranks */
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
        /* each rank a contiguous block of whole batches: the same batches,
         * so the same views and batch transforms, as one process */
        l.first_batch = l.steps_per_epoch * d.rank / d.world;
        l.end_batch = l.steps_per_epoch * (d.rank + 1) / d.world;
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
