/* CRD, contrastive representation distillation (Tian et al., ICLR 2020),
 * as RepDistiller and mdistiller train it:
 *
 *   v_s = normalize(W_s f_s + b_s), v_t = normalize(W_t f_t + b_t)
 *   S_s[b, k] = exp(<M_t[idx[b, k]], v_s[b]> / T)   the student against the
 *   S_t[b, k] = exp(<M_s[idx[b, k]], v_t[b]> / T)   teacher's bank, and back
 *   P = S / Z,  c = K / N,  Z = mean(S) * N of the first training step
 *   NCE(P) = -(1/B) sum_b [log(P_b0 / (P_b0 + c + eps))
 *                          + sum_{k>=1} log(c / (P_bk + c + eps))]
 *   L = NCE(P_s) + NCE(P_t)
 *
 * then, without gradient, M[i] <- normalize(m M[i] + (1 - m) v) at the
 * batch's own dataset indices i. idx[b, 0] is the sample itself, or in
 * "relax" mode an image of its class. The heads are loss parameters the
 * optimizer trains; the banks M_s, M_t ([N, d], N = the training set's
 * length) and Z (0 until set) are buffers, saved in checkpoints and never
 * trained. The negatives come from the step's rng (crd_negatives.h), so a
 * resumed run continues exactly. Over several processes every rank sees
 * the whole global batch's indices, embeddings and negatives
 * (crd_ranks.h), so the banks stay equal on all ranks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kdengine/ops.h>
#include <kdengine/plugin.h>

#include "crd_negatives.h"
#include "crd_ranks.h"
#include "crd_scores.h"

#define NCE_EPS 1e-7
/* Squared norms are clamped here before the square root: the reference
 * divides by the bare norm, which a zero vector would turn into NaN. */
#define MIN_SQUARED_NORM 1e-24

enum { EMBED_S_WEIGHT, EMBED_S_BIAS, EMBED_T_WEIGHT, EMBED_T_BIAS, MEMORY_S, MEMORY_T, NCE_Z,
       N_TENSORS };

static const char *const TENSOR_NAMES[N_TENSORS] = {
    "embed_s.weight", "embed_s.bias", "embed_t.weight", "embed_t.bias",
    "memory_s",       "memory_t",     "nce_z"};

typedef struct crd {
    const char *provider;
    const char *taps[2]; /* student, teacher: owned copies */
    int64_t feat_dim, k;
    double temperature, momentum;
    bool relax; /* positives: any image of the sample's class */
    uint64_t seed;
    kd_dtype dtype;
    int64_t n;           /* bank rows: the training set's length */
    const kd_host_services *host;
    kd_tensor *t[N_TENSORS];
    kd_named_tensor list[N_TENSORS];
    crd_negatives negatives;
    bool have_negatives;
    kd_loss_term terms[2];
} crd;

static kd_status crd_create(const kd_create_args *args, void **self)
{
    if (args->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: the memory banks are updated on the host; "
                        "run the job on the CPU", args->provider);
    if (args->dtype != KD_F32 && args->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: banks and heads are float32 or float64, not %s",
                        args->provider, kd_dtype_name(args->dtype));
    crd *c = calloc(1, sizeof *c);
    char *student = strdup(kd_params_string(args->params, "student_tap"));
    char *teacher = strdup(kd_params_string(args->params, "teacher_tap"));
    if (!c || !student || !teacher) {
        free(c);
        free(student);
        free(teacher);
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", args->provider);
    }
    c->provider = args->provider;
    c->taps[0] = student;
    c->taps[1] = teacher;
    c->feat_dim = kd_params_integer(args->params, "feat_dim");
    c->k = kd_params_integer(args->params, "nce_k");
    c->temperature = kd_params_number(args->params, "nce_t");
    c->momentum = kd_params_number(args->params, "nce_momentum");
    c->relax = strcmp(kd_params_string(args->params, "mode"), "relax") == 0;
    c->seed = args->seed;
    c->dtype = args->dtype;
    c->terms[0].name = "nce_s";
    c->terms[1].name = "nce_t";
    *self = c;
    return KD_OK;
}

static void crd_destroy(void *self)
{
    crd *c = self;
    if (!c)
        return;
    for (int i = 0; i < N_TENSORS; i++)
        kd_tensor_free(c->t[i]);
    crd_negatives_free(&c->negatives);
    free((void *)c->taps[0]);
    free((void *)c->taps[1]);
    free(c);
}

