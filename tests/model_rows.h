/* The timm model table. One row = one model case that test_timm_models
 * holds against timm 0.9.16 itself (tests/parity/timm_models.py builds the
 * same model with timm, pretrained=False):
 *
 *   - the kdengine model, created with `params`, has exactly the tensors
 *     of timm's state_dict (names, shapes, order) and loads them by name;
 *   - its eval-mode logits and taps match timm's in f32 (relative norm
 *     error within max(1e-4, KT_TORCH_ERROR_FACTOR x PyTorch's own f32
 *     error against f64)) and in f64 (1e-9; gradients 1e-7, see
 *     F64_GRAD_RTOL);
 *   - one train-mode step (no drop-path, no dropout) gives timm's logits,
 *     the gradients of the first and last layers' parameters and of the
 *     input, and its buffers after the step;
 *   - forward_from every tap gives the rest of the forward.
 *
 * Keep rows cheap (the whole table runs in one timm process): reduced
 * depths with the real key names, small inputs. A family's rows live in
 * tests/models/rows_<family>.c; the full-size models are held to the
 * committed key lists of tests/parity/timm_keys/ (kt_full_keys rows).
 *
 * Leave drop-path and dropout at 0 in `params` (timm's kwargs may set
 * them: the reference turns them off for the train step). */
#ifndef KD_TEST_MODEL_ROWS_H
#define KD_TEST_MODEL_ROWS_H

#include <kdengine/kdengine.h>

#define KT_MAX_ROW_TAPS 16

/* A kdengine tap and the timm module whose forward output it equals. */
typedef struct kt_tap_map {
    const char *tap;     /* kdengine tap name; NULL ends the list */
    const char *module;  /* timm module name (named_modules) */
    kd_tap_layout layout; /* what the model must declare for the tap */
} kt_tap_map;

typedef struct kt_model_row {
    const char *provider;    /* kdengine model provider; NULL ends a table */
    const char *params;      /* its parameters, a JSON object */
    const char *timm_name;   /* timm.create_model name */
    const char *timm_kwargs; /* JSON object of create_model kwargs */
    int batch, size;         /* input [batch, in_chans, size, size] */
    kt_tap_map taps[KT_MAX_ROW_TAPS]; /* logits are always compared */
} kt_model_row;

/* A tap of a provider that forward_from must refuse with an error rather
 * than start from (a distilled DeiT's heads read two tokens that its
 * pooled "pre_logits" no longer holds). */
typedef struct kt_refused_start {
    const char *provider; /* NULL ends a table */
    const char *tap;
} kt_refused_start;

/* A full-size model whose tensors must equal a committed timm key list
 * (tests/parity/timm_keys/<timm_name>.txt: "key<TAB>shape<TAB>dtype" per
 * line, written by timm_models.py --keys) at its default parameters. */
typedef struct kt_full_keys {
    const char *provider; /* NULL ends a table */
    const char *timm_name;
} kt_full_keys;

/* Each family's tables end with a row whose provider is NULL. */
extern const kt_model_row kt_model_rows_resnet[];
extern const kt_full_keys kt_full_keys_resnet[];
extern const kt_model_row kt_model_rows_vit[];
extern const kt_full_keys kt_full_keys_vit[];
extern const kt_refused_start kt_refused_starts_vit[];
extern const kt_model_row kt_model_rows_mixer[];
extern const kt_full_keys kt_full_keys_mixer[];
extern const kt_model_row kt_model_rows_mobilenet[];
extern const kt_full_keys kt_full_keys_mobilenet[];
extern const kt_model_row kt_model_rows_convnext[];
extern const kt_full_keys kt_full_keys_convnext[];
extern const kt_model_row kt_model_rows_swin[];
extern const kt_full_keys kt_full_keys_swin[];
extern const kt_model_row kt_model_rows_beit[];
extern const kt_full_keys kt_full_keys_beit[];

#endif
