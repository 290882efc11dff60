/* ReviewKD, knowledge review (Chen et al., CVPR 2021), as the authors and
 * mdistiller train it. Attention-based fusion (ABF) blocks carry the
 * student's levels from the deepest (the pooled feature as a 1x1 map) to
 * the shallowest, each fusing the level with the fused result of the one
 * below it, and map it onto the teacher's level:
 *
 *   x' = BN(conv1x1(x))
 *   if not deepest: r = nearest(r_deeper, h x w)
 *                   a = sigmoid(conv1x1_bias(concat(x', r)))   2 channels
 *                   x' = x' a[:, 0] + r a[:, 1]
 *   x' = nearest(x', teacher's h x w) when the sizes differ
 *   out = BN(conv3x3(x')),  r_deeper := x'
 *
 * and the hierarchical context loss compares each out with the teacher's
 * level at full size and at adaptive-average-pooled 4x4, 2x2, 1x1 (the sizes
 * smaller than the map, each weighted half the one before):
 *
 *   L = min((epoch + first_epoch) / warmup, 1) * sum_levels HCL(out, t)
 *
 * Every convolution, batch norm and the channel counts are sized at bind
 * from the taps. BN runs on batch statistics and keeps running ones as
 * buffers; the rest are parameters the optimizer trains. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#define MAX_LEVELS 8
#define MID_CAP 512
#define BN_MOMENTUM 0.1
#define BN_EPS 1e-5

/* The tensors of one ABF block, in its state_dict order. */
enum { CONV1_W, BN1_W, BN1_B, BN1_MEAN, BN1_VAR, CONV2_W, BN2_W, BN2_B, BN2_MEAN, BN2_VAR,
       ATT_W, ATT_B, PER_BLOCK };

static const char *const PART_NAMES[PER_BLOCK] = {
    "conv1.0.weight", "conv1.1.weight", "conv1.1.bias", "conv1.1.running_mean",
    "conv1.1.running_var", "conv2.0.weight", "conv2.1.weight", "conv2.1.bias",
    "conv2.1.running_mean", "conv2.1.running_var", "att_conv.0.weight", "att_conv.0.bias"};

typedef struct level {
    int64_t cs, hs, ws; /* the student's channels and size */
    int64_t ct, ht, wt; /* the teacher's */
} level;

typedef struct reviewkd {
    const char *provider;
    int n_levels;
    char *taps[2][MAX_LEVELS]; /* student, teacher: owned copies */
    const char *tap_ptrs[2][MAX_LEVELS];
    int64_t mid_param; /* 0: min(512, the deepest student channels) */
    int64_t mid;
    double warmup_epochs;
    int first_epoch;
    uint64_t seed;
    kd_device device;
    kd_dtype dtype;
    level lv[MAX_LEVELS];
    /* block j is level n_levels - 1 - j: the deepest first, as the
     * reference lists them */
    kd_tensor *t[MAX_LEVELS][PER_BLOCK];
    char names[MAX_LEVELS * PER_BLOCK][48];
    kd_named_tensor list[MAX_LEVELS * PER_BLOCK];
    int n_list;
    kd_loss_term terms[1];
} reviewkd;

static void reviewkd_destroy(void *self)
{
    reviewkd *r = self;
    if (!r)
        return;
    for (int j = 0; j < MAX_LEVELS; j++)
        for (int p = 0; p < PER_BLOCK; p++)
            kd_tensor_free(r->t[j][p]);
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < MAX_LEVELS; i++)
            free(r->taps[w][i]);
    free(r);
}

static kd_status reviewkd_create(const kd_create_args *args, void **self)
{
    const char *keys[2] = {"student_taps", "teacher_taps"};
    int n = kd_params_array_length(args->params, keys[0]);
    int nt = kd_params_array_length(args->params, keys[1]);
    if (n < 1 || n > MAX_LEVELS || nt != n)
        return kd_error(KD_ERR_INVALID, "%s: student_taps (%d) and teacher_taps (%d) must list "
                        "the same number of levels, 1 to %d", args->provider, n, nt,
                        MAX_LEVELS);
    reviewkd *r = calloc(1, sizeof *r);
    if (!r)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", args->provider);
    r->provider = args->provider;
    r->n_levels = n;
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < n; i++) {
            r->taps[w][i] = strdup(kd_params_array_string(args->params, keys[w], i));
            r->tap_ptrs[w][i] = r->taps[w][i];
            if (!r->taps[w][i]) {
                reviewkd_destroy(r);
                return kd_error(KD_ERR_NOMEM, "%s: out of memory", args->provider);
            }
        }
    r->mid_param = kd_params_integer(args->params, "mid_channels");
    r->warmup_epochs = kd_params_number(args->params, "warmup_epochs");
    r->first_epoch = (int)kd_params_integer(args->params, "first_epoch");
    r->seed = args->seed;
    r->device = args->device;
    r->dtype = args->dtype;
    r->terms[0].name = "hcl";
    *self = r;
    return KD_OK;
}

