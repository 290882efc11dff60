/* See model_layers.h. */
#include "model_layers.h"

#include <stdio.h>
#include <string.h>

static bool matches(const char *name, const char *const *list)
{
    for (; list && *list; list++) {
        size_t len = strlen(*list);
        if (strncmp(name, *list, len) == 0 && (name[len] == '\0' || name[len] == '.'))
            return true;
    }
    return false;
}

/* The layer of a block's parameter, or -1 when name is in no block. */
static int block_layer(const ml_layers *l, const char *name)
{
    int first = 1; /* the layer of the current stage's first block */
    for (int s = 0; s < l->n_stages; s++) {
        char prefix[64];
        if (l->stage)
            snprintf(prefix, sizeof prefix, "%s.%d.", l->stage, s);
        else
            prefix[0] = '\0';
        size_t len = strlen(prefix);
        if (strncmp(name, prefix, len) == 0) {
            const char *rest = name + len;
            int b = -1, end = 0;
            if (l->stage && matches(rest, (const char *const[]){"downsample", NULL}))
                return first;
            if (sscanf(rest, "blocks.%d.%n", &b, &end) == 1 && end > 0 && b >= 0 &&
                b < l->depths[s])
                return first + b;
        }
        first += l->depths[s];
    }
    return -1;
}

kd_status ml_layer_id(const ml_layers *l, const char *name, int *id, int *num_layers)
{
    int blocks = 0;
    for (int s = 0; s < l->n_stages; s++)
        blocks += l->depths[s];
    *num_layers = blocks + 2;
    if (matches(name, l->stem))
        *id = 0;
    else if (matches(name, l->last_block))
        *id = blocks;
    else if (matches(name, l->head))
        *id = blocks + 1;
    else if ((*id = block_layer(l, name)) < 0)
        return kd_error(KD_ERR_INVALID, "%s: no layer for parameter '%s'", l->owner, name);
    return KD_OK;
}