static kd_status crd_needs(void *self, kd_loss_needs *out)
{
    crd *c = self;
    *out = (kd_loss_needs){1, &c->taps[0], 1, &c->taps[1]};
    return KD_OK;
}

/* Elements per sample: the reference flattens whatever the tap holds. */
static int64_t per_sample(const kd_tap_shape *s)
{
    int64_t n = 1;
    for (int d = 1; d < s->ndim; d++)
        n *= s->shape[d];
    return n;
}

/* A caller-owned [rows, cols] (cols 0: [rows]) CPU tensor uniform in
 * [-bound, bound), drawn in f64 from the stream `which` of the instance's
 * seed and written in place (a bank is large: no staging copy). */
static kd_tensor *uniform_tensor(const crd *c, int64_t rows, int64_t cols, double bound,
                                 uint64_t which)
{
    const int64_t shape[2] = {rows, cols};
    kd_tensor *t = kd_tensor_empty(c->dtype, KD_CPU, cols ? 2 : 1, shape);
    if (!t)
        return NULL;
    kd_rng rng = kd_rng_make(c->seed, which, 0);
    int64_t n = kd_tensor_numel(t);
    double *d = kd_tensor_data(t);
    float *f = kd_tensor_data(t);
    for (int64_t i = 0; i < n; i++) {
        double v = bound * (2 * kd_rng_uniform(&rng) - 1);
        if (c->dtype == KD_F64)
            d[i] = v;
        else
            f[i] = (float)v;
    }
    return t;
}

static kd_status crd_bind(void *self, const kd_bind_args *args)
{
    crd *c = self;
    const kd_tap_shape *fs = args->student, *ft = args->teacher;
    if (fs->ndim < 2 || ft->ndim < 2) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID, "%s: student tap '%s' %s and teacher tap '%s' %s must "
                        "both hold a feature per sample ([N, C] or a map)", c->provider,
                        c->taps[0], kd_tap_shape_str(fs, a, sizeof a), c->taps[1],
                        kd_tap_shape_str(ft, b, sizeof b));
    }
    if (!KD_HAS_FIELD(args, kd_bind_args, host) || !args->host ||
        !KD_HAS_FIELD(args->host, kd_host_services, train_labels) || !args->host->train_labels)
        return kd_error(KD_ERR_STATE, "%s: the host offers no training labels; the memory "
                        "banks and negatives need the training set", c->provider);
    c->host = args->host;
    c->n = args->host->train_length;
    if (c->n < 2)
        return kd_error(KD_ERR_INVALID, "%s: the memory banks need a training set of at least "
                        "2 samples, data.train has %lld", c->provider, (long long)c->n);
    for (int i = 0; i < N_TENSORS; i++) {
        kd_tensor_free(c->t[i]);
        c->t[i] = NULL;
    }
    int64_t in_s = per_sample(fs), in_t = per_sample(ft), d = c->feat_dim;
    /* torch.nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) for both. */
    c->t[EMBED_S_WEIGHT] = uniform_tensor(c, d, in_s, 1 / sqrt((double)in_s), 1);
    c->t[EMBED_S_BIAS] = uniform_tensor(c, d, 0, 1 / sqrt((double)in_s), 2);
    c->t[EMBED_T_WEIGHT] = uniform_tensor(c, d, in_t, 1 / sqrt((double)in_t), 3);
    c->t[EMBED_T_BIAS] = uniform_tensor(c, d, 0, 1 / sqrt((double)in_t), 4);
    /* RepDistiller's bank start: U(-s, s), s = 1 / sqrt(d / 3). */
    double bank = 1 / sqrt((double)d / 3);
    c->t[MEMORY_S] = uniform_tensor(c, c->n, d, bank, 5);
    c->t[MEMORY_T] = uniform_tensor(c, c->n, d, bank, 6);
    const int64_t two = 2;
    c->t[NCE_Z] = kd_tensor_zeros(c->dtype, KD_CPU, 1, &two);
    for (int i = 0; i < N_TENSORS; i++) {
        if (!c->t[i])
            return kd_error_wrap(kd_last_status(), "%s: making %s", c->provider,
                                 TENSOR_NAMES[i]);
        uint32_t flags = i < MEMORY_S ? KD_TENSOR_PARAM : KD_TENSOR_BUFFER;
        c->list[i] = (kd_named_tensor){TENSOR_NAMES[i], c->t[i], flags};
    }
    return KD_OK;
}

