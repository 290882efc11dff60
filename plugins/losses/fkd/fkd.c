/* The fkd loss (Shen & Xing, "A Fast Knowledge Distillation Framework",
 * 2022): the student learns from a teacher's soft labels stored per view
 * by `kdengine label` (core/train/label_store.h), so no teacher runs.
 *
 * Per sample of epoch e, the stored row of epoch e % E (E labelled epochs)
 * and dataset position i is rebuilt into a distribution over C classes:
 * the top k stored probabilities, and the rest as FKD recovers it
 * (marginal smoothing: 1 - sum(top k) shared evenly by the other C - k
 * classes; or renormalised top k). The loss is the batch mean of
 * -sum_c target_c * log softmax(z)_c, FKD's soft cross-entropy.
 *
 * The views must be the ones labelled: at bind the loss compares the
 * store's fingerprint with the job's (the host's pipeline_fingerprint)
 * and asks the host to replay epoch e % E's views in epoch e: its sample
 * order, per-sample augmentations and batch transforms' draws (mixup,
 * cutmix), so every epoch past E cycles through the stored ones as FKD
 * does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "../../../core/train/label_store.h"

typedef struct fkd_loss {
    char *labels; /* the store's folder */
    char *tap;
    bool renorm;
    kd_label_index index;
    kd_label_shard shard; /* the stored epoch in use */
    int64_t shard_epoch;  /* -1: none loaded */
    double *target;       /* [batch * C] scratch */
    int64_t target_rows;
    kd_loss_term term;
} fkd_loss;

static kd_status fkd_create(const kd_create_args *args, void **self)
{
    fkd_loss *f = calloc(1, sizeof *f);
    if (f) {
        f->labels = strdup(kd_params_string(args->params, "labels"));
        f->tap = strdup(kd_params_string(args->params, "tap"));
    }
    if (!f || !f->labels || !f->tap) {
        if (f) {
            free(f->labels);
            free(f->tap);
        }
        free(f);
        return kd_error(KD_ERR_NOMEM, "fkd: out of memory");
    }
    f->renorm = !strcmp(kd_params_string(args->params, "rest"), "renorm");
    f->shard_epoch = -1;
    f->term.name = "fkd";
    *self = f;
    return KD_OK;
}

static void fkd_destroy(void *self)
{
    fkd_loss *f = self;
    if (!f)
        return;
    kd_label_index_free(&f->index);
    kd_label_shard_free(&f->shard);
    free(f->target);
    free(f->labels);
    free(f->tap);
    free(f);
}

static kd_status fkd_needs(void *self, kd_loss_needs *out)
{
    fkd_loss *f = self;
    out->n_student = 1;
    out->student = (const char *const *)&f->tap;
    out->n_teacher = 0;
    out->teacher = NULL;
    return KD_OK;
}

/* The store must hold this job's views: the teacher is compared only when
 * the job has one too (a job using fkd usually has none). */
static kd_status check_pipeline(fkd_loss *f, const kd_host_services *host)
{
    const char *text;
    kd_status st = host->pipeline_fingerprint(host->host, &text);
    if (st != KD_OK)
        return kd_error_wrap(st, "fkd");
    json_error_t jerr;
    json_t *job = json_loads(text, 0, &jerr);
    if (!job)
        return kd_error(KD_ERR_FORMAT, "fkd: the host's fingerprint is not JSON: %s",
                        jerr.text);
    static const char *const optional[] = {"teacher", NULL};
    char why[1024];
    bool same = kd_label_fingerprint_equal(f->index.fingerprint, job, optional, why, sizeof why);
    json_decref(job);
    if (!same)
        return kd_error(KD_ERR_INVALID, "fkd: %s/%s was labelled from another pipeline: %s "
                        "(label again with this job's data.train, or train with the one it "
                        "was made from)", f->labels, KD_LABEL_INDEX_FILE, why);
    return KD_OK;
}

static kd_status fkd_bind(void *self, const kd_bind_args *args)
{
    fkd_loss *f = self;
    const kd_host_services *host = args->host;
    if (!KD_HAS_FIELD(host, kd_host_services, replay_views) || !host->pipeline_fingerprint ||
        !host->replay_views)
        return kd_error(KD_ERR_UNSUPPORTED, "fkd: this kdengine cannot say what made its "
                        "training views (its host services lack pipeline_fingerprint); "
                        "update kdengine");
    const kd_tap_shape *s = args->student;
    if (s->ndim != 2 || s->shape[1] != host->num_classes)
        return kd_error(KD_ERR_INVALID, "fkd: tap '%s' is not [N, %d] logits", f->tap,
                        host->num_classes);
    kd_status st = kd_label_index_load(f->labels, &f->index);
    if (st != KD_OK)
        return kd_error_wrap(st, "fkd (labels)");
    const kd_label_layout *l = &f->index.layout;
    if (f->index.n_shards < 1)
        return kd_error(KD_ERR_INVALID, "fkd: %s holds no complete epoch yet (run kdengine "
                        "label)", f->labels);
    if (l->num_classes != host->num_classes || l->samples != host->train_length)
        return kd_error(KD_ERR_INVALID, "fkd: %s holds labels of %d classes for %lld samples; "
                        "this job has %d classes and %lld training samples", f->labels,
                        l->num_classes, (long long)l->samples, host->num_classes,
                        (long long)host->train_length);
    if ((st = check_pipeline(f, host)) != KD_OK)
        return st;
    if ((st = host->replay_views(host->host, f->index.n_shards)) != KD_OK)
        return kd_error_wrap(st, "fkd");
    return KD_OK;
}

