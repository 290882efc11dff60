/* One forward pass of a job's model on a tensor from a file, or on image
 * files decoded and transformed by the data plugins. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "../loader.h"
#include "checkpoint.h"
#include "forward.h"
#include "session.h"
#include "threads.h"

/* timm's default evaluation crop: resize to size / 0.875, crop size. */
#define DEFAULT_CROP_PCT 0.875
#define DEFAULT_SIZE 224
static const double imagenet_mean[] = {0.485, 0.456, 0.406};
static const double imagenet_std[] = {0.229, 0.224, 0.225};

static bool is_image_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
                   !strcasecmp(dot, ".png"));
}

/* The input tensor, in the model's dtype and batched. */
static kd_status read_input(const kd_forward_options *o, kd_dtype dtype, kd_tensor **out)
{
    kd_safetensors *f = NULL;
    const char *input = o->inputs[0];
    kd_status st = kd_safetensors_open(input, &f);
    if (st != KD_OK)
        return st;
    const char *key = o->input_key;
    if (!key && kd_safetensors_find(f, "input"))
        key = "input";
    if (!key && kd_safetensors_count(f) == 1)
        key = kd_safetensors_at(f, 0)->name;
    const kd_safetensors_entry *e = key ? kd_safetensors_find(f, key) : NULL;
    if (!key)
        st = kd_error(KD_ERR_INVALID, "%s: %d tensors and none named \"input\" (choose one with "
                      "--input-key)", input, kd_safetensors_count(f));
    else if (!e)
        st = kd_error(KD_ERR_INVALID, "%s: no tensor named '%s'", input, key);
    else if (e->dtype < 0 || !kd_dtype_is_float((kd_dtype)e->dtype))
        st = kd_error(KD_ERR_INVALID, "%s: tensor '%s' is %s, not floating point", input,
                      key, e->file_dtype);
    else if (e->ndim != 3 && e->ndim != 4)
        st = kd_error(KD_ERR_INVALID, "%s: tensor '%s' has %d dimensions; expected [N, C, H, "
                      "W] or [C, H, W]", input, key, e->ndim);
    kd_tensor *x = st == KD_OK ? kd_safetensors_load(f, key, dtype) : NULL;
    if (st == KD_OK && !x)
        st = kd_error_wrap(kd_last_status(), "%s", input);
    if (x && x->ndim == 3 && !(x = kd_unsqueeze(x, 0)))
        st = kd_error_wrap(kd_last_status(), "%s", input);
    kd_safetensors_close(f);
    *out = x;
    return st;
}

/* Marks the taps to write in want[]; an unknown name lists the model's. */
static kd_status choose_taps(const kd_model_run *m, const kd_forward_options *o, bool *want)
{
    if (o->n_taps == 0)
        want[m->logits] = true;
    for (int i = 0; i < o->n_taps; i++) {
        bool all = !strcmp(o->taps[i], "all"), found = all;
        for (int t = 0; t < m->n_taps; t++)
            if (all || !strcmp(m->taps[t].name, o->taps[i]))
                want[t] = found = true;
        if (!found) {
            char known[1024] = "";
            for (int t = 0; t < m->n_taps && strlen(known) + 64 < sizeof known; t++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s",
                         t ? ", " : "", m->taps[t].name);
            return kd_error(KD_ERR_INVALID, "--taps: model '%s' has no tap '%s' (it has: %s)",
                            m->spec->entry->name, o->taps[i], known);
        }
    }
    return KD_OK;
}

/* ---------------------------------------------------------------- images */

/* Image inputs as a data split: the images plugin's image_files dataset
 * and the transforms (data.val's for a job file, the options' for a
 * model), opened as data.val is; val is the job's data.val, open for its
 * channels and class names. */
typedef struct image_input {
    json_t *split; /* the split's JSON: spec's parameters point into it */
    kd_job_data spec;
    kd_data_run run, val;
} image_input;

static void image_input_close(image_input *in)
{
    kd_session_close_data(&in->run);
    kd_session_close_data(&in->val);
    kd_job_free_split(&in->spec);
    json_decref(in->split);
}

