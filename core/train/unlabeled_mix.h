/* data.train.unlabeled (SSLD): the training set followed by an unlabeled
 * pool, as one dataset the loader and the host services see. Sample i is
 * the labeled set's i for i < A (its length), else the pool's i - A with
 * the label KD_LABEL_NONE, whatever label the pool's dataset gives; the
 * epoch's shuffle and the transforms treat both alike. The classes, their
 * names and the count are the labeled set's; skipped() adds both.
 *
 * Ownership: the mix owns both instances and destroys them with itself. */
#ifndef KD_TRAIN_UNLABELED_MIX_H
#define KD_TRAIN_UNLABELED_MIX_H

#include <kdengine/plugin.h>

typedef struct kd_unlabeled_mix kd_unlabeled_mix;

/* A mix of the labeled instance (vt, self) and the pool's (pool_vt,
 * pool_self), taking both over (also when it fails: then it destroys
 * them); *vt_out is the mix's vtable, valid while *out lives. `path`
 * ("data.train.unlabeled") names the pool in errors. */
kd_status kd_unlabeled_mix_open(const kd_dataset_vtable *vt, void *self,
                                const kd_dataset_vtable *pool_vt, void *pool_self,
                                const char *path, const kd_dataset_vtable **vt_out,
                                kd_unlabeled_mix **out);

#endif
