/* kdengine: the plugin boundary, ABI 2.
 *
 * A plugin is a folder with a manifest.json and a shared library. The
 * manifest says what the library provides (kind, name, one-line summary,
 * parameter schema) so the host can list and validate without loading
 * code; the library is dlopen'ed only when a job uses one of its
 * providers. The library exports exactly one symbol, kd_plugin_entry,
 * which fills a kd_plugin_info: the ABI it was built against, a build
 * fingerprint, and a vtable per provider.
 *
 *   manifest.json
 *   {
 *     "abi": 2, "name": "kd", "version": "2.0.0", "library": "kd.so",
 *     "provides": [
 *       { "kind": "loss", "name": "kd",
 *         "summary": "Hinton KD: KL(teacher || student) at temperature T, times T^2",
 *         "params": {
 *           "temperature": {"type": "number", "default": 4.0, "min": 0,
 *                           "exclusive_min": true, "doc": "softening temperature"},
 *           "logit_stand": {"type": "boolean", "default": false,
 *                           "doc": "z-score both logits first"} } } ]
 *   }
 *
 * Parameter types: "number", "integer", "boolean", "string" (with optional
 * "choices"), "array" (with "items": one of the scalar types). "min" and
 * "max" bound numbers and integers ("exclusive_min"/"exclusive_max" make a
 * bound strict). A parameter without "default" is required. "file": true
 * on a string says it names a file: a job is refused at validation when the
 * file cannot be read.
 *
 * Growth. Within ABI 2 every struct that crosses the boundary can grow at
 * its end without breaking a built plugin or host:
 * - a vtable starts with kd_vtable_header, whose size is the plugin's
 *   sizeof; the host accepts a vtable from an older, smaller header and
 *   treats the callbacks past its size as not provided (NULL);
 * - a struct the host hands a plugin (kd_create_args, kd_forward_args,
 *   kd_bind_args, kd_loss_args, kd_loss_result, kd_batch_args,
 *   kd_schedule_info, kd_host_services) starts with its size; a plugin
 *   reads a field added after ABI 2.0 only when KD_HAS_FIELD says the host
 *   filled it;
 * - an array a plugin returns (named tensors, taps, providers) comes with
 *   its element size, and the host reads it with that stride.
 * Anything else (a field removed, moved or retyped, a callback's meaning
 * changed) bumps KD_PLUGIN_ABI, and the host refuses plugins of another ABI.
 *
 * Ownership: everything a plugin returns through kd_plugin_info (names,
 * vtables, provider arrays) is static data of the library and lives until
 * the host unloads it. Instances a vtable creates belong to the plugin and
 * are released through the same vtable. */
#ifndef KDENGINE_PLUGIN_H
#define KDENGINE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kdengine/api.h>
#include <kdengine/dtype.h>
#include <kdengine/rng.h>
#include <kdengine/status.h>
#include <kdengine/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KD_PLUGIN_ABI 2
#define KD_PLUGIN_ENTRY_SYMBOL "kd_plugin_entry"

/* True when the struct *p (whose first member is `uint32_t size`) is large
 * enough to hold `field`: how a plugin checks a host struct before reading
 * a field added after the ABI began. */
#define KD_HAS_FIELD(p, type, field)                                            \
    ((p)->size >= offsetof(type, field) + sizeof(((const type *)0)->field))

typedef enum kd_plugin_kind {
    KD_KIND_MODEL = 0,
    KD_KIND_LOSS,
    KD_KIND_DATASET,
    KD_KIND_TRANSFORM,       /* per sample */
    KD_KIND_BATCH_TRANSFORM, /* per batch (mixup, cutmix) */
    KD_KIND_OPTIMIZER,
    KD_KIND_SCHEDULER,
    KD_KIND_COUNT
} kd_plugin_kind;

/* "model", "loss", "dataset", "transform", "batch_transform", "optimizer",
 * "scheduler"; NULL outside the enum. */
KD_API const char *kd_plugin_kind_name(kd_plugin_kind kind);
/* -1 for an unknown name. */
KD_API int kd_plugin_kind_from_name(const char *name);

