#include "crd_negatives.h"

#include <stdlib.h>
#include <string.h>

#include <kdengine/plugin.h>

kd_status crd_negatives_init(crd_negatives *s, const int64_t *labels, int64_t n,
                             const char *who)
{
    memset(s, 0, sizeof *s);
    int64_t classes = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] == KD_LABEL_NONE)
            return kd_error(KD_ERR_INVALID, "%s: training sample %lld has no label (an "
                            "unlabeled pool's); CRD draws its negatives by class, so every "
                            "training sample needs one", who, (long long)i);
        if (labels[i] < 0 || labels[i] >= n)
            return kd_error(KD_ERR_INVALID, "%s: training sample %lld has label %lld, "
                            "outside [0, %lld)", who, (long long)i, (long long)labels[i],
                            (long long)n);
        if (labels[i] + 1 > classes)
            classes = labels[i] + 1;
    }
    s->by_class = malloc((size_t)n * sizeof *s->by_class);
    s->pool = malloc((size_t)n * sizeof *s->pool);
    s->class_start = calloc((size_t)classes + 1, sizeof *s->class_start);
    if (!s->by_class || !s->pool || !s->class_start) {
        crd_negatives_free(s);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory for the class tables of %lld samples",
                        who, (long long)n);
    }
    /* A counting sort: starts from the class sizes, then fill in order. */
    for (int64_t i = 0; i < n; i++)
        s->class_start[labels[i] + 1]++;
    for (int64_t c = 0; c < classes; c++)
        s->class_start[c + 1] += s->class_start[c];
    for (int64_t i = 0; i < n; i++)
        s->by_class[s->class_start[labels[i]]++] = i;
    for (int64_t c = classes; c > 0; c--)
        s->class_start[c] = s->class_start[c - 1];
    s->class_start[0] = 0;
    s->n = n;
    s->classes = classes;
    s->labels = labels;
    return KD_OK;
}

void crd_negatives_free(crd_negatives *s)
{
    free(s->by_class);
    free(s->pool);
    free(s->class_start);
    memset(s, 0, sizeof *s);
}

/* Position j of the other-class pool of class c: the grouped indices
 * before c, then those after it. */
static int64_t pool_at(const crd_negatives *s, int64_t c, int64_t j)
{
    int64_t own = s->class_start[c + 1] - s->class_start[c];
    return s->by_class[j < s->class_start[c] ? j : j + own];
}

kd_status crd_negatives_draw(crd_negatives *s, const int64_t *index, int64_t batch, int64_t k,
                             bool relax, kd_rng *rng, int64_t *out, const char *who)
{
    for (int64_t b = 0; b < batch; b++) {
        int64_t i = index[b];
        if (i < 0 || i >= s->n)
            return kd_error(KD_ERR_INVALID, "%s: dataset index %lld of batch row %lld is "
                            "outside the %lld training samples", who, (long long)i,
                            (long long)b, (long long)s->n);
        int64_t c = s->labels[i];
        int64_t size = s->n - (s->class_start[c + 1] - s->class_start[c]);
        if (size < 1)
            return kd_error(KD_ERR_INVALID, "%s: every training sample is of class %lld, so "
                            "there are no negatives", who, (long long)c);
        int64_t *row = out + b * (k + 1);
        row[0] = i;
        if (relax) {
            int64_t own = s->class_start[c + 1] - s->class_start[c];
            row[0] = s->by_class[s->class_start[c] + (int64_t)kd_rng_below(rng, (uint64_t)own)];
        }
        if (k > size) {
            for (int64_t j = 1; j <= k; j++)
                row[j] = pool_at(s, c, (int64_t)kd_rng_below(rng, (uint64_t)size));
            continue;
        }
        /* The first k steps of a Fisher-Yates shuffle of the pool. */
        for (int64_t j = 0; j < size; j++)
            s->pool[j] = pool_at(s, c, j);
        for (int64_t j = 0; j < k; j++) {
            int64_t pick = j + (int64_t)kd_rng_below(rng, (uint64_t)(size - j));
            int64_t v = s->pool[pick];
            s->pool[pick] = s->pool[j];
            s->pool[j] = v;
            row[1 + j] = v;
        }
    }
    return KD_OK;
}