static json_t *number_array(int n, const double *v)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* resize to floor(size / crop_pct), center_crop size, normalize. */
static kd_status default_transforms(const kd_job *job, const kd_forward_options *o,
                                    json_t **out, int *channels)
{
    int n_mean = o->n_mean ? o->n_mean : 3, n_std = o->n_std ? o->n_std : 3;
    const double *mean = o->n_mean ? o->mean : imagenet_mean;
    const double *std = o->n_std ? o->std : imagenet_std;
    if (n_mean != n_std || (n_mean != 1 && n_mean != 3))
        return kd_error(KD_ERR_INVALID, "--mean has %d values and --std %d: give 1 (gray) or 3 "
                        "(RGB), as many of each", n_mean, n_std);
    int64_t size = o->size ? o->size : kd_params_integer(job->student.params, "img_size");
    size = size > 0 ? size : DEFAULT_SIZE;
    double crop_pct = o->crop_pct > 0 ? o->crop_pct : DEFAULT_CROP_PCT;
    double side = floor((double)size / crop_pct);
    if (side < 1 || side > 65536)
        return kd_error(KD_ERR_INVALID, "--size %lld / --crop-pct %g: resizing to %g pixels",
                        (long long)size, crop_pct, side);
    *channels = n_mean;
    *out = json_pack("[{s:s, s:[I], s:s}, {s:s, s:[I]}, {s:s, s:o, s:o}]", "name", "resize",
                     "size", (json_int_t)side, "interpolation",
                     o->interpolation ? o->interpolation : "bilinear", "name", "center_crop",
                     "size", (json_int_t)size, "name", "normalize", "mean",
                     number_array(n_mean, mean), "std", number_array(n_std, std));
    return *out ? KD_OK : kd_error(KD_ERR_NOMEM, "forward: out of memory");
}

/* A job's data.val transforms, at the channels its data set gives. */
static kd_status job_transforms(const kd_job *job, image_input *in, json_t **out,
                                int *channels)
{
    if (!job->val.present)
        return kd_error(KD_ERR_INVALID, "data.val: missing (a job's images go through its "
                        "transforms)");
    kd_status st = kd_session_open_data(job, &job->val, &in->val);
    if (st != KD_OK)
        return st;
    *channels = in->val.info.channels > 0 ? in->val.info.channels : in->val.channels;
    json_t *t = json_object_get(json_object_get(json_object_get(job->root, "data"), "val"),
                                "transforms");
    *out = t ? json_deep_copy(t) : json_array();
    return *out ? KD_OK : kd_error(KD_ERR_NOMEM, "forward: out of memory");
}

static kd_status image_input_open(const kd_job *job, const kd_forward_options *o,
                                  image_input *in)
{
    json_t *transforms = NULL, *paths = json_array();
    int channels = 0;
    kd_status st = paths ? KD_OK : kd_error(KD_ERR_NOMEM, "forward: out of memory");
    for (int i = 0; st == KD_OK && i < o->n_inputs; i++)
        if (json_array_append_new(paths, json_string(o->inputs[i])) != 0)
            st = kd_error(KD_ERR_INVALID, "--input '%s': not UTF-8 text", o->inputs[i]);
    if (st == KD_OK)
        st = o->model_only ? default_transforms(job, o, &transforms, &channels)
                           : job_transforms(job, in, &transforms, &channels);
    if (st != KD_OK) {
        json_decref(paths);
        json_decref(transforms);
        return st;
    }
    in->split = json_pack("{s:{s:s, s:o, s:i}, s:o}", "dataset", "name", "image_files",
                          "paths", paths, "channels", channels, "transforms", transforms);
    if (!in->split)
        return kd_error(KD_ERR_NOMEM, "forward: out of memory");
    st = kd_job_parse_split(job, in->split, "--input", &in->spec);
    return st == KD_OK ? kd_session_open_data(job, &in->spec, &in->run) : st;
}