static kd_status reviewkd_needs(void *self, kd_loss_needs *out)
{
    reviewkd *r = self;
    *out = (kd_loss_needs){r->n_levels, r->tap_ptrs[0], r->n_levels, r->tap_ptrs[1]};
    return KD_OK;
}

/* A level is an NCHW map, or (the pooled feature) an [N, C] vector read as
 * a 1x1 map. */
static bool level_shape(const kd_tap_shape *s, const kd_tap_info *info, int64_t *c, int64_t *h,
                        int64_t *w)
{
    if (s->ndim == 4 && info->layout == KD_LAYOUT_NCHW) {
        *c = s->shape[1], *h = s->shape[2], *w = s->shape[3];
        return true;
    }
    if (s->ndim == 2 && info->layout == KD_LAYOUT_NC) {
        *c = s->shape[1], *h = *w = 1;
        return true;
    }
    return false;
}

/* A caller-owned tensor of `shape`, uniform in [-bound, bound) from the
 * stream `which` of the instance's seed (bound 0: all `fill`). */
static kd_tensor *init_tensor(const reviewkd *r, int ndim, const int64_t *shape, double bound,
                              double fill, uint64_t which)
{
    if (bound == 0)
        return kd_tensor_full(r->dtype, r->device, ndim, shape, fill);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)n * sizeof *v);
    kd_tensor *t = kd_tensor_empty(r->dtype, r->device, ndim, shape), *src = NULL;
    if (v && t) {
        kd_rng rng = kd_rng_make(r->seed, which, 0);
        for (int64_t i = 0; i < n; i++)
            v[i] = bound * (2 * kd_rng_uniform(&rng) - 1);
        src = kd_tensor_from_data(KD_F64, ndim, shape, v);
    }
    if (!src || kd_tensor_copy_(t, src) != KD_OK) {
        kd_tensor_free(t);
        t = NULL;
    }
    kd_tensor_free(src);
    free(v);
    return t;
}

/* Block j's tensors. Convolutions start Kaiming-uniform with a = 1
 * (bound sqrt(3 / fan_in)), the attention conv torch's default (bound
 * 1 / sqrt(fan_in) for weight and bias), batch norms at 1 and 0. */
static kd_status make_block(reviewkd *r, int j)
{
    const level *l = &r->lv[r->n_levels - 1 - j];
    bool fuse = j > 0;
    int64_t mid = r->mid;
    const int64_t w1[4] = {mid, l->cs, 1, 1}, w2[4] = {l->ct, mid, 3, 3},
                  wa[4] = {2, 2 * mid, 1, 1}, two = 2;
    uint64_t stream = (uint64_t)j * PER_BLOCK;
    kd_tensor **t = r->t[j];
    t[CONV1_W] = init_tensor(r, 4, w1, sqrt(3.0 / (double)l->cs), 0, stream + CONV1_W);
    t[BN1_W] = init_tensor(r, 1, &mid, 0, 1, 0);
    t[BN1_B] = init_tensor(r, 1, &mid, 0, 0, 0);
    t[BN1_MEAN] = init_tensor(r, 1, &mid, 0, 0, 0);
    t[BN1_VAR] = init_tensor(r, 1, &mid, 0, 1, 0);
    t[CONV2_W] = init_tensor(r, 4, w2, sqrt(3.0 / (double)(mid * 9)), 0, stream + CONV2_W);
    t[BN2_W] = init_tensor(r, 1, &l->ct, 0, 1, 0);
    t[BN2_B] = init_tensor(r, 1, &l->ct, 0, 0, 0);
    t[BN2_MEAN] = init_tensor(r, 1, &l->ct, 0, 0, 0);
    t[BN2_VAR] = init_tensor(r, 1, &l->ct, 0, 1, 0);
    if (fuse) {
        double bound = 1 / sqrt((double)(2 * mid));
        t[ATT_W] = init_tensor(r, 4, wa, bound, 0, stream + ATT_W);
        t[ATT_B] = init_tensor(r, 1, &two, bound, 0, stream + ATT_B);
    }
    for (int p = 0; p < (fuse ? PER_BLOCK : ATT_W); p++) {
        if (!t[p])
            return kd_error_wrap(kd_last_status(), "%s: making abfs.%d.%s", r->provider, j,
                                 PART_NAMES[p]);
        char *name = r->names[r->n_list];
        snprintf(name, sizeof r->names[0], "abfs.%d.%s", j, PART_NAMES[p]);
        bool stat = p == BN1_MEAN || p == BN1_VAR || p == BN2_MEAN || p == BN2_VAR;
        r->list[r->n_list++] =
            (kd_named_tensor){name, t[p], stat ? KD_TENSOR_BUFFER : KD_TENSOR_PARAM};
    }
    return KD_OK;
}