/* Every vtable starts with this header. */
typedef struct kd_vtable_header {
    uint32_t size; /* sizeof the plugin's vtable struct */
    uint32_t kind; /* a kd_plugin_kind */
} kd_vtable_header;

typedef struct kd_plugin_provider {
    kd_plugin_kind kind;
    const char *name;               /* as in the manifest */
    const kd_vtable_header *vtable; /* the kind's vtable */
    const void *user_data;          /* handed to create() as provider_data:
                                       one vtable serves many providers
                                       (a table row per model variant) */
} kd_plugin_provider;

/* Filled by the plugin's entry function. */
typedef struct kd_plugin_info {
    uint32_t abi;           /* KD_PLUGIN_ABI it was built against */
    uint32_t info_size;     /* sizeof(kd_plugin_info) it was built with */
    uint32_t tensor_size;   /* sizeof(kd_tensor): the build fingerprint */
    uint32_t max_dims;      /* KD_MAX_DIMS */
    const char *name;       /* must equal the manifest's "name" */
    const char *version;    /* must equal the manifest's "version" */
    int n_providers;
    uint32_t provider_size; /* sizeof(kd_plugin_provider): the stride */
    const kd_plugin_provider *providers;
} kd_plugin_info;

typedef kd_status (*kd_plugin_entry_fn)(kd_plugin_info *info);

/* Fills the fingerprint fields; a plugin's entry starts with it:
 *
 *   kd_status kd_plugin_entry(kd_plugin_info *info)
 *   {
 *       KD_PLUGIN_INFO_INIT(info, "kd", "2.0.0");
 *       KD_PLUGIN_PROVIDERS(info, providers, 1);
 *       return KD_OK;
 *   }
 */
#define KD_PLUGIN_INFO_INIT(info, plugin_name, plugin_version)                 \
    do {                                                                       \
        (info)->abi = KD_PLUGIN_ABI;                                           \
        (info)->info_size = (uint32_t)sizeof(kd_plugin_info);                  \
        (info)->tensor_size = (uint32_t)sizeof(kd_tensor);                     \
        (info)->max_dims = KD_MAX_DIMS;                                        \
        (info)->name = (plugin_name);                                          \
        (info)->version = (plugin_version);                                    \
    } while (0)

#define KD_PLUGIN_PROVIDERS(info, array, count)                                \
    do {                                                                       \
        (info)->n_providers = (count);                                         \
        (info)->provider_size = (uint32_t)sizeof(kd_plugin_provider);          \
        (info)->providers = (array);                                           \
    } while (0)

/* The exported entry; declared here so a plugin's definition is checked
 * against it. The plugin defines it (libkdcore does not): hence no KD_API,
 * but default visibility, so a plugin built -fvisibility=hidden exports it. */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
kd_status kd_plugin_entry(kd_plugin_info *info);

/* ======================================================================
 * Per-kind vtables. A provider's vtable is a static struct of the library
 * whose first member is a kd_vtable_header {sizeof(struct), kind}.
 * Callbacks marked "required" must be set: the host refuses a library
 * whose vtable lacks one, naming the library and the callback.
 *
 * Instances: create() makes one and returns it through *self (an opaque
 * pointer the plugin defines); destroy() releases it and everything it
 * owns. Every other callback receives that pointer. A callback that fails
 * returns a status with kd_error() set, naming the provider and the bad
 * value; the host adds the job path in front.
 *
 * Threads: model, loss, optimizer and scheduler callbacks run on the
 * training thread. Dataset get() and transform apply() run on loader
 * threads, several at once on one instance: after create() an instance
 * must be read-only (randomness comes in through the kd_rng argument).
 * ====================================================================== */

/* Parameters an instance receives: see the accessors at the end. */
typedef struct kd_params kd_params;

