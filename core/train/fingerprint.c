/* The fingerprint of what decides a job's training views and its teacher's
 * outputs on them: what a label store records and the fkd loss checks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../params.h"
#include "label_store.h"
#include "session.h"

static json_t *provider_json(const kd_registry_entry *e, const kd_params *p)
{
    return json_pack("{s:s, s:O}", "name", e->name, "params", p->values);
}

static json_t *providers_json(int n, const kd_registry_entry *const *e, kd_params *const *p)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, provider_json(e[i], p[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* "fnv1a64:<hex>" of the whole file: the teacher's identity is its
 * weights, wherever the file lives. */
static kd_status hash_file(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kd_error(KD_ERR_IO, "%s: %s", path, strerror(errno));
    unsigned char *buf = malloc(1 << 20);
    uint64_t h = KD_FNV1A64_INIT;
    size_t got;
    while (buf && (got = fread(buf, 1, 1 << 20, f)) > 0)
        h = kd_fnv1a64(h, buf, got);
    bool failed = !buf || ferror(f);
    free(buf);
    fclose(f);
    if (failed)
        return kd_error(KD_ERR_IO, "%s: cannot read it to fingerprint the teacher", path);
    snprintf(out, size, "fnv1a64:%016llx", (unsigned long long)h);
    return KD_OK;
}

static json_t *numbers_json(int n, const double *v)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

/* A teacher in train-BN mode, like a batch transform, mixes samples: its
 * output on one sample depends on the batch it came in. */
bool kd_job_batches_mix(const kd_job *job)
{
    return job->train.n_batch_transforms > 0 || (job->teacher.present && job->teacher.train_bn);
}

static kd_status build(const kd_session *s, json_t **out)
{
    const kd_job *job = s->job;
    const kd_job_data *d = &job->train;
    json_t *data = json_pack(
        "{s:o, s:I, s:I, s:o, s:o, s:[iii]}", "dataset", provider_json(d->dataset,
                                                                         d->dataset_params),
        "samples", (json_int_t)(d->subset ? d->subset : s->train.info.length), "dataset_length",
        (json_int_t)s->train.info.length, "transforms",
        providers_json(d->n_transforms, d->transforms, d->transform_params), "batch_transforms",
        providers_json(d->n_batch_transforms, d->batch_transforms, d->batch_transform_params),
        "image", s->train.channels, s->train.height, s->train.width);
    /* the pool's samples are views of the epoch too (unlabeled_mix.h) */
    if (data && d->unlabeled &&
        json_object_set_new(data, "unlabeled", provider_json(d->unlabeled,
                                                             d->unlabeled_params)) != 0) {
        json_decref(data);
        data = NULL;
    }
    json_t *fp = data ? json_pack("{s:o, s:I}", "data", data, "seed", (json_int_t)job->seed)
                      : NULL;
    if (fp && kd_job_batches_mix(job))
        json_object_set_new(fp, "batching", json_pack("{s:I, s:b, s:b}", "batch_size",
                                                      (json_int_t)d->batch_size, "shuffle",
                                                      d->shuffle, "drop_last", d->drop_last));
    kd_status st = fp ? KD_OK : kd_error(KD_ERR_NOMEM, "fingerprint: out of memory");
    /* FKD labels come from one teacher: several would need a label per
     * teacher or a chosen one, which no command offers */
    if (st == KD_OK && (st = kd_job_one_teacher(job, "an FKD label store")) != KD_OK) {
        json_decref(fp);
        return st;
    }
    if (st == KD_OK && job->teacher.present) {
        char hash[64] = "initialised from the seed";
        if (job->teacher.weights)
            st = hash_file(job->teacher.weights, hash, sizeof hash);
        json_t *t = st == KD_OK ? json_pack("{s:s, s:O, s:s, s:b, s:s}", "model",
                                            job->teacher.entry->name, "params",
                                            job->teacher.params->values, "weights", hash,
                                            "train_bn", job->teacher.train_bn, "dtype",
                                            kd_dtype_name(job->dtype))
                                : NULL;
        /* a teacher that reads resized or renormalised images says so */
        const kd_teacher_run *tr = &s->teachers[0];
        if (st == KD_OK && t && tr->resize)
            json_object_set_new(t, "input_size", json_pack("[ii]", tr->height, tr->width));
        if (st == KD_OK && t && tr->scale)
            json_object_set_new(t, "normalize", json_pack("{s:o, s:o}", "mean",
                                numbers_json(tr->spec->n_norm, tr->spec->mean), "std",
                                numbers_json(tr->spec->n_norm, tr->spec->std)));
        if (st == KD_OK && (!t || json_object_set_new(fp, "teacher", t) != 0))
            st = kd_error(KD_ERR_NOMEM, "fingerprint: out of memory");
    }
    if (st != KD_OK) {
        json_decref(fp);
        return kd_error_wrap(st, "teacher.weights");
    }
    *out = fp;
    return KD_OK;
}

kd_status kd_session_fingerprint(kd_session *s, const char **text)
{
    *text = NULL;
    if (!s->train.vt)
        return kd_error(KD_ERR_STATE, "fingerprint: the session has no data.train");
    if (!s->fingerprint) {
        json_t *fp = NULL;
        kd_status st = build(s, &fp);
        if (st != KD_OK)
            return st;
        s->fingerprint = json_dumps(fp, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(fp);
        if (!s->fingerprint)
            return kd_error(KD_ERR_NOMEM, "fingerprint: out of memory");
    }
    *text = s->fingerprint;
    return KD_OK;
}