static kd_status crd_tensors(void *self, kd_tensor_list *out)
{
    crd *c = self;
    if (!c->t[0])
        return kd_error(KD_ERR_STATE, "%s: tensors() before bind()", c->provider);
    KD_LIST_SET(out, c->list, N_TENSORS);
    return KD_OK;
}

/* Rows of x divided by their L2 norms. */
static kd_tensor *normalize_rows(kd_tensor *x)
{
    const int dim = 1;
    kd_tensor *sq = kd_sum(kd_mul(x, x), 1, &dim, true);
    return kd_div(x, kd_sqrt(kd_clamp(sq, MIN_SQUARED_NORM, INFINITY)));
}

/* normalize(W flatten(f) + b). */
static kd_tensor *embed(kd_tensor *f, kd_tensor *weight, kd_tensor *bias)
{
    return normalize_rows(kd_linear(kd_flatten(f, 1, -1), weight, bias));
}

/* The NCE loss of one side's scores, with log Z fixed. */
static kd_tensor *nce(const crd *c, kd_tensor *scores, double log_z)
{
    double ratio = (double)c->k / (double)c->n;
    int64_t b = scores->shape[0], kk = scores->shape[1];
    kd_tensor *log_p = kd_add_scalar(kd_mul_scalar(scores, 1 / c->temperature), -log_z);
    kd_tensor *log_den = kd_log(kd_add_scalar(kd_exp(log_p), ratio + NCE_EPS));
    kd_tensor *pos = kd_sub(kd_slice(log_p, 1, 0, 1, 1), kd_slice(log_den, 1, 0, 1, 1));
    kd_tensor *neg = kd_add_scalar(kd_neg(kd_slice(log_den, 1, 1, kk, 1)), log(ratio));
    kd_tensor *sum = kd_add(kd_sum_all(pos), kd_sum_all(neg));
    return kd_mul_scalar(sum, -1.0 / (double)b);
}

/* Z = mean(exp(scores / T)) * N for each side, from this step's scores
 * (constants), the mean over the global batch's. */
static kd_status estimate_z(const crd *c, kd_tensor *const scores[2], double z[2])
{
    double mean[2] = {NAN, NAN}, count = (double)kd_tensor_numel(scores[0]);
    bool grad = kd_set_grad_enabled(false);
    for (int i = 0; i < 2; i++) {
        kd_tensor *m = kd_mean_all(kd_exp(kd_mul_scalar(scores[i], 1 / c->temperature)));
        mean[i] = m ? kd_tensor_get(m, 0) : NAN;
    }
    kd_set_grad_enabled(grad);
    if (c->host->world_size > 1) {
        double sums[3] = {mean[0] * count, mean[1] * count, count};
        kd_status st = crd_sum_over_ranks(c->host, sums, 3, c->provider);
        if (st != KD_OK)
            return st;
        mean[0] = sums[0] / sums[2];
        mean[1] = sums[1] / sums[2];
    }
    for (int i = 0; i < 2; i++)
        z[i] = mean[i] * (double)c->n;
    return KD_OK;
}

/* bank[i] <- normalize(m bank[i] + (1 - m) v[b]) at the batch's indices. */
static kd_status update_bank(const crd *c, kd_tensor *bank, const int64_t *index, kd_tensor *v)
{
    int64_t b = v->shape[0], d = v->shape[1];
    double *row = malloc((size_t)d * sizeof *row);
    if (!row)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory updating the banks", c->provider);
    for (int64_t r = 0; r < b; r++) {
        int64_t at = index[r] * d;
        double sq = 0;
        for (int64_t j = 0; j < d; j++) {
            row[j] = c->momentum * kd_tensor_get(bank, at + j) +
                     (1 - c->momentum) * kd_tensor_get(v, r * d + j);
            sq += row[j] * row[j];
        }
        double inv = 1 / sqrt(fmax(sq, MIN_SQUARED_NORM));
        if (bank->dtype == KD_F64) {
            double *dst = (double *)kd_tensor_data(bank) + at;
            for (int64_t j = 0; j < d; j++)
                dst[j] = row[j] * inv;
        } else {
            float *dst = (float *)kd_tensor_data(bank) + at;
            for (int64_t j = 0; j < d; j++)
                dst[j] = (float)(row[j] * inv);
        }
    }
    free(row);
    return KD_OK;
}

