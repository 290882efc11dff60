/* Checks the built plugin through kdengine's test kit: loads the folder as
 * kdengine does (manifest, ABI, providers), then checks the loss's value,
 * its gradient in f64 against finite differences, and its shape error.
 *
 * usage: check_mse_logits PLUGIN_FOLDER */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <kdengine/testkit.h>

static int failures;

static void check(int ok, const char *name)
{
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, ok ? "" : ": ", ok ? "" : kd_last_error());
    failures += !ok;
}

int main(int argc, char **argv)
{
    kd_testkit *kit;
    kd_testkit_instance *loss;
    if (argc != 2) {
        fprintf(stderr, "usage: %s PLUGIN_FOLDER\n", argv[0]);
        return 2;
    }
    check(kd_testkit_open(argv[1], &kit) == KD_OK, "open");
    if (failures)
        return 1;
    kd_testkit_spec spec = {.kind = KD_KIND_LOSS, .provider = "mse_logits", .dtype = KD_F64};
    check(kd_testkit_create(kit, &spec, &loss) == KD_OK, "create");
    if (failures) {
        kd_testkit_close(kit);
        return 1;
    }

    const double s_data[6] = {1, -2, 0.5, 3, 0, -1}, t_data[6] = {0.5, -1, 0.5, 1, 2, -4};
    kd_tensor *s = kd_tensor_from_data(KD_F64, 2, (int64_t[]){2, 3}, s_data);
    kd_tensor *t = kd_tensor_from_data(KD_F64, 2, (int64_t[]){2, 3}, t_data);
    kd_tensor *wrong = kd_tensor_zeros(KD_F64, KD_CPU, 2, (int64_t[]){3, 2});
    kd_tensor_set_requires_grad(s, true);
    kd_testkit_batch batch = {.student = &s, .teacher = &t};
    double expected = 0;
    for (int i = 0; i < 6; i++)
        expected += (s_data[i] - t_data[i]) * (s_data[i] - t_data[i]) / 6;

    check(kd_testkit_loss_bind(loss, &batch) == KD_OK, "needs and bind");
    kd_scope_begin();
    kd_loss_result out;
    check(kd_testkit_loss_forward(loss, &batch, &out) == KD_OK &&
              fabs(kd_tensor_get(out.loss, 0) - expected) < 1e-12, "value");
    check(kd_testkit_loss_gradcheck(loss, &batch, 1e-6, NULL) == KD_OK, "gradient (f64)");
    batch.teacher = &wrong;
    check(kd_testkit_loss_forward(loss, &batch, &out) == KD_ERR_INVALID &&
              strstr(kd_last_error(), "mse_logits: student logits [2, 3]"), "shape error");
    kd_scope_end();
    kd_tensor_free(s);
    kd_tensor_free(t);
    kd_tensor_free(wrong);
    kd_testkit_close(kit);
    return failures ? 1 : 0;
}
