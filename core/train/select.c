/* `kdengine select`: the teacher's top-k pool images per class (select.h). */
#include "select.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <kdengine/kdengine.h>

#include "../loader.h"
#include "session.h"
#include "teachers.h"
#include "threads.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ the rule */

/* One candidate of a class: its probability and place in the pool. */
typedef struct candidate {
    double p;
    int64_t index;
} candidate;

/* a ranks below b: less probable, or as probable and later in the pool */
static bool ranks_below(const candidate *a, const candidate *b)
{
    return a->p < b->p || (a->p == b->p && a->index > b->index);
}

/* Each class keeps its best K in a heap whose root is the worst of them,
 * so a pool of N images costs N log K. */
typedef struct class_heap {
    candidate *items; /* [k], made on the class's first candidate */
    int64_t n;
} class_heap;

static void sift_up(candidate *h, int64_t i)
{
    while (i > 0 && ranks_below(&h[i], &h[(i - 1) / 2])) {
        candidate t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static void sift_down(candidate *h, int64_t n, int64_t i)
{
    for (;;) {
        int64_t low = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_below(&h[l], &h[low]))
            low = l;
        if (r < n && ranks_below(&h[r], &h[low]))
            low = r;
        if (low == i)
            return;
        candidate t = h[i];
        h[i] = h[low];
        h[low] = t;
        i = low;
    }
}

static kd_status offer(class_heap *h, int64_t k, candidate c)
{
    if (!h->items && !(h->items = malloc((size_t)k * sizeof *h->items)))
        return kd_error(KD_ERR_NOMEM, "select: out of memory for the top %lld of a class",
                        (long long)k);
    if (h->n < k) {
        h->items[h->n] = c;
        sift_up(h->items, h->n++);
    } else if (ranks_below(&h->items[0], &c)) {
        h->items[0] = c;
        sift_down(h->items, h->n, 0);
    }
    return KD_OK;
}

/* qsort order: most probable first, earlier in the pool first. */
static int best_first(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    return ranks_below(y, x) ? -1 : ranks_below(x, y) ? 1 : 0;
}

/* ------------------------------------------------------------ scoring */

typedef struct selector {
    const kd_job *job;
    const kd_select_options *o;
    kd_session *s;
    const kd_dataset_vtable *pool_vt;
    void *pool;
    int64_t pool_length, k;
    int classes;
    class_heap *heaps; /* [classes] */
    double *probs;     /* [pool_length * classes] with o->scores, else NULL */
    bool *want;        /* the teacher's logits only */
} selector;

/* The image_pool dataset over o->pool (a folder or a list), its images
 * decoded with as many channels as data.val's samples have. */
static kd_status open_pool(selector *s)
{
    const kd_registry_entry *e =
        kd_registry_find(s->job->registry, KD_KIND_DATASET, "image_pool");
    if (!e)
        return kd_error(KD_ERR_INVALID, "--pool: no dataset 'image_pool' (the images plugin) "
                        "in the plugin dirs");
    struct stat sb;
    if (stat(s->o->pool, &sb) != 0)
        return kd_error(KD_ERR_IO, "--pool %s: %s", s->o->pool, strerror(errno));
    /* on_error "error": a skipped image would lend its path another's scores */
    json_t *value = json_pack("{s:s, s:i, s:s}", S_ISDIR(sb.st_mode) ? "root" : "list",
                              s->o->pool, "channels", s->s->val.channels, "on_error", "error");
    kd_params *params = NULL;
    kd_status st = value ? kd_params_build(e, value, "--pool", 0, NULL, &params)
                         : kd_error(KD_ERR_NOMEM, "select: out of memory");
    json_decref(value);
    const kd_vtable_header *h = NULL;
    const kd_plugin_provider *provider = NULL;
    if (st == KD_OK)
        st = kd_registry_load(s->job->registry, e, &h, &provider);
    if (st == KD_OK) {
        s->pool_vt = (const kd_dataset_vtable *)h;
        kd_create_args args = {.size = sizeof args, .params = params, .seed = s->job->seed,
                               .device = KD_CPU, .dtype = KD_F32, .provider = e->name,
                               .provider_data = provider->user_data};
        st = s->pool_vt->create(&args, &s->pool);
    }
    kd_params_free(params);
    kd_dataset_info info = {0};
    if (st == KD_OK)
        st = s->pool_vt->info(s->pool, &info);
    if (st == KD_OK && !s->pool_vt->sample_name)
        st = kd_error(KD_ERR_INVALID, "dataset 'image_pool' does not name its samples "
                      "(sample_name): a newer images plugin is needed");
    if (st == KD_OK && info.length < 1)
        st = kd_error(KD_ERR_INVALID, "it holds no image");
    s->pool_length = info.length;
    return st == KD_OK ? st : kd_error_wrap(st, "--pool %s", s->o->pool);
}

/* One batch: the teacher's softmax in float64, each row offered to its
 * argmax class (the lowest of equals). */
static kd_status score_batch(selector *s, const kd_batch *b)
{
    kd_model_run *m = &s->s->student; /* the teacher, opened as the model */
    kd_tensor *images = b->images->dtype == m->dtype ? b->images : kd_cast(b->images, m->dtype);
    if (images) /* at the teacher's own input size and normalization, if it has them */
        images = kd_teacher_input(&s->s->teachers[0], images);
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args fa = {sizeof fa, images, false, kd_rng_make(s->job->seed, 0, 0), s->want,
                          m->out};
    kd_status st = images ? m->vt->forward(m->self, &fa) : kd_last_status();
    kd_tensor *logits = st == KD_OK ? m->out[m->logits] : NULL;
    if (st == KD_OK && !logits)
        st = kd_error(KD_ERR_FORMAT, "model '%s' did not fill tap 'logits'",
                      m->spec->entry->name);
    kd_tensor *probs = logits ? kd_contiguous(kd_softmax(kd_cast(logits, KD_F64), 1)) : NULL;
    if (st == KD_OK && !probs)
        st = kd_error_wrap(kd_last_status(), "softmax of the logits");
    if (st != KD_OK)
        return kd_error_wrap(st, "teacher forward");
    const double *p = kd_tensor_data(probs);
    const int64_t *rows = kd_tensor_data(b->indices);
    int c_n = s->classes;
    for (int64_t i = 0; st == KD_OK && i < b->indices->shape[0]; i++) {
        const double *row = p + i * c_n;
        int best = 0;
        for (int c = 0; c < c_n; c++) {
            if (!isfinite(row[c]))
                return kd_error(KD_ERR_INVALID, "teacher forward: the softmax of %s is not "
                                "finite (class %d)",
                                s->pool_vt->sample_name(s->pool, rows[i]), c);
            if (row[c] > row[best])
                best = c;
        }
        st = offer(&s->heaps[best], s->k, (candidate){row[best], rows[i]});
        if (s->probs)
            memcpy(s->probs + rows[i] * c_n, row, (size_t)c_n * sizeof *row);
    }
    return st;
}

static kd_status score_pool(selector *s, FILE *progress)
{
    const kd_job *job = s->job;
    kd_loader_config c = {
        .dataset = s->pool_vt,
        .dataset_self = s->pool,
        .label = "--pool",
        .n_transforms = job->val.n_transforms,
        .transforms = s->s->val.tvt,
        .transform_selves = s->s->val.tself,
        .batch_size = job->val.batch_size,
        .workers = job->val.workers,
        .prefetch = job->val.prefetch,
        .seed = job->seed,
    };
    kd_loader *loader = NULL;
    kd_status st = kd_loader_new(&c, &loader);
    if (st == KD_OK)
        st = kd_loader_start(loader, 0, 0);
    double t0 = now_s();
    bool grad = kd_set_grad_enabled(false);
    while (st == KD_OK) {
        kd_batch b;
        bool done;
        st = kd_loader_next(loader, &b, &done);
        if (st != KD_OK || done)
            break;
        kd_scope_begin();
        st = score_batch(s, &b);
        kd_scope_end();
    }
    kd_set_grad_enabled(grad);
    kd_loader_free(loader);
    if (st == KD_OK && progress)
        fprintf(progress, "select: teacher '%s' scored %lld pool images in %.1f s\n",
                job->teacher.entry->name, (long long)s->pool_length, now_s() - t0);
    return st;
}

/* ------------------------------------------------------------ output */

static kd_status write_list(selector *s, FILE *progress)
{
    const char *out = s->o->out;
    size_t size = strlen(out) + 5;
    char *tmp = malloc(size);
    if (!tmp)
        return kd_error(KD_ERR_NOMEM, "%s: out of memory", out);
    snprintf(tmp, size, "%s.tmp", out);
    FILE *f = fopen(tmp, "w");
    kd_status st = f ? KD_OK : kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    int64_t kept = 0;
    int short_classes = 0;
    for (int c = 0; st == KD_OK && c < s->classes; c++) {
        class_heap *h = &s->heaps[c];
        if (h->n > 1)
            qsort(h->items, (size_t)h->n, sizeof *h->items, best_first);
        for (int64_t i = 0; st == KD_OK && i < h->n; i++) {
            const char *path = s->pool_vt->sample_name(s->pool, h->items[i].index);
            if (!path || !*path || strpbrk(path, " \t\r\n\v\f"))
                st = kd_error(KD_ERR_INVALID, "pool image %lld '%s': a path with whitespace "
                              "cannot be a list line", (long long)h->items[i].index,
                              path ? path : "");
            else if (fprintf(f, "%s %d\n", path, c) < 0)
                st = kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
        }
        kept += h->n;
        if (st == KD_OK && h->n < s->o->top_k && progress) {
            fprintf(progress, "%s class %d: %lld", short_classes ? "," : "select: fewer than "
                    "--top-k images for", c, (long long)h->n);
            short_classes++;
        }
    }
    if (short_classes && progress)
        fprintf(progress, "\n");
    if (f && fclose(f) != 0 && st == KD_OK)
        st = kd_error(KD_ERR_IO, "%s: %s", tmp, strerror(errno));
    if (st == KD_OK && rename(tmp, out) != 0)
        st = kd_error(KD_ERR_IO, "%s: %s", out, strerror(errno));
    if (st != KD_OK)
        remove(tmp);
    free(tmp);
    if (st == KD_OK && progress)
        fprintf(progress, "select: kept %lld images (top %lld of each of %d classes) in %s\n",
                (long long)kept, (long long)s->o->top_k, s->classes, out);
    return st;
}

static kd_status write_scores(selector *s)
{
    json_t *names = json_array();
    for (int64_t i = 0; names && i < s->pool_length; i++)
        if (json_array_append_new(names, json_string(s->pool_vt->sample_name(s->pool, i))))
            json_decref(names), names = NULL;
    char *text = names ? json_dumps(names, JSON_COMPACT) : NULL;
    json_decref(names);
    kd_tensor *probs = text ? kd_tensor_from_data(KD_F64, 2,
                                                  (int64_t[]){s->pool_length, s->classes},
                                                  s->probs)
                            : NULL;
    kd_status st = probs ? KD_OK : kd_error(KD_ERR_NOMEM, "%s: out of memory", s->o->scores);
    const char *tensor_names[1] = {"probs"}, *meta[2] = {"kdengine.pool", text};
    if (st == KD_OK)
        st = kd_safetensors_save(s->o->scores, 1, tensor_names, &probs, 1, meta);
    kd_tensor_free(probs);
    free(text);
    return st == KD_OK ? st : kd_error_wrap(st, "--scores");
}

kd_status kd_select(const kd_job *job, const kd_select_options *o, FILE *progress)
{
    if (!job->teacher.present)
        return kd_error(KD_ERR_INVALID, "teacher: missing (select scores the pool with the "
                        "job's teacher)");
    kd_status one = kd_job_one_teacher(job, "select");
    if (one != KD_OK)
        return one;
    if (!job->val.present)
        return kd_error(KD_ERR_INVALID, "data.val: missing (its transforms are the teacher's "
                        "view of the pool)");
    if (o->top_k < 1)
        return kd_error(KD_ERR_INVALID, "select: --top-k must be at least 1");
    selector s = {.job = job, .o = o};
    kd_status st = kd_threads_apply(job, NULL);
    if (st == KD_OK)
        st = kd_session_open(job, KD_SESSION_TEACHER, &s.s);
    if (st == KD_OK)
        st = open_pool(&s);
    if (st == KD_OK) {
        s.classes = s.s->num_classes;
        s.k = o->top_k < s.pool_length ? o->top_k : s.pool_length;
        s.heaps = calloc((size_t)s.classes, sizeof *s.heaps);
        s.want = calloc((size_t)s.s->student.n_taps, sizeof *s.want);
        if (o->scores)
            s.probs = malloc((size_t)s.pool_length * (size_t)s.classes * sizeof *s.probs);
        if (!s.heaps || !s.want || (o->scores && !s.probs))
            st = kd_error(KD_ERR_NOMEM, "select: out of memory for %lld images x %d classes",
                          (long long)s.pool_length, s.classes);
        else
            s.want[s.s->student.logits] = true;
    }
    if (st == KD_OK)
        st = score_pool(&s, progress);
    if (st == KD_OK)
        st = write_list(&s, progress);
    if (st == KD_OK && o->scores)
        st = write_scores(&s);
    for (int c = 0; s.heaps && c < s.classes; c++)
        free(s.heaps[c].items);
    free(s.heaps);
    free(s.probs);
    free(s.want);
    if (s.pool)
        s.pool_vt->destroy(s.pool);
    kd_session_close(s.s);
    return st;
}
