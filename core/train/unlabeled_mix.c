/* The labeled training set followed by an unlabeled pool (unlabeled_mix.h). */
#include "unlabeled_mix.h"

#include <stdlib.h>

struct kd_unlabeled_mix {
    kd_dataset_vtable vt; /* this mix's: callbacks the labeled set lacks stay NULL */
    const kd_dataset_vtable *labeled_vt, *pool_vt;
    void *labeled, *pool;
    kd_dataset_info labeled_info, pool_info;
    const char *path;
};

static void mix_destroy(void *self)
{
    kd_unlabeled_mix *m = self;
    if (!m)
        return;
    if (m->labeled)
        m->labeled_vt->destroy(m->labeled);
    if (m->pool)
        m->pool_vt->destroy(m->pool);
    free(m);
}

/* A size both parts share, else 0 (samples vary). */
static int common(int a, int b) { return a == b ? a : 0; }

static kd_status mix_info(void *self, kd_dataset_info *out)
{
    const kd_unlabeled_mix *m = self;
    const kd_dataset_info *a = &m->labeled_info, *b = &m->pool_info;
    *out = (kd_dataset_info){.length = a->length + b->length,
                             .height = common(a->height, b->height),
                             .width = common(a->width, b->width),
                             .channels = common(a->channels, b->channels),
                             .num_classes = a->num_classes};
    return KD_OK;
}

static kd_status mix_get(void *self, int64_t index, kd_sample *out, int64_t *label)
{
    const kd_unlabeled_mix *m = self;
    if (index < m->labeled_info.length)
        return m->labeled_vt->get(m->labeled, index, out, label);
    int64_t ignored;
    kd_status st = m->pool_vt->get(m->pool, index - m->labeled_info.length, out, &ignored);
    if (st != KD_OK)
        return kd_error_wrap(st, "%s", m->path);
    *label = KD_LABEL_NONE;
    return KD_OK;
}

static kd_status mix_labels(void *self, int64_t *labels)
{
    const kd_unlabeled_mix *m = self;
    kd_status st = KD_OK;
    if (m->labeled_vt->labels) {
        st = m->labeled_vt->labels(m->labeled, labels);
    } else {
        kd_sample sample = {0};
        for (int64_t i = 0; st == KD_OK && i < m->labeled_info.length; i++)
            st = m->labeled_vt->get(m->labeled, i, &sample, &labels[i]);
        free(sample.data);
    }
    for (int64_t i = 0; st == KD_OK && i < m->pool_info.length; i++)
        labels[m->labeled_info.length + i] = KD_LABEL_NONE;
    return st;
}

static const char *mix_class_name(void *self, int index)
{
    const kd_unlabeled_mix *m = self;
    return m->labeled_vt->class_name(m->labeled, index);
}

static const char *mix_sample_name(void *self, int64_t index)
{
    const kd_unlabeled_mix *m = self;
    int64_t n = m->labeled_info.length;
    if (index < n)
        return m->labeled_vt->sample_name ? m->labeled_vt->sample_name(m->labeled, index) : NULL;
    return m->pool_vt->sample_name ? m->pool_vt->sample_name(m->pool, index - n) : NULL;
}

static int64_t mix_skipped(void *self)
{
    const kd_unlabeled_mix *m = self;
    return (m->labeled_vt->skipped ? m->labeled_vt->skipped(m->labeled) : 0) +
           (m->pool_vt->skipped ? m->pool_vt->skipped(m->pool) : 0);
}

kd_status kd_unlabeled_mix_open(const kd_dataset_vtable *vt, void *self,
                                const kd_dataset_vtable *pool_vt, void *pool_self,
                                const char *path, const kd_dataset_vtable **vt_out,
                                kd_unlabeled_mix **out)
{
    *out = NULL;
    *vt_out = NULL;
    kd_unlabeled_mix *m = calloc(1, sizeof *m);
    if (!m) {
        vt->destroy(self);
        pool_vt->destroy(pool_self);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", path);
    }
    *m = (kd_unlabeled_mix){.labeled_vt = vt, .pool_vt = pool_vt, .labeled = self,
                            .pool = pool_self, .path = path};
    kd_status st = vt->info(self, &m->labeled_info);
    if (st == KD_OK && (st = pool_vt->info(pool_self, &m->pool_info)) != KD_OK)
        st = kd_error_wrap(st, "%s", path);
    if (st == KD_OK && m->pool_info.length < 1)
        st = kd_error(KD_ERR_INVALID, "%s: it is empty", path);
    if (st == KD_OK && m->labeled_info.length > INT64_MAX / 2 - m->pool_info.length)
        st = kd_error(KD_ERR_INVALID, "%s: %lld samples besides %lld labeled ones are too many",
                      path, (long long)m->pool_info.length, (long long)m->labeled_info.length);
    if (st != KD_OK) {
        mix_destroy(m);
        return st;
    }
    m->vt = (kd_dataset_vtable){
        .header = {sizeof m->vt, KD_KIND_DATASET},
        .destroy = mix_destroy,
        .info = mix_info,
        .get = mix_get,
        .labels = mix_labels,
        .class_name = vt->class_name ? mix_class_name : NULL,
        .skipped = vt->skipped || pool_vt->skipped ? mix_skipped : NULL,
        .sample_name = vt->sample_name || pool_vt->sample_name ? mix_sample_name : NULL,
    };
    *vt_out = &m->vt;
    *out = m;
    return KD_OK;
}
