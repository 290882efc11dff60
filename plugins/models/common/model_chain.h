/* A model as a chain of segments, one per tap: segment t takes tap t - 1's
 * tensor (the image for t = 0) to tap t's. forward runs the chain from the
 * image, forward_from from a tap; both stop at the last tap wanted. The
 * model plugins (mobilenet, convnext, swin, beit, mixer, vit) drive their
 * forwards with it; nothing here is part of the SDK. */
#ifndef KD_MODELS_MODEL_CHAIN_H
#define KD_MODELS_MODEL_CHAIN_H

#include <stdbool.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

/* Tap t's segment on x; NULL on failure (message set). */
typedef kd_tensor *(*mc_segment_fn)(void *model, int t, kd_tensor *x, bool training,
                                    kd_rng *rng);

typedef struct model_chain {
    const char *model;       /* the model's name, for messages */
    const kd_tap_info *taps; /* n_taps, in chain order; borrowed */
    int n_taps;
    void *self;
    mc_segment_fn segment;
} model_chain;

/* Runs segments from + 1 (from = -1: the image in args->input) up to the
 * last tap args->want asks for, storing each tap it passes in args->taps;
 * errors name the model and the tap whose segment failed. */
kd_status mc_run(model_chain c, int from, const kd_forward_args *args);
/* forward_from starts from a tap that has a segment after it. */
kd_status mc_check_from(model_chain c, int from);
/* A forward's arguments: input, want and taps set, the input of the
 * model's dtype on the CPU. `what` names the call ("forward"). */
kd_status mc_check_args(const char *model, kd_dtype dtype, const kd_forward_args *args,
                        const char *what);

#endif