/* The inputs as one batch [N, C, H, W] in dtype, in the step's scope. */
static kd_status read_images(const kd_job *job, const image_input *in, int n, kd_dtype dtype,
                             kd_tensor **out)
{
    *out = NULL;
    kd_loader_config c = {.dataset = in->run.vt,
                          .dataset_self = in->run.self,
                          .label = "--input",
                          .n_transforms = in->spec.n_transforms,
                          .transforms = in->run.tvt,
                          .transform_selves = in->run.tself,
                          .batch_size = n,
                          .prefetch = 1,
                          .seed = job->seed};
    kd_loader *l = NULL;
    kd_batch b;
    bool done = false;
    kd_status st = kd_loader_new(&c, &l);
    if (st == KD_OK)
        st = kd_loader_start(l, 0, 0);
    if (st == KD_OK)
        st = kd_loader_next(l, &b, &done);
    if (st == KD_OK && done)
        st = kd_error(KD_ERR_STATE, "--input: the loader made no batch");
    kd_tensor *x = st == KD_OK ? kd_tensor_to_device(b.images, KD_CPU) : NULL;
    if (x && dtype != x->dtype)
        x = kd_cast(x, dtype);
    if (st == KD_OK && !x)
        st = kd_error_wrap(kd_last_status(), "--input");
    kd_loader_free(l);
    *out = x;
    return st;
}

/* The class names a job's data.val or the weights carry (a JSON array),
 * or NULL. */
static json_t *class_names(const kd_job *job, const kd_forward_options *o,
                           const image_input *in)
{
    const kd_data_run *v = &in->val;
    if (v->vt && v->vt->class_name) {
        json_t *names = json_array();
        for (int c = 0; names && c < v->info.num_classes; c++) {
            const char *name = v->vt->class_name(v->self, c);
            json_array_append_new(names, json_string(name ? name : ""));
        }
        return names;
    }
    const char *weights = o->teacher ? job->teacher.weights : job->student.weights;
    char *text = NULL;
    if (!weights || kd_checkpoint_classes(weights, &text) != KD_OK || !text)
        return NULL;
    json_t *names = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_array(names)) {
        json_decref(names);
        return NULL;
    }
    return names;
}

/* Each input's five most likely classes: softmax of the logits [N, K]. */
static void print_top5(FILE *log, const kd_tensor *logits, const kd_forward_options *o,
                       const json_t *names)
{
    if (logits->ndim != 2)
        return;
    int64_t rows = logits->shape[0], k = logits->shape[1];
    bool named = names && (int64_t)json_array_size(names) == k;
    if (names && !named)
        fprintf(log, "(%zu class names for %lld logits: printing numbers)\n",
                json_array_size(names), (long long)k);
    for (int64_t r = 0; r < rows; r++) {
        int top[5] = {-1, -1, -1, -1, -1};
        double best[5], max = -INFINITY, sum = 0;
        for (int64_t c = 0; c < k; c++)
            max = fmax(max, kd_tensor_get(logits, r * k + c));
        for (int64_t c = 0; c < k; c++) {
            double z = kd_tensor_get(logits, r * k + c);
            sum += exp(z - max);
            /* insertion into the five best; ties keep the lower class */
            for (int j = 0; j < 5; j++)
                if (top[j] < 0 || z > best[j]) {
                    for (int m = 4; m > j; m--) {
                        top[m] = top[m - 1];
                        best[m] = best[m - 1];
                    }
                    top[j] = (int)c;
                    best[j] = z;
                    break;
                }
        }
        if (is_image_path(o->inputs[0]) || rows == 1)
            fprintf(log, "top-5 of %s:\n", o->inputs[is_image_path(o->inputs[0]) ? r : 0]);
        else
            fprintf(log, "top-5 of %s[%lld]:\n", o->inputs[0], (long long)r);
        for (int j = 0; j < 5 && top[j] >= 0; j++)
            fprintf(log, "  %7.3f%%  %d%s%s\n", 100.0 * exp(best[j] - max) / sum, top[j],
                    named ? " " : "",
                    named ? json_string_value(json_array_get(names, (size_t)top[j])) : "");
    }
}

/* ---------------------------------------------------------------- run */

