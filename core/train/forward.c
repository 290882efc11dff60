/* One forward pass of a job's model on a tensor from a file. */
#include <stdlib.h>
#include <string.h>

#include <kdengine/kdengine.h>

#include "forward.h"
#include "session.h"
#include "threads.h"

/* The input tensor, in the model's dtype and batched. */
static kd_status read_input(const kd_forward_options *o, kd_dtype dtype, kd_tensor **out)
{
    kd_safetensors *f = NULL;
    kd_status st = kd_safetensors_open(o->input, &f);
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
                      "--input-key)", o->input, kd_safetensors_count(f));
    else if (!e)
        st = kd_error(KD_ERR_INVALID, "%s: no tensor named '%s'", o->input, key);
    else if (e->dtype < 0 || !kd_dtype_is_float((kd_dtype)e->dtype))
        st = kd_error(KD_ERR_INVALID, "%s: tensor '%s' is %s, not floating point", o->input,
                      key, e->file_dtype);
    else if (e->ndim != 3 && e->ndim != 4)
        st = kd_error(KD_ERR_INVALID, "%s: tensor '%s' has %d dimensions; expected [N, C, H, "
                      "W] or [C, H, W]", o->input, key, e->ndim);
    kd_tensor *x = st == KD_OK ? kd_safetensors_load(f, key, dtype) : NULL;
    if (st == KD_OK && !x)
        st = kd_error_wrap(kd_last_status(), "%s", o->input);
    if (x && x->ndim == 3 && !(x = kd_unsqueeze(x, 0)))
        st = kd_error_wrap(kd_last_status(), "%s", o->input);
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

static kd_status run_and_write(kd_model_run *m, const kd_job *job, const kd_forward_options *o,
                               FILE *log)
{
    bool *want = calloc((size_t)m->n_taps, sizeof *want);
    const char **names = calloc((size_t)m->n_taps, sizeof *names);
    kd_tensor **outs = calloc((size_t)m->n_taps, sizeof *outs);
    kd_status st = want && names && outs ? choose_taps(m, o, want)
                                         : kd_error(KD_ERR_NOMEM, "forward: out of memory");
    kd_tensor *x = NULL;
    if (st == KD_OK)
        st = read_input(o, m->dtype, &x);
    if (st == KD_OK) {
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
        names[n] = m->taps[t].name;
        outs[n] = m->out[t];
        fprintf(log, "%-24s %-6s [", names[n], kd_dtype_name(outs[n]->dtype));
        for (int d = 0; d < outs[n]->ndim; d++)
            fprintf(log, "%s%lld", d ? ", " : "", (long long)outs[n]->shape[d]);
        fprintf(log, "]\n");
        n++;
    }
    const char *meta[] = {"model", m->spec->entry->name, "input", o->input,
                          "mode", o->training ? "train" : "eval"};
    if (st == KD_OK)
        st = kd_safetensors_save(o->out, n, names, outs, 3, meta);
    free(want);
    free(names);
    free(outs);
    return st;
}

kd_status kd_forward(const kd_job *job, const kd_forward_options *o, FILE *log)
{
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