static kd_status use_epoch(fkd_loss *f, int64_t epoch)
{
    int64_t stored = epoch % f->index.n_shards;
    if (stored == f->shard_epoch)
        return KD_OK;
    kd_label_shard_free(&f->shard);
    f->shard_epoch = -1;
    kd_status st = kd_label_shard_load(f->labels, &f->index, stored, &f->shard);
    if (st != KD_OK)
        return kd_error_wrap(st, "fkd");
    f->shard_epoch = stored;
    return KD_OK;
}

/* One stored row as a distribution over every class, into t[C]. */
static kd_status rebuild_row(const fkd_loss *f, int64_t row, int64_t epoch, double *t)
{
    const kd_label_layout *l = &f->shard.layout;
    int k = l->top_k, c = l->num_classes;
    if (row < 0 || row >= l->samples)
        return kd_error(KD_ERR_INVALID, "fkd: sample %lld is outside the %lld labelled",
                        (long long)row, (long long)l->samples);
    const int32_t *idx = f->shard.indices + row * k;
    const uint16_t *val = f->shard.values + row * k;
    if (idx[0] < 0)
        return kd_error(KD_ERR_INVALID, "fkd: %s has no label of sample %lld in epoch %lld "
                        "(the labelled epoch did not visit it: drop_last?)", f->labels,
                        (long long)row, (long long)epoch + 1);
    double sum = 0;
    for (int j = 0; j < k; j++)
        sum += kd_f16_to_f32(val[j]);
    double rest = f->renorm || c == k ? 0.0 : (1.0 - sum) / (double)(c - k);
    for (int j = 0; j < c; j++)
        t[j] = rest;
    for (int j = 0; j < k; j++) {
        double v = kd_f16_to_f32(val[j]);
        t[idx[j]] = f->renorm ? v / sum : v;
    }
    return KD_OK;
}

static kd_status fkd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    fkd_loss *f = self;
    kd_tensor *z = args->student ? args->student[0] : NULL;
    if (!z || z->ndim != 2 || !args->indices)
        return kd_error(KD_ERR_INVALID, "fkd: needs [N, C] logits from tap '%s' and the "
                        "batch's sample indices", f->tap);
    kd_status st = use_epoch(f, args->epoch);
    if (st != KD_OK)
        return st;
    int64_t n = z->shape[0], c = f->index.layout.num_classes;
    if (n > f->target_rows) {
        double *grown = realloc(f->target, (size_t)(n * c) * sizeof *grown);
        if (!grown)
            return kd_error(KD_ERR_NOMEM, "fkd: out of memory for a batch of %lld", (long long)n);
        f->target = grown;
        f->target_rows = n;
    }
    kd_tensor *rows = args->indices->device == KD_CPU
                          ? kd_contiguous(args->indices)
                          : kd_tensor_to_device(args->indices, KD_CPU);
    if (!rows)
        return kd_error_wrap(kd_last_status(), "fkd: sample indices");
    const int64_t *at = kd_tensor_data(rows);
    for (int64_t i = 0; st == KD_OK && i < n; i++)
        st = rebuild_row(f, at[i], args->epoch, f->target + i * c);
    if (st != KD_OK)
        return st;
    int64_t shape[2] = {n, c};
    bool grad = kd_set_grad_enabled(false);
    kd_tensor *target = kd_tensor_from_data(KD_F64, 2, shape, f->target);
    if (target && z->device != KD_CPU)
        target = kd_tensor_to_device(target, z->device);
    if (target && z->dtype != KD_F64)
        target = kd_cast(target, z->dtype);
    kd_set_grad_enabled(grad);
    kd_tensor *loss = target ? kd_cross_entropy_soft(z, target) : NULL;
    if (!loss)
        return kd_error_wrap(kd_last_status(), "fkd (tap '%s')", f->tap);
    f->term.value = loss;
    out->loss = loss;
    out->n_terms = 1;
    out->terms = &f->term;
    return KD_OK;
}

static const kd_loss_vtable fkd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = fkd_create,
    .destroy = fkd_destroy,
    .needs = fkd_needs,
    .forward = fkd_forward,
    .bind = fkd_bind,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "fkd", &fkd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "fkd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