static kd_status check_inputs(const crd *c, const kd_loss_args *args, kd_tensor *s, kd_tensor *t)
{
    if (!s || !t)
        return kd_error(KD_ERR_INVALID, "%s: no %s tensor for tap '%s'", c->provider,
                        s ? "teacher" : "student", s ? c->taps[1] : c->taps[0]);
    int64_t b = s->shape[0];
    const kd_tensor *ix = args->indices;
    if (!ix || ix->dtype != KD_I64 || ix->ndim != 1 || ix->shape[0] != b ||
        !kd_tensor_is_contiguous(ix))
        return kd_error(KD_ERR_INVALID, "%s: needs the batch's %lld dataset indices (I64 [N])",
                        c->provider, (long long)b);
    if (t->shape[0] != b || kd_tensor_numel(s) / b != c->t[EMBED_S_WEIGHT]->shape[1] ||
        kd_tensor_numel(t) / b != c->t[EMBED_T_WEIGHT]->shape[1]) {
        char a[96], e[96];
        return kd_error(KD_ERR_INVALID, "%s: student tap '%s' %s and teacher tap '%s' %s are "
                        "not the shapes bind() sized the heads for (%lld and %lld per sample)",
                        c->provider, c->taps[0], kd_shape_str(s, a, sizeof a), c->taps[1],
                        kd_shape_str(t, e, sizeof e),
                        (long long)c->t[EMBED_S_WEIGHT]->shape[1],
                        (long long)c->t[EMBED_T_WEIGHT]->shape[1]);
    }
    return KD_OK;
}

/* This rank's negatives, [b * (K + 1)]: over several processes, rows
 * offset.. of the global batch's, drawn from rank 0's rng as one process
 * would. */
static kd_tensor *draw_negatives(crd *c, const kd_loss_args *args, int64_t b,
                                 const crd_batch *global)
{
    const int64_t flat = b * (c->k + 1);
    kd_tensor *idx = kd_tensor_empty(KD_I64, KD_CPU, 1, &flat);
    if (!idx) {
        kd_error_wrap(kd_last_status(), "%s", c->provider);
        return NULL;
    }
    kd_rng rng = args->rng;
    if (!global->index)
        return crd_negatives_draw(&c->negatives, kd_tensor_data(args->indices), b, c->k,
                                  c->relax, &rng, kd_tensor_data(idx), c->provider) == KD_OK
                   ? idx
                   : NULL;
    int64_t *all = malloc((size_t)(global->total * (c->k + 1)) * sizeof *all);
    kd_status st = all ? crd_rng_from_rank0(c->host, &rng, c->provider)
                       : kd_error(KD_ERR_NOMEM, "%s: out of memory for the global batch's "
                                  "negatives", c->provider);
    if (st == KD_OK)
        st = crd_negatives_draw(&c->negatives, global->index, global->total, c->k, c->relax,
                                &rng, all, c->provider);
    if (st == KD_OK)
        memcpy(kd_tensor_data(idx), all + global->offset * (c->k + 1),
               (size_t)flat * sizeof *all);
    free(all);
    return st == KD_OK ? idx : NULL;
}

/* The loss and the bank update on this rank's share (the whole batch on
 * one process). */
