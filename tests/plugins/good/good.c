/* A well-formed test plugin built against two header shapes:
 * - its model has a whole ABI 2 vtable; create() hands back how often the
 *   entry function ran, so the tests can see the library is loaded once;
 * - its loss is built against an older, shorter loss vtable (only the
 *   required callbacks) and reads a loss-args field newer than this
 *   header, guarded by KD_HAS_FIELD: the two directions of the growth
 *   rule. */
#include <kdengine/plugin.h>

static int calls;

static kd_status model_create(const kd_create_args *args, void **self)
{
    (void)args;
    *self = &calls;
    return KD_OK;
}

static void no_destroy(void *self) { (void)self; }

static kd_status model_tensors(void *self, kd_tensor_list *out)
{
    (void)self;
    KD_LIST_SET(out, (const kd_named_tensor *)NULL, 0);
    return KD_OK;
}

static kd_status model_taps(void *self, kd_tap_list *out)
{
    (void)self;
    static const kd_tap_info taps[] = {{"logits", 1, 1, KD_LAYOUT_NC, 0}};
    KD_LIST_SET(out, taps, 1);
    return KD_OK;
}

static kd_status model_forward(void *self, const kd_forward_args *args)
{
    (void)self;
    (void)args;
    return KD_ERR_UNSUPPORTED;
}

static const kd_model_vtable model_vtable = {
    .header = {sizeof(kd_model_vtable), KD_KIND_MODEL},
    .create = model_create,
    .destroy = no_destroy,
    .tensors = model_tensors,
    .taps = model_taps,
    .forward = model_forward,
};

/* The loss vtable as an older header had it: bind and tensors missing. */
typedef struct older_loss_vtable {
    kd_vtable_header header;
    kd_status (*create)(const kd_create_args *args, void **self);
    void (*destroy)(void *self);
    kd_status (*needs)(void *self, kd_loss_needs *out);
    kd_status (*forward)(void *self, const kd_loss_args *args, kd_loss_result *out);
} older_loss_vtable;

/* kd_loss_args as a newer header might have it: one field more. */
typedef struct newer_loss_args {
    kd_loss_args base;
    double extra;
} newer_loss_args;

static kd_status loss_create(const kd_create_args *args, void **self)
{
    (void)args;
    *self = &calls;
    return KD_OK;
}

static kd_status loss_needs(void *self, kd_loss_needs *out)
{
    (void)self;
    *out = (kd_loss_needs){0, NULL, 0, NULL};
    return KD_OK;
}

/* Reports in n_terms whether the host's struct holds the newer field:
 * 1 when it does not, else the field's value. */
static kd_status loss_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    (void)self;
    const newer_loss_args *newer = (const newer_loss_args *)args;
    out->loss = NULL;
    out->n_terms = KD_HAS_FIELD(&newer->base, newer_loss_args, extra) ? (int)newer->extra : 1;
    out->terms = NULL;
    return KD_OK;
}

static const older_loss_vtable loss_vtable = {
    {sizeof(older_loss_vtable), KD_KIND_LOSS}, loss_create, no_destroy, loss_needs,
    loss_forward};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "good_loss", &loss_vtable.header, NULL},
    {KD_KIND_MODEL, "good_model", &model_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    calls++;
    KD_PLUGIN_INFO_INIT(info, "good", "1.2.0");
    KD_PLUGIN_PROVIDERS(info, providers, 2);
    return KD_OK;
}
