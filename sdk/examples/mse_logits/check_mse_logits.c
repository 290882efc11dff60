/* Loads a built mse_logits.so the way a host does (dlopen, the entry
 * symbol, the ABI fields) and checks the loss's value, its gradient and
 * its shape error on small logits. Needs only the installed SDK.
 *
 * usage: check_mse_logits PATH/mse_logits.so */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <kdengine/kdengine.h>

static int failures;

static void check(int ok, const char *name, const char *why)
{
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, ok ? "" : ": ", ok ? "" : why);
    failures += !ok;
}

static const kd_loss_vtable *load(const char *path)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        check(0, "dlopen", dlerror());
        return NULL;
    }
    kd_plugin_entry_fn entry;
    *(void **)&entry = dlsym(lib, KD_PLUGIN_ENTRY_SYMBOL);
    kd_plugin_info info = {0};
    if (!entry || entry(&info) != KD_OK) {
        check(0, "entry", entry ? kd_last_error() : "no " KD_PLUGIN_ENTRY_SYMBOL " symbol");
        return NULL;
    }
    check(info.abi == KD_PLUGIN_ABI && info.tensor_size == sizeof(kd_tensor) &&
              info.max_dims == KD_MAX_DIMS && info.info_size == sizeof info,
          "abi and fingerprint", "built against another SDK");
    const kd_plugin_provider *p = info.n_providers == 1 ? &info.providers[0] : NULL;
    int ok = p && strcmp(info.name, "mse_logits") == 0 && p->kind == KD_KIND_LOSS &&
             strcmp(p->name, "mse_logits") == 0 && p->vtable->kind == KD_KIND_LOSS &&
             p->vtable->size == sizeof(kd_loss_vtable);
    check(ok, "provider", "not one loss called mse_logits with a loss vtable");
    return ok ? (const kd_loss_vtable *)p->vtable : NULL;
}

static void check_loss(const kd_loss_vtable *vt, void *loss)
{
    static const float s_data[6] = {1.0f, -2.0f, 0.5f, 3.0f, 0.0f, -1.0f};
    static const float t_data[6] = {0.5f, -1.0f, 0.5f, 1.0f, 2.0f, -4.0f};
    const int64_t shape[2] = {2, 3};
    kd_tensor *s = kd_tensor_from_data(KD_F32, 2, shape, s_data);
    kd_tensor *t = kd_tensor_from_data(KD_F32, 2, shape, t_data);
    kd_tensor_set_requires_grad(s, true);
    kd_scope_begin();
    kd_tensor *student[1] = {s}, *teacher[1] = {t};
    kd_loss_args args = {.size = sizeof args, .student = student, .teacher = teacher,
                         .training = true};
    kd_loss_result out = {.size = sizeof out};
    double expected = 0;
    for (int i = 0; i < 6; i++)
        expected += (double)(s_data[i] - t_data[i]) * (s_data[i] - t_data[i]) / 6;
    kd_status st = vt->forward(loss, &args, &out);
    check(st == KD_OK && fabs(kd_tensor_get(out.loss, 0) - expected) < 1e-6, "value",
          st == KD_OK ? "not the mean squared difference" : kd_last_error());
    double worst = 1;
    if (st == KD_OK && kd_backward(out.loss) == KD_OK && s->grad) {
        worst = 0;
        for (int i = 0; i < 6; i++) {
            double e = fabs(kd_tensor_get(s->grad, i) - 2.0 * (s_data[i] - t_data[i]) / 6);
            worst = e > worst ? e : worst;
        }
    }
    check(worst < 1e-6, "gradient", "not 2 (student - teacher) / numel");

    const int64_t other[2] = {3, 2};
    kd_tensor *wrong[1] = {kd_tensor_zeros(KD_F32, KD_CPU, 2, other)};
    args.teacher = wrong;
    st = vt->forward(loss, &args, &out);
    check(st == KD_ERR_INVALID && strstr(kd_last_error(), "mse_logits: student logits [2, 3]"),
          "shape error", kd_last_error());
    kd_scope_end();
    kd_tensor_free(s);
    kd_tensor_free(t);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH/mse_logits.so\n", argv[0]);
        return 2;
    }
    const kd_loss_vtable *vt = load(argv[1]);
    void *loss = NULL;
    if (vt && vt->create(&(kd_create_args){.size = sizeof(kd_create_args), .device = KD_CPU}, &loss) == KD_OK) {
        kd_loss_needs needs = {0};
        check(vt->needs(loss, &needs) == KD_OK && needs.n_student == 1 &&
                  needs.n_teacher == 1 && strcmp(needs.student[0], "logits") == 0 &&
                  strcmp(needs.teacher[0], "logits") == 0,
              "needs", "not the student's and the teacher's logits");
        check_loss(vt, loss);
        vt->destroy(loss);
    } else if (vt) {
        check(0, "create", kd_last_error());
    }
    return failures ? 1 : 0;
}
