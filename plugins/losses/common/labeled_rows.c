/* The labeled rows of a batch (labeled_rows.h). */
#include "labeled_rows.h"

#include <kdengine/plugin.h>

kd_status kd_labeled_rows(kd_tensor *labels, kd_tensor **rows, int64_t *n_labeled)
{
    *rows = NULL;
    *n_labeled = 0;
    kd_tensor *host = labels->device == KD_CPU ? labels : kd_tensor_to_device(labels, KD_CPU);
    if (!host)
        return kd_last_status();
    int64_t total = kd_tensor_numel(host);
    for (int64_t i = 0; i < total; i++)
        *n_labeled += kd_tensor_get(host, i) != KD_LABEL_NONE;
    if (*n_labeled == total)
        return KD_OK;
    *rows = kd_tensor_empty(KD_I64, KD_CPU, 1, (int64_t[]){*n_labeled});
    if (!*rows)
        return kd_last_status();
    int64_t *at = kd_tensor_data(*rows);
    for (int64_t i = 0, k = 0; i < total; i++)
        if (kd_tensor_get(host, i) != KD_LABEL_NONE)
            at[k++] = i;
    return KD_OK;
}