/* What every create() receives. */
typedef struct kd_create_args {
    uint32_t size;
    const kd_params *params;   /* validated, defaults filled; this call only */
    uint64_t seed;             /* the job's seed mixed with the instance's
                                  role: initialise weights from it */
    kd_device device;          /* where tensors live */
    kd_dtype dtype;            /* what parameters, buffers and state are made
                                  in and computed in: KD_F32, or KD_F64 for
                                  runs checked against a float64 reference */
    const char *provider;      /* the provider's name, as in the manifest */
    const void *provider_data; /* its kd_plugin_provider.user_data */
    /* appended within ABI 2: read it when KD_HAS_FIELD says so */
    /* An optimizer's create(): [params->n] learning-rate multipliers, one
     * per parameter in list order (layer-wise decay, "optim.layer_decay"):
     * parameter i steps at lr * lr_scales[i], weight decay included, as
     * timm's param groups with "lr_scale". NULL: every scale is 1. */
    const double *lr_scales;
} kd_create_args;

/* Parameter i's learning-rate multiplier from an optimizer's create args:
 * lr_scales[i] when the host filled it, else 1. */
static inline double kd_create_args_lr_scale(const kd_create_args *a, int i)
{
    return KD_HAS_FIELD(a, kd_create_args, lr_scales) && a->lr_scales ? a->lr_scales[i] : 1.0;
}

/* --- named tensors: parameters, buffers, state ---
 * Models, losses and optimizers expose what they own as a list of named
 * tensors. Names are the checkpoint and state_dict names (timm's for
 * models: "layer1.0.conv1.weight", "bn1.running_mean"). The list and the
 * tensors belong to the instance, caller-owned tensors (see tensor.h), and
 * stay valid and in place until destroy(): the host loads weights by
 * copying into them and saves by reading them. */
enum {
    KD_TENSOR_PARAM = 1u << 0,    /* trainable: the optimizer updates it */
    KD_TENSOR_BUFFER = 1u << 1,   /* state saved with it (BN running stats,
                                     a memory bank), not trained */
    KD_TENSOR_NO_DECAY = 1u << 2, /* a parameter weight decay should skip
                                     under the no-decay rule (biases, norm
                                     weights, position embeddings) */
    KD_TENSOR_OPTIONAL = 1u << 3  /* a weights file may lack it (timm's
                                     num_batches_tracked): loading keeps
                                     its value instead of failing */
};

typedef struct kd_named_tensor {
    const char *name;
    kd_tensor *tensor;
    uint32_t flags; /* KD_TENSOR_* */
} kd_named_tensor;

/* A list of named tensors with its element size, so the element can grow:
 * read element i with kd_tensor_list_at. */
typedef struct kd_tensor_list {
    uint32_t elem_size; /* sizeof(kd_named_tensor) of whoever made it */
    int n;
    const kd_named_tensor *items;
} kd_tensor_list;

static inline const kd_named_tensor *kd_tensor_list_at(const kd_tensor_list *l, int i)
{
    return (const kd_named_tensor *)(const void *)((const char *)l->items +
                                                   (size_t)i * l->elem_size);
}

/* Fills a list from a plugin's array. */
#define KD_LIST_SET(list, array, count)                                        \
    do {                                                                       \
        (list)->elem_size = (uint32_t)sizeof *(array);                         \
        (list)->n = (count);                                                   \
        (list)->items = (array);                                               \
    } while (0)

/* ---------------------------------------------------------------- model */

/* How a tap's tensor is laid out, so a loss can bind a transformer's
 * feature to a CNN's without guessing from a shape. */
typedef enum kd_tap_layout {
    KD_LAYOUT_NCHW = 0, /* [N, C, H, W] maps */
    KD_LAYOUT_NHWC,     /* [N, H, W, C] maps (ConvNeXt, Swin stages) */
    KD_LAYOUT_TOKENS,   /* [N, L, C]: prefix_tokens (cls, dist) then patches */
    KD_LAYOUT_NC        /* [N, C] vectors: pooled features, logits */
} kd_tap_layout;

/* A tap is a named intermediate output a loss can read: "stage1".."stage4",
 * "pre_logits" (the pooled features), "logits". The list is fixed at
 * create(); its order is the model's forward order, logits last. */