static kd_status run_and_write(kd_model_run *m, const kd_job *job, const kd_forward_options *o,
                               FILE *log)
{
    bool *write = calloc((size_t)m->n_taps, sizeof *write);
    bool *want = calloc((size_t)m->n_taps, sizeof *want);
    const char **names = calloc((size_t)m->n_taps, sizeof *names);
    kd_tensor **outs = calloc((size_t)m->n_taps, sizeof *outs);
    kd_status st = write && want && names && outs
                       ? choose_taps(m, o, write)
                       : kd_error(KD_ERR_NOMEM, "forward: out of memory");
    bool images = is_image_path(o->inputs[0]);
    for (int i = 1; st == KD_OK && i < o->n_inputs; i++)
        if (!images || !is_image_path(o->inputs[i]))
            st = kd_error(KD_ERR_INVALID, "--input %s: several inputs must all be images "
                          "(.jpg, .jpeg, .png); a safetensors input comes alone",
                          o->inputs[i]);
    image_input in = {0};
    kd_tensor *x = NULL;
    if (st == KD_OK && images) {
        st = image_input_open(job, o, &in);
        if (st == KD_OK)
            st = read_images(job, &in, o->n_inputs, m->dtype, &x);
    } else if (st == KD_OK) {
        st = read_input(o, m->dtype, &x);
    }
    if (st == KD_OK) {
        /* the logits are always computed: the top-5 comes from them */
        memcpy(want, write, (size_t)m->n_taps * sizeof *want);
        want[m->logits] = true;
        memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
        kd_forward_args args = {sizeof args, x, o->training, kd_rng_make(job->seed, 0, 0), want,
                                m->out};
        kd_macs_take();
        st = m->vt->forward(m->self, &args);
        if (st == KD_OK)
            fprintf(log, "%s: %.4f GMACs per image (convolutions, products, attention)\n",
                    m->spec->entry->name, (double)kd_macs_take() / (double)x->shape[0] / 1e9);
        if (st != KD_OK)
            kd_error_wrap(st, "%s (model '%s')", m->spec->path, m->spec->entry->name);
    }
    int n = 0;
    for (int t = 0; st == KD_OK && t < m->n_taps; t++) {
        if (!want[t])
            continue;
        if (!m->out[t]) {
            st = kd_error(KD_ERR_FORMAT, "%s (model '%s'): tap '%s' was asked for and not "
                          "filled", m->spec->path, m->spec->entry->name, m->taps[t].name);
            break;
        }
        if (!write[t])
            continue;
        names[n] = m->taps[t].name;
        outs[n] = m->out[t];
        fprintf(log, "%-24s %-6s [", names[n], kd_dtype_name(outs[n]->dtype));
        for (int d = 0; d < outs[n]->ndim; d++)
            fprintf(log, "%s%lld", d ? ", " : "", (long long)outs[n]->shape[d]);
        fprintf(log, "]\n");
        n++;
    }
    if (st == KD_OK) {
        json_t *classes = class_names(job, o, &in);
        print_top5(log, m->out[m->logits], o, classes);
        json_decref(classes);
    }
    json_t *inputs = json_array();
    for (int i = 0; inputs && i < o->n_inputs; i++)
        json_array_append_new(inputs, json_string(o->inputs[i]));
    char *input_list = inputs && o->n_inputs > 1 ? json_dumps(inputs, JSON_COMPACT) : NULL;
    json_decref(inputs);
    const char *meta[] = {"model", m->spec->entry->name,
                          "input", input_list ? input_list : o->inputs[0],
                          "mode", o->training ? "train" : "eval"};
    if (st == KD_OK && o->n_inputs > 1 && !input_list)
        st = kd_error(KD_ERR_NOMEM, "forward: out of memory");
    if (st == KD_OK)
        st = kd_safetensors_save(o->out, n, names, outs, 3, meta);
    free(input_list);
    image_input_close(&in);
    free(write);
    free(want);
    free(names);
    free(outs);
    return st;
}

kd_status kd_forward(const kd_job *job, const kd_forward_options *o, FILE *log)
{
    if (o->n_inputs < 1)
        return kd_error(KD_ERR_INVALID, "forward: no input");
    kd_session *s = NULL;
    kd_status st = kd_threads_apply(job, NULL);
    if (st == KD_OK)
        st = kd_session_open(job, o->teacher ? KD_SESSION_TEACHER_WEIGHTS : KD_SESSION_WEIGHTS,
                             &s);
    if (st != KD_OK)
        return st;
    bool saved = kd_set_grad_enabled(false);
    kd_scope_begin();
    st = run_and_write(&s->student, job, o, log);
    kd_scope_end();
    kd_set_grad_enabled(saved);
    kd_session_close(s);
    return st;
}
