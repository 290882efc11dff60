#include <math.h>
#include <string.h>

#include "harness.h"
#include "loss_fixture.h"
#include "plugin_fixture.h"

bool kt_loss_open(const char *name, const char *provider, const char *json, kd_dtype dtype,
                  uint64_t seed, kt_loss *out)
{
    memset(out, 0, sizeof *out);
    const kd_vtable_header *vt;
    const kd_registry_entry *entry = kt_provider(KD_KIND_LOSS, provider, &vt);
    kd_params *params = entry ? kt_params(entry, json) : NULL;
    if (!params) {
        kt_fail(name, "loss '%s' with %s did not load", provider, json);
        return false;
    }
    kd_create_args args = kt_create_args(entry, params, seed);
    args.dtype = dtype;
    const kd_loss_vtable *lv = (const kd_loss_vtable *)vt;
    kd_status st = lv->create(&args, &out->self);
    kd_params_free(params);
    if (st != KD_OK) {
        kt_fail(name, "create %s: %s", provider, kd_last_error());
        return false;
    }
    out->vt = lv;
    return true;
}

void kt_loss_close(kt_loss *l)
{
    if (l->vt)
        l->vt->destroy(l->self);
    l->vt = NULL;
}

kd_status kt_loss_forward(const kt_loss *l, const kt_loss_batch *b, kd_loss_result *r)
{
    kd_tensor *s[1] = {b->student}, *t[1] = {b->teacher};
    const kd_loss_args args = {.size = sizeof args,
                               .student = s,
                               .teacher = b->teacher ? t : NULL,
                               .labels = b->labels,
                               .soft_targets = b->soft,
                               .epoch = b->epoch,
                               .training = true};
    *r = (kd_loss_result){.size = sizeof *r};
    return l->vt->forward(l->self, &args, r);
}

double kt_loss_step(const kt_loss *l, kt_loss_batch *b, bool want_grad)
{
    kd_tensor_zero_grad(b->student);
    kd_tensor_set_requires_grad(b->student, want_grad);
    kd_scope_begin();
    kd_loss_result r;
    double value = NAN;
    if (kt_loss_forward(l, b, &r) == KD_OK && (!want_grad || kd_backward(r.loss) == KD_OK))
        value = kd_tensor_get(r.loss, 0);
    kd_scope_end();
    return value;
}

void kt_loss_batch_free(kt_loss_batch *b)
{
    kd_tensor_free(b->student);
    kd_tensor_free(b->teacher);
    kd_tensor_free(b->labels);
    kd_tensor_free(b->soft);
    memset(b, 0, sizeof *b);
}

void kt_expect_error(const char *name, kd_status st, const char *w1, const char *w2)
{
    const char *msg = st != KD_OK ? kd_last_error() : "";
    kt_check(st != KD_OK && strstr(msg, w1) && (!w2 || strstr(msg, w2)), name,
             "status %d, message '%s' (expected '%s'%s%s)", (int)st,
             st != KD_OK ? msg : "accepted", w1, w2 ? " and " : "", w2 ? w2 : "");
}