typedef struct kd_tap_info {
    const char *name;
    int channels;       /* C */
    int reduction;      /* input size / map size (1 for vectors); for
                           tokens the patch size */
    kd_tap_layout layout;
    int prefix_tokens;  /* KD_LAYOUT_TOKENS: tokens before the patch grid */
} kd_tap_info;

typedef struct kd_tap_list {
    uint32_t elem_size; /* sizeof(kd_tap_info) of the plugin */
    int n;
    const kd_tap_info *items;
} kd_tap_list;

static inline const kd_tap_info *kd_tap_list_at(const kd_tap_list *l, int i)
{
    return (const kd_tap_info *)(const void *)((const char *)l->items +
                                               (size_t)i * l->elem_size);
}

typedef struct kd_forward_args {
    uint32_t size;
    kd_tensor *input; /* [N, C, H, W] images in the model's dtype, or for
                         forward_from the tap's tensor */
    bool training;    /* batch statistics, dropout and drop-path on */
    kd_rng rng;       /* stochastic layers draw from it; keyed per step */
    const bool *want; /* [n_taps]: the taps the caller reads */
    kd_tensor **taps; /* [n_taps] out: filled for every wanted tap (scope-
                         owned); others may be filled or left alone */
} kd_forward_args;

/* What a checkpoint filter may do to one tensor of a weights file before
 * it is matched to the model by name. */
typedef struct kd_weight_fix {
    uint32_t size;
    const char *name;  /* in: the file's name; out: the model's (a string
                          that lives until the next call) */
    kd_tensor *value;  /* in: the file's tensor; out: a replacement (a new
                          scope-owned tensor: a resized pos_embed) */
    bool drop;         /* out: not a weight of this model (a buffer the
                          model rebuilds, like relative_position_index) */
} kd_weight_fix;

typedef struct kd_model_vtable {
    kd_vtable_header header;
    /* required */
    kd_status (*create)(const kd_create_args *args, void **self);
    void (*destroy)(void *self);
    /* Parameters and buffers in state_dict order. */
    kd_status (*tensors)(void *self, kd_tensor_list *out);
    /* Taps in forward order (>= 1, "logits" last). */
    kd_status (*taps)(void *self, kd_tap_list *out);
    /* Runs the model on args->input and fills the wanted taps. */
    kd_status (*forward)(void *self, const kd_forward_args *args);
    /* optional */
    /* Runs the rest of the model from tap `from` (args->input is a tensor
     * shaped like that tap) and fills the wanted later taps. */
    kd_status (*forward_from)(void *self, int from, const kd_forward_args *args);
    /* Called for every tensor of a weights file the job loads into this
     * model (not for the run's own checkpoints): renames across versions,
     * resizes, drops. Loading stays strict afterwards: a model tensor the
     * file lacks, or a file tensor nothing matches, is an error. */
    kd_status (*filter_weight)(void *self, kd_weight_fix *fix);
    /* Called once the model's tensors are final (a teacher in eval mode,
     * after its weights loaded): from then on the host changes none of them
     * and runs it with training false, so the model may precompute (fold
     * batch norms into convolutions). Gradients must still reach the input
     * of forward_from (a loss may backpropagate through the teacher). */
    kd_status (*freeze)(void *self);
    /* optional, appended within ABI 2 (a vtable without it reads NULL) */
    /* Layer-wise LR decay: the layer of tensor `index` of tensors() (a
     * parameter), 0 <= *id < *num_layers, as timm's param_groups_layer_decay
     * numbers it from the model's group_matcher (0: the stem; the head
     * last). The host scales parameter i's lr by
     * decay^(num_layers - 1 - id). A tensor the model cannot place is an
     * error naming it. */
    kd_status (*layer_id)(void *self, int index, int *id, int *num_layers);
} kd_model_vtable;

/* ----------------------------------------------------------------- loss */