static kd_status reviewkd_bind(void *self, const kd_bind_args *args)
{
    reviewkd *r = self;
    if (r->n_list)
        return kd_error(KD_ERR_STATE, "%s: bound twice", r->provider);
    for (int i = 0; i < r->n_levels; i++) {
        level *l = &r->lv[i];
        bool ok_s = level_shape(&args->student[i], &args->student_info[i], &l->cs, &l->hs, &l->ws);
        bool ok_t = level_shape(&args->teacher[i], &args->teacher_info[i], &l->ct, &l->ht, &l->wt);
        if (!ok_s || !ok_t) {
            char a[96], b[96];
            return kd_error(KD_ERR_INVALID, "%s: level %d pairs student tap '%s' %s with teacher "
                            "tap '%s' %s; each must be an NCHW map or a pooled [N, C] vector",
                            r->provider, i, r->taps[0][i],
                            kd_tap_shape_str(&args->student[i], a, sizeof a), r->taps[1][i],
                            kd_tap_shape_str(&args->teacher[i], b, sizeof b));
        }
    }
    int64_t deepest = r->lv[r->n_levels - 1].cs;
    r->mid = r->mid_param ? r->mid_param : (deepest < MID_CAP ? deepest : MID_CAP);
    for (int j = 0; j < r->n_levels; j++) {
        kd_status st = make_block(r, j);
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

static kd_status reviewkd_tensors(void *self, kd_tensor_list *out)
{
    reviewkd *r = self;
    if (!r->n_list)
        return kd_error(KD_ERR_STATE, "%s: tensors() before bind()", r->provider);
    KD_LIST_SET(out, r->list, r->n_list);
    return KD_OK;
}

/* Nearest resize along one dim: source i = floor(o * in / out), as torch's
 * F.interpolate(mode="nearest") picks it; an index_select, so the
 * gradient sums over the copies. */
static kd_tensor *nearest_dim(kd_tensor *x, int dim, int64_t out)
{
    int64_t in = x->shape[dim];
    if (in == out)
        return x;
    kd_tensor *index = kd_tensor_empty(KD_I64, KD_CPU, 1, &out);
    if (!index)
        return NULL;
    int64_t *src = kd_tensor_data(index);
    for (int64_t o = 0; o < out; o++)
        src[o] = o * in / out;
    if (x->device != KD_CPU)
        index = kd_tensor_to_device(index, x->device);
    return kd_index_select(x, dim, index);
}

static kd_tensor *nearest(kd_tensor *x, int64_t h, int64_t w)
{
    return nearest_dim(nearest_dim(x, 2, h), 3, w);
}

static kd_tensor *batch_norm(kd_tensor *x, kd_tensor *const *bn, bool training)
{
    return kd_batch_norm(x, bn[0], bn[1], bn[2], bn[3], training, BN_MOMENTUM, BN_EPS);
}

static kd_tensor *mse(kd_tensor *a, kd_tensor *b)
{
    kd_tensor *d = kd_sub(a, b);
    return kd_mean_all(kd_mul(d, d));
}

/* The hierarchical context loss of one level. */
static kd_tensor *hcl(kd_tensor *fs, kd_tensor *ft)
{
    kd_tensor *loss = mse(fs, ft);
    double w = 1, total = 1;
    static const int pools[3] = {4, 2, 1};
    for (int i = 0; i < 3; i++) {
        int l = pools[i];
        if (l >= fs->shape[2])
            continue;
        w /= 2;
        bool grad = kd_set_grad_enabled(false);
        kd_tensor *pt = kd_adaptive_avg_pool2d(ft, l, l);
        kd_set_grad_enabled(grad);
        loss = kd_add(loss, kd_mul_scalar(mse(kd_adaptive_avg_pool2d(fs, l, l), pt), w));
        total += w;
    }
    return total == 1 ? loss : kd_mul_scalar(loss, 1 / total);
}

/* A level's tensor as an NCHW map in the loss's dtype. */
static kd_tensor *as_map(const reviewkd *r, kd_tensor *x)
{
    if (x->dtype != r->dtype)
        x = kd_cast(x, r->dtype);
    if (x && x->ndim == 2)
        x = kd_reshape(x, 4, (const int64_t[]){x->shape[0], x->shape[1], 1, 1});
    return x;
}

static kd_status check_level(const reviewkd *r, int i, const kd_tensor *s, const kd_tensor *t)
{
    const level *l = &r->lv[i];
    if (!s || !t)
        return kd_error(KD_ERR_INVALID, "%s: no %s tensor for tap '%s'", r->provider,
                        s ? "teacher" : "student", r->taps[s ? 1 : 0][i]);
    bool ok = s->ndim == 4 && t->ndim == 4 && s->shape[0] == t->shape[0] &&
              s->shape[1] == l->cs && s->shape[2] == l->hs && s->shape[3] == l->ws &&
              t->shape[1] == l->ct && t->shape[2] == l->ht && t->shape[3] == l->wt;
    if (ok)
        return KD_OK;
    char a[96], b[96];
    return kd_error(KD_ERR_INVALID, "%s: level %d: student tap '%s' %s and teacher tap '%s' %s "
                    "differ from the shapes bind() sized the blocks for", r->provider, i,
                    r->taps[0][i], kd_shape_str(s, a, sizeof a), r->taps[1][i],
                    kd_shape_str(t, b, sizeof b));
}

static kd_status reviewkd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    reviewkd *r = self;
    if (!r->n_list)
        return kd_error(KD_ERR_STATE, "%s: forward() before bind()", r->provider);
    if (!args->student || !args->teacher)
        return kd_error(KD_ERR_INVALID, "%s: needs student and teacher features", r->provider);
    const kd_conv2d_params one = {{1, 1}, {0, 0}, {1, 1}, 1}, three = {{1, 1}, {1, 1}, {1, 1}, 1};
    kd_tensor *total = NULL, *res = NULL;
    for (int j = 0; j < r->n_levels; j++) {
        int i = r->n_levels - 1 - j;
        kd_tensor *s = args->student[i] ? as_map(r, args->student[i]) : NULL;
        kd_tensor *t = args->teacher[i] ? as_map(r, args->teacher[i]) : NULL;
        kd_status st = check_level(r, i, s, t);
        if (st != KD_OK)
            return st;
        kd_tensor *const *b = r->t[j];
        kd_tensor *x = batch_norm(kd_conv2d(s, b[CONV1_W], NULL, &one), b + BN1_W,
                                  args->training);
        if (res) {
            kd_tensor *y = nearest(res, r->lv[i].hs, r->lv[i].ws);
            kd_tensor *pair[2] = {x, y};
            kd_tensor *a = kd_sigmoid(kd_conv2d(kd_concat(2, pair, 1), b[ATT_W], b[ATT_B], &one));
            x = kd_add(kd_mul(x, kd_slice(a, 1, 0, 1, 1)), kd_mul(y, kd_slice(a, 1, 1, 2, 1)));
        }
        x = nearest(x, r->lv[i].ht, r->lv[i].wt);
        kd_tensor *fs = batch_norm(kd_conv2d(x, b[CONV2_W], NULL, &three), b + BN2_W,
                                   args->training);
        kd_tensor *level_loss = fs ? hcl(fs, t) : NULL;
        if (!level_loss)
            return kd_error_wrap(kd_last_status(), "%s: level %d (taps '%s', '%s')",
                                 r->provider, i, r->taps[0][i], r->taps[1][i]);
        total = total ? kd_add(total, level_loss) : level_loss;
        res = x;
    }
    double factor = 1;
    if (r->warmup_epochs > 0)
        factor = fmin((double)(args->epoch + r->first_epoch) / r->warmup_epochs, 1.0);
    r->terms[0].value = total;
    out->loss = factor == 1 ? total : kd_mul_scalar(total, factor);
    if (!out->loss)
        return kd_error_wrap(kd_last_status(), "%s", r->provider);
    out->n_terms = 1;
    out->terms = r->terms;
    return KD_OK;
}

static const kd_loss_vtable reviewkd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = reviewkd_create,
    .destroy = reviewkd_destroy,
    .needs = reviewkd_needs,
    .forward = reviewkd_forward,
    .bind = reviewkd_bind,
    .tensors = reviewkd_tensors,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "reviewkd", &reviewkd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "reviewkd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