static kd_status forward_batch(crd *c, const kd_loss_args *args, kd_tensor *s, kd_tensor *t,
                               const crd_batch *global, kd_loss_result *out)
{
    const int64_t *index = kd_tensor_data(args->indices);
    kd_tensor *idx = draw_negatives(c, args, s->shape[0], global);
    if (!idx)
        return kd_last_status();
    kd_status st;
    /* The teacher's features are constants; its head still trains. */
    kd_tensor *teacher = t->dtype == c->dtype ? t : kd_cast(t, c->dtype);
    kd_tensor *v_s = embed(s->dtype == c->dtype ? s : kd_cast(s, c->dtype),
                           c->t[EMBED_S_WEIGHT], c->t[EMBED_S_BIAS]);
    kd_tensor *v_t = embed(teacher, c->t[EMBED_T_WEIGHT], c->t[EMBED_T_BIAS]);
    /* the rows the update below rewrites: the global batch's */
    const int64_t *own = global->index ? global->index : index;
    int64_t n_own = global->index ? global->total : s->shape[0];
    kd_tensor *scores_s = crd_bank_scores(c->t[MEMORY_T], idx, v_s, own, n_own);
    kd_tensor *scores_t = crd_bank_scores(c->t[MEMORY_S], idx, v_t, own, n_own);
    if (!scores_s || !scores_t)
        return kd_error_wrap(kd_last_status(), "%s", c->provider);

    if (!(kd_tensor_get(c->t[NCE_Z], 0) > 0)) {
        if (!args->training)
            return kd_error(KD_ERR_STATE, "%s: the NCE constant Z is set by the first "
                            "training step, and none has run", c->provider);
        double z[2];
        kd_tensor *const scores[2] = {scores_s, scores_t};
        if ((st = estimate_z(c, scores, z)) != KD_OK)
            return st;
        if (!(z[0] > 0) || !(z[1] > 0) || !isfinite(z[0]) || !isfinite(z[1]))
            return kd_error(KD_ERR_INVALID, "%s: the NCE constants came out %g and %g on the "
                            "first step", c->provider, z[0], z[1]);
        const int64_t two = 2;
        kd_tensor *src = kd_tensor_from_data(KD_F64, 1, &two, z);
        st = src ? kd_tensor_copy_(c->t[NCE_Z], src) : kd_last_status();
        kd_tensor_free(src);
        if (st != KD_OK)
            return kd_error_wrap(st, "%s: storing Z", c->provider);
    }
    c->terms[0].value = nce(c, scores_s, log(kd_tensor_get(c->t[NCE_Z], 0)));
    c->terms[1].value = nce(c, scores_t, log(kd_tensor_get(c->t[NCE_Z], 1)));
    out->loss = kd_add(c->terms[0].value, c->terms[1].value);
    if (!out->loss)
        return kd_error_wrap(kd_last_status(), "%s", c->provider);
    out->n_terms = 2;
    out->terms = c->terms;
    if (!args->training)
        return KD_OK;
    if (global->index) { /* every rank updates with the whole batch */
        index = global->index;
        v_s = crd_batch_rows(c->host, global, v_s, c->provider);
        v_t = v_s ? crd_batch_rows(c->host, global, v_t, c->provider) : NULL;
        if (!v_t)
            return kd_last_status();
    }
    st = update_bank(c, c->t[MEMORY_S], index, v_s);
    return st == KD_OK ? update_bank(c, c->t[MEMORY_T], index, v_t) : st;
}

static kd_status crd_forward(void *self, const kd_loss_args *args, kd_loss_result *out)
{
    crd *c = self;
    if (!c->t[0])
        return kd_error(KD_ERR_STATE, "%s: forward() before bind()", c->provider);
    kd_tensor *s = args->student ? args->student[0] : NULL;
    kd_tensor *t = args->teacher ? args->teacher[0] : NULL;
    kd_status st = check_inputs(c, args, s, t);
    if (st != KD_OK)
        return st;
    if (!c->have_negatives) {
        const int64_t *labels;
        st = c->host->train_labels(c->host->host, &labels);
        if (st == KD_OK)
            st = crd_negatives_init(&c->negatives, labels, c->n, c->provider);
        if (st != KD_OK)
            return st;
        c->have_negatives = true;
    }
    crd_batch global = {0};
    st = c->host->world_size > 1 ? crd_batch_gather(c->host, kd_tensor_data(args->indices),
                                                    s->shape[0], &global, c->provider)
                                 : KD_OK;
    if (st == KD_OK)
        st = forward_batch(c, args, s, t, &global, out);
    crd_batch_free(&global);
    return st;
}

static const kd_loss_vtable crd_vtable = {
    .header = {sizeof(kd_loss_vtable), KD_KIND_LOSS},
    .create = crd_create,
    .destroy = crd_destroy,
    .needs = crd_needs,
    .forward = crd_forward,
    .bind = crd_bind,
    .tensors = crd_tensors,
};

static const kd_plugin_provider providers[] = {
    {KD_KIND_LOSS, "crd", &crd_vtable.header, NULL},
};

kd_status kd_plugin_entry(kd_plugin_info *info)
{
    KD_PLUGIN_INFO_INIT(info, "crd", "1.0.0");
    KD_PLUGIN_PROVIDERS(info, providers, 1);
    return KD_OK;
}