/* The taps a loss reads, by model tap name, fixed after create(). */
typedef struct kd_loss_needs {
    int n_student;
    const char *const *student; /* e.g. {"logits"} */
    int n_teacher;              /* 0: the loss works without a teacher */
    const char *const *teacher;
} kd_loss_needs;

/* Shape of a tap a loss reads, for a batch of one. */
typedef struct kd_tap_shape {
    int ndim;
    int64_t shape[KD_MAX_DIMS];
} kd_tap_shape;

/* "[1, 64, 8, 8]" into buf (size bytes, cut short if it must be), for the
 * messages that name a tap's shape; returns buf. */
KD_API const char *kd_tap_shape_str(const kd_tap_shape *s, char *buf, int size);

/* Which model a host service runs. */
typedef enum kd_model_role { KD_ROLE_STUDENT = 0, KD_ROLE_TEACHER } kd_model_role;

typedef enum kd_reduce_op { KD_REDUCE_OP_SUM = 0, KD_REDUCE_OP_MEAN } kd_reduce_op;

/* What the host offers a loss, handed to bind() and valid until the loss
 * is destroyed. Every function takes `host` as its first argument. */
typedef struct kd_host_services {
    uint32_t size;
    void *host;
    int num_classes;
    int64_t train_length;       /* samples in data.train (its subset) */
    int rank, world_size;       /* this process among the job's processes */
    /* The class of every training sample, [train_length], read once from
     * the dataset on first use; owned by the host. */
    kd_status (*train_labels)(void *host, const int64_t **labels);
    /* Runs the student's or the teacher's forward from tap `from` (by
     * name) on `input` and returns tap `to` (scope-owned). Gradients flow
     * into `input`; the teacher's parameters never collect any. */
    kd_status (*forward_from)(void *host, kd_model_role role, const char *from,
                              kd_tensor *input, const char *to, bool training,
                              kd_tensor **out);
    /* In place over the job's processes (one process: returns at once). */
    kd_status (*all_reduce)(void *host, kd_tensor *t, kd_reduce_op op);
    /* [world_size * N, ...] of every process's t, in rank order
     * (scope-owned; one process: t itself). */
    kd_status (*all_gather)(void *host, kd_tensor *t, kd_tensor **out);
    /* appended within ABI 2: read them when KD_HAS_FIELD says so */
    /* What decides data.train's views and the teacher's outputs on them,
     * as compact JSON text owned by the host (made on the first call):
     * {"data": {dataset, samples, dataset_length, transforms,
     * batch_transforms (names and every parameter), image [C, H, W]},
     * "seed", "batching" {batch_size, shuffle, drop_last} when batches
     * mix samples (batch transforms, a train-BN teacher), "teacher"
     * {model, params, weights (a hash of the file), train_bn, dtype} when
     * the job has one}. A loss reading stored per-view data (fkd) checks
     * it against what the data was made with. */
    kd_status (*pipeline_fingerprint)(void *host, const char **json);
    /* From bind() on, epoch e of training replays the views (sample order,
     * augmentations and the batch transforms' draws) of epoch e % epochs,
     * so such a loss can cycle through the `epochs` it has. */
    kd_status (*replay_views)(void *host, int64_t epochs);
} kd_host_services;

/* What bind() receives once before training: the taps the loss reads, in
 * kd_loss_needs order, with their shapes at batch 1 and their infos
 * (layout, prefix tokens); a loss with parameters makes them here. */
typedef struct kd_bind_args {
    uint32_t size;
    const kd_tap_shape *student, *teacher;
    const kd_tap_info *student_info, *teacher_info;
    const kd_host_services *host;
} kd_bind_args;

/* The label of a sample without one: an unlabeled sample a job mixes into
 * its training set (data.train.unlabeled, SSLD). A loss that needs labels
 * leaves such rows out (ce averages over the labeled rows); a distillation
 * loss uses every row. */
#define KD_LABEL_NONE (-1)

