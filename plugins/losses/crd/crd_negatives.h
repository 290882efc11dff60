/* CRD's negative sampler: for each sample of a batch, a positive (its own
 * dataset index, or in "relax" mode an image of its class drawn uniformly,
 * itself included) followed by K indices drawn uniformly from the images of
 * the other classes, as RepDistiller's CIFAR loader draws them: without
 * replacement when K fits in that pool, with replacement when it does not.
 *
 * The draws come only from the kd_rng handed in, which the host keys by
 * (seed, step), so a resumed run draws the same negatives without saving
 * any sampler state. The test compiles this file too, to learn the indices
 * a step used and hand them to the PyTorch reference. */
#ifndef KD_PLUGIN_CRD_NEGATIVES_H
#define KD_PLUGIN_CRD_NEGATIVES_H

#include <stdbool.h>
#include <stdint.h>

#include <kdengine/rng.h>
#include <kdengine/status.h>

#define CRD_HIDDEN __attribute__((visibility("hidden")))

typedef struct crd_negatives {
    int64_t n;            /* dataset length */
    int64_t classes;
    int64_t *by_class;    /* [n] dataset indices grouped by class, ascending */
    int64_t *class_start; /* [classes + 1]: class c is by_class[start[c]..start[c+1]) */
    int64_t *pool;        /* [n] scratch for drawing without replacement */
    const int64_t *labels; /* [n], the caller's */
} crd_negatives;

/* Groups the dataset's n labels (each in [0, n)) by class. `who` names the
 * loss in messages. */
CRD_HIDDEN kd_status crd_negatives_init(crd_negatives *s, const int64_t *labels, int64_t n,
                                        const char *who);
CRD_HIDDEN void crd_negatives_free(crd_negatives *s);

/* out[b * (k + 1) + 0] = the positive of index[b] (index[b] itself unless
 * relax); out[b * (k + 1) + 1 .. k] = its k negatives, for b < batch. */
CRD_HIDDEN kd_status crd_negatives_draw(crd_negatives *s, const int64_t *index, int64_t batch,
                                        int64_t k, bool relax, kd_rng *rng, int64_t *out,
                                        const char *who);

#endif