typedef struct kd_loss_args {
    uint32_t size;
    kd_tensor *const *student; /* tensors in kd_loss_needs order */
    kd_tensor *const *teacher; /* NULL when n_teacher is 0 */
    kd_tensor *labels;         /* I64 [N]: class indices, KD_LABEL_NONE for an
                                  unlabeled sample */
    kd_tensor *soft_targets;   /* [N, classes] after mixup/cutmix, else
                                  NULL; a label loss prefers it when set */
    kd_tensor *indices;        /* I64 [N]: dataset positions */
    int64_t epoch;             /* 0-based */
    int64_t step;              /* optimizer steps so far */
    bool training;             /* false under evaluation */
    kd_rng rng;
} kd_loss_args;

/* A named number for the logs ("tckd", "nckd"): a scalar tensor, read by
 * the host only on the steps it logs, so a GPU step waits on none. */
typedef struct kd_loss_term {
    const char *name;
    kd_tensor *value;
} kd_loss_term;

/* What forward() fills. `loss` is a scalar (scope-owned) the host weights
 * and sums. `terms` is an array the instance owns (it may reuse it every
 * step); names are static strings or the instance's. */
typedef struct kd_loss_result {
    uint32_t size;
    kd_tensor *loss;
    int n_terms;
    const kd_loss_term *terms;
} kd_loss_result;

typedef struct kd_loss_vtable {
    kd_vtable_header header;
    /* required */
    kd_status (*create)(const kd_create_args *args, void **self);
    void (*destroy)(void *self);
    kd_status (*needs)(void *self, kd_loss_needs *out);
    kd_status (*forward)(void *self, const kd_loss_args *args, kd_loss_result *out);
    /* optional */
    kd_status (*bind)(void *self, const kd_bind_args *args);
    /* Its parameters and state (checkpointed; parameters join the
     * optimizer; dropped at export), after bind(). */
    kd_status (*tensors)(void *self, kd_tensor_list *out);
} kd_loss_vtable;

/* ----------------------------------------------------- samples and data */

/* One sample on its way through the loader. A dataset writes u8 pixels,
 * height x width x channels (HWC); transforms rewrite it; a converting
 * transform (to_tensor, normalize) turns it into f32 channels x height x
 * width (CHW). The buffer belongs to the host's loader thread: resize it
 * with kd_sample_reserve, never free it. */
typedef struct kd_sample {
    int height, width, channels;
    kd_dtype dtype;  /* KD_U8 (HWC) or KD_F32 (CHW) */
    void *data;
    size_t capacity; /* bytes */
} kd_sample;

/* Makes s->data hold at least `bytes`; KD_ERR_NOMEM otherwise. */
KD_API kd_status kd_sample_reserve(kd_sample *s, size_t bytes);

typedef struct kd_dataset_info {
    int64_t length;
    int height, width, channels; /* 0 when samples vary in size */
    int num_classes;
} kd_dataset_info;

typedef struct kd_dataset_vtable {
    kd_vtable_header header;
    /* required */
    kd_status (*create)(const kd_create_args *args, void **self);
    void (*destroy)(void *self);
    kd_status (*info)(void *self, kd_dataset_info *out);
    /* Sample `index` (0 <= index < length) into *out as u8 HWC and its
     * class into *label. Thread-safe. A corrupt record is an error naming
     * the file and the index. */
    kd_status (*get)(void *self, int64_t index, kd_sample *out, int64_t *label);
    /* optional */
    /* Every sample's class, labels[length], without decoding images. */
    kd_status (*labels)(void *self, int64_t *labels);
    /* optional, appended within ABI 2 (a vtable without them reads NULL) */
    /* The name of class `index` (0 <= index < num_classes), owned by the
     * instance: the host writes the class-to-index mapping into the run
     * folder (classes.json) and into exported weights' metadata. */
    const char *(*class_name)(void *self, int index);
    /* How many get() calls since create() returned another sample in
     * place of an unreadable one (a dataset's documented skip policy);
     * the host reports the growth at each epoch's end. Thread-safe. */
    int64_t (*skipped)(void *self);
    /* optional, appended within ABI 2 after the two above */
    /* What sample `index` is called where it lives (an image's file path,
     * as the dataset opens it), owned by the instance: the host writes it
     * into list files of samples (kdengine select). Thread-safe. */
    const char *(*sample_name)(void *self, int64_t index);
} kd_dataset_vtable;

typedef struct kd_transform_vtable {
    kd_vtable_header header;
    /* required */
    kd_status (*create)(const kd_create_args *args, void **self);
    void (*destroy)(void *self);
    /* out = transform(in); in and out are distinct buffers. Random draws
     * come from rng, keyed by (seed, epoch, sample index), in the
     * transform's documented order. Thread-safe. */
    kd_status (*apply)(void *self, const kd_sample *in, kd_sample *out, kd_rng *rng);
} kd_transform_vtable;

typedef struct kd_batch_args {
    uint32_t size;
    kd_tensor *images;       /* f32 [N, C, H, W] */
    kd_tensor *labels;       /* I64 [N] */
    kd_tensor *soft_targets; /* f32 [N, classes], or NULL: one-hot labels */
    int num_classes;
    kd_rng rng;              /* keyed by (seed, step) */
} kd_batch_args;

typedef struct kd_batch_transform_vtable {
    kd_vtable_header header;
    /* required */
    kd_status (*create)(const kd_create_args *args, void **self);
    void (*destroy)(void *self);
    /* Replaces args->images and sets args->soft_targets (new scope-owned
     * tensors, the same shapes); labels stay the hard labels. Runs in the
     * training step's scope, on the training thread. */
    kd_status (*apply)(void *self, kd_batch_args *args);
} kd_batch_transform_vtable;

/* ----------------------------------------------------- optimizer, schedule */

typedef struct kd_optimizer_vtable {
    kd_vtable_header header;
    /* required */
    /* params: the trainable tensors (the student's, then each loss's under
     * "loss.<i>."), with their KD_TENSOR_* flags; they outlive the
     * optimizer. */
    kd_status (*create)(const kd_create_args *args, const kd_tensor_list *params,
                        void **self);
    void (*destroy)(void *self);
    /* One update from the parameters' .grad at learning rate lr. */
    kd_status (*step)(void *self, double lr);
    /* Its state (momentum buffers...), named for checkpoints. Restoring
     * copies saved values into these tensors. */
    kd_status (*state)(void *self, kd_tensor_list *out);
} kd_optimizer_vtable;

typedef struct kd_schedule_info {
    uint32_t size;
    double base_lr;          /* the optimizer's "lr" */
    int64_t steps_per_epoch;
    int64_t epochs;          /* the run's length */
} kd_schedule_info;

typedef struct kd_scheduler_vtable {
    kd_vtable_header header;
    /* required */
    kd_status (*create)(const kd_create_args *args, const kd_schedule_info *info,
                        void **self);
    void (*destroy)(void *self);
    /* The learning rate of optimizer step `step` (0-based over the run): a
     * pure function, so a resumed run needs only the step count. */
    kd_status (*lr_at)(void *self, int64_t step, double *lr);
} kd_scheduler_vtable;

/* --- parameters a provider instance receives ---
 * Validated against the manifest schema before plugin code runs; defaults
 * are filled in, so every declared key is present. Lookups of a key the
 * schema does not declare are programming errors and return 0/false/NULL.
 * Owned by the host; valid for the instance's creation call only (copy what
 * you keep). */

KD_API double kd_params_number(const kd_params *p, const char *key);
KD_API int64_t kd_params_integer(const kd_params *p, const char *key);
KD_API bool kd_params_boolean(const kd_params *p, const char *key);
KD_API const char *kd_params_string(const kd_params *p, const char *key);
/* Arrays: length, then element i as a number or a string. */
KD_API int kd_params_array_length(const kd_params *p, const char *key);
KD_API double kd_params_array_number(const kd_params *p, const char *key, int i);
KD_API const char *kd_params_array_string(const kd_params *p, const char *key, int i);

#ifdef __cplusplus
}
#endif
#endif
