/* Runs the op table (op_rows.h): a gradient check in f64 against central
 * finite differences, a parity check in f32 against PyTorch, and on every
 * other device that has the row's op (core/backend/backend.c) the same
 * row in f32 and f64 against the CPU's output and gradients.
 *
 * usage: test_ops [--no-parity] [--no-gradcheck] [--no-devices] [substring ...]
 * With substrings, only rows whose name contains one of them run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/backend/backend.h"
#include "harness.h"
#include "op_rows.h"

#define MAX_ROWS 1024
#define GRADCHECK_MAX_PROBES 160
#define FD_EPS 1e-6

static const kt_op_row *rows[MAX_ROWS];
static int n_rows;

static void add_table(const kt_op_row *table, int argc, char **argv, int first_filter)
{
    for (const kt_op_row *r = table; r->name; r++) {
        bool keep = first_filter >= argc;
        for (int i = first_filter; i < argc && !keep; i++)
            keep = strstr(r->name, argv[i]) != NULL;
        if (keep && n_rows < MAX_ROWS)
            rows[n_rows++] = r;
    }
}

static uint64_t name_seed(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static bool differentiable(kt_input_kind k)
{
    return k == KT_FLOAT || k == KT_POSITIVE || k == KT_PROB_GRAD;
}

/* The row's inputs in `dtype` (float kinds), owned by the current scope. */
static bool make_inputs(const kt_op_row *row, kd_dtype dtype, kd_tensor **x)
{
    kd_rng rng = kd_rng_make(name_seed(row->name), 0, 0);
    for (int k = 0; k < row->n_inputs; k++) {
        const kt_input *in = &row->in[k];
        kd_tensor *t = NULL;
        switch (in->kind) {
        case KT_FLOAT:
        case KT_CONST:
            t = kt_uniform(dtype, in->ndim, in->shape, &rng, -2.0, 2.0);
            break;
        case KT_POSITIVE:
        case KT_CONST_POS:
            t = kt_uniform(dtype, in->ndim, in->shape, &rng, 0.5, 2.0);
            break;
        case KT_PROB:
        case KT_PROB_GRAD: {
            kd_tensor *u = kt_uniform(KD_F64, in->ndim, in->shape, &rng, -2.0, 2.0);
            if (!u)
                return false;
            double *d = kd_tensor_data(u);
            int64_t c = in->shape[in->ndim - 1], n = kd_tensor_numel(u);
            for (int64_t r = 0; r < n; r += c) {
                double s = 0;
                for (int64_t j = 0; j < c; j++)
                    s += (d[r + j] = exp(d[r + j]));
                for (int64_t j = 0; j < c; j++)
                    d[r + j] /= s;
            }
            t = kd_tensor_empty(dtype, KD_CPU, in->ndim, in->shape);
            if (t && kd_tensor_copy_(t, u) != KD_OK)
                t = NULL;
            break;
        }
        case KT_LABELS:
        case KT_MASK: {
            kd_dtype dt = in->kind == KT_LABELS ? KD_I64 : KD_U8;
            t = kd_tensor_empty(dt, KD_CPU, in->ndim, in->shape);
            if (!t)
                return false;
            int64_t n = kd_tensor_numel(t);
            for (int64_t i = 0; i < n; i++) {
                if (dt == KD_I64)
                    ((int64_t *)kd_tensor_data(t))[i] =
                        (int64_t)kd_rng_below(&rng, (uint64_t)in->range);
                else
                    ((uint8_t *)kd_tensor_data(t))[i] = (uint8_t)(kd_rng_u32(&rng) & 1);
            }
            break;
        }
        }
        if (!t)
            return false;
        kd_tensor_set_requires_grad(t, differentiable(in->kind));
        x[k] = t;
    }
    return true;
}

/* sum(fn(x) * w) with grad off, in its own scope. */
static bool weighted_output(const kt_op_row *row, kd_tensor *const *x,
                            const kd_tensor *w, double *out)
{
    bool was = kd_set_grad_enabled(false);
    kd_scope_begin();
    kd_tensor *y = row->fn(x);
    bool ok = y && kd_tensor_numel(y) == kd_tensor_numel(w);
    double s = 0;
    if (ok) {
        for (int64_t i = 0, n = kd_tensor_numel(w); i < n; i++)
            s += kd_tensor_get(y, i) * kd_tensor_get(w, i);
    }
    kd_scope_end();
    kd_set_grad_enabled(was);
    *out = s;
    return ok;
}

static void gradcheck(const kt_op_row *row)
{
    char name[160];
    snprintf(name, sizeof name, "gradcheck %s", row->name);
    if (row->flags & (KT_NO_GRADCHECK | KT_NO_BACKWARD))
        return; /* no gradient to check: its parity row covers it */
    kd_scope_begin();
    kd_tensor *x[4] = {0};
    if (!make_inputs(row, KD_F64, x)) {
        kt_fail(name, "inputs: %s", kd_last_error());
        goto done;
    }
    kd_tensor *y = row->fn(x);
    if (!y) {
        kt_fail(name, "forward: %s", kd_last_error());
        goto done;
    }
    if (y->dtype != KD_F64) {
        kt_fail(name, "forward gave %s for f64 inputs", kd_dtype_name(y->dtype));
        goto done;
    }
    kd_rng wrng = kd_rng_make(name_seed(row->name), 1, 0);
    kd_tensor *w = kt_uniform(KD_F64, y->ndim, y->shape, &wrng, -1.0, 1.0);
    if (!w || kd_backward_with(y, w) != KD_OK) {
        kt_fail(name, "backward: %s", kd_last_error());
        goto done;
    }
    double tol = row->grad_tol > 0 ? row->grad_tol : 1e-6;
    double worst = 0;
    char where[96] = "";
    for (int k = 0; k < row->n_inputs; k++) {
        if (!differentiable(row->in[k].kind))
            continue;
        int64_t n = kd_tensor_numel(x[k]);
        int64_t step = n > GRADCHECK_MAX_PROBES ? n / GRADCHECK_MAX_PROBES : 1;
        double *d = kd_tensor_data(x[k]);
        for (int64_t j = 0; j < n; j += step) {
            double v = d[j], fp, fm;
            d[j] = v + FD_EPS;
            bool ok = weighted_output(row, x, w, &fp);
            d[j] = v - FD_EPS;
            ok = ok && weighted_output(row, x, w, &fm);
            d[j] = v;
            if (!ok) {
                kt_fail(name, "forward while probing: %s", kd_last_error());
                goto done;
            }
            double numeric = (fp - fm) / (2 * FD_EPS);
            double analytic = x[k]->grad ? kd_tensor_get(x[k]->grad, j) : 0.0;
            double err = fabs(analytic - numeric) / fmax(1.0, fabs(numeric));
            if (!(err <= worst)) {
                worst = err;
                snprintf(where, sizeof where, "input %d element %lld: %.9g vs %.9g",
                         k, (long long)j, analytic, numeric);
            }
        }
    }
    if (row->flags & KT_WRONG_BACKWARD)
        kt_check(worst > tol, name, "a wrong backward passed: error %.3g <= %.3g", worst, tol);
    else
        kt_check(worst <= tol, name, "error %.3g > %.3g at %s", worst, tol, where);
done:
    kd_scope_end();
}

/* ------------------------------------------------------------ parity */

typedef struct parity_case {
    const kt_op_row *row;
    kd_tensor *y;
    kd_tensor *gx[4];
    bool failed;
} parity_case;

static bool torch_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", KD_TORCH_PYTHON);
    return system(cmd) == 0;
}

static void parity(int n, const kt_op_row *const *table)
{
    if (n == 0)
        return;
    if (!torch_available()) {
        for (int i = 0; i < n; i++) {
            char name[160];
            snprintf(name, sizeof name, "parity %s", table[i]->name);
            kt_skip(name, "torch is not importable by %s (install python3-torch)",
                    KD_TORCH_PYTHON);
        }
        return;
    }
    char dir[] = "/tmp/kdparity.XXXXXX";
    if (!mkdtemp(dir)) {
        kt_fail("parity", "cannot make a temporary directory");
        return;
    }
    char in_path[128], out_path[128];
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);

    kd_scope_begin();
    parity_case *cases = calloc((size_t)n, sizeof *cases);
    int cap = n * 8 + 8, nt = 0, nm = 0;
    const char **names = calloc((size_t)cap, sizeof *names);
    kd_tensor **tensors = calloc((size_t)cap, sizeof *tensors);
    const char **meta = calloc((size_t)n * 6 + 2, sizeof *meta);
    char *strings = calloc((size_t)cap + (size_t)n * 3, 48);
    char *sp = strings;
#define NAME(...) (snprintf(sp, 48, __VA_ARGS__), sp += 48, sp - 48)
    for (int i = 0; i < n; i++) {
        const kt_op_row *row = table[i];
        parity_case *c = &cases[i];
        c->row = row;
        char name[160];
        snprintf(name, sizeof name, "parity %s", row->name);
        kd_tensor *x[4] = {0};
        if (!make_inputs(row, KD_F32, x)) {
            kt_fail(name, "inputs: %s", kd_last_error());
            c->failed = true;
            continue;
        }
        kd_tensor *y = row->fn(x);
        if (!y) {
            kt_fail(name, "forward: %s", kd_last_error());
            c->failed = true;
            continue;
        }
        c->y = y;
        char grads[32] = "";
        bool backward =
            !(row->flags & (KT_NO_GRADCHECK | KT_NO_BACKWARD | KT_WRONG_BACKWARD)) &&
            y->requires_grad;
        if (backward) {
            kd_rng grng = kd_rng_make(name_seed(row->name), 2, 0);
            kd_tensor *gy = kt_uniform(KD_F32, y->ndim, y->shape, &grng, -1.0, 1.0);
            if (!gy || kd_backward_with(y, gy) != KD_OK) {
                kt_fail(name, "backward: %s", kd_last_error());
                c->failed = true;
                continue;
            }
            names[nt] = NAME("c%d.gy", i);
            tensors[nt++] = gy;
            for (int k = 0; k < row->n_inputs; k++) {
                if (!differentiable(row->in[k].kind))
                    continue;
                c->gx[k] = x[k]->grad;
                size_t len = strlen(grads);
                snprintf(grads + len, sizeof grads - len, "%s%d", len ? "," : "", k);
            }
        }
        for (int k = 0; k < row->n_inputs; k++) {
            names[nt] = NAME("c%d.x%d", i, k);
            tensors[nt++] = x[k];
        }
        names[nt] = NAME("c%d.ykd", i);
        tensors[nt++] = y;
        meta[nm++] = NAME("c%d.torch", i);
        meta[nm++] = row->torch;
        meta[nm++] = NAME("c%d.grad", i);
        meta[nm++] = strcpy(NAME("%s", ""), grads);
    }
    meta[nm++] = "cases";
    meta[nm++] = NAME("%d", n);
    if (kd_safetensors_save(in_path, nt, names, tensors, nm / 2, meta) != KD_OK) {
        kt_fail("parity", "writing %s: %s", in_path, kd_last_error());
        goto cleanup;
    }
    char script[512], cmd[1536];
    kt_source_path("tests/parity/torch_ref.py", script, sizeof script);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", KD_TORCH_PYTHON, script, in_path, out_path);
    if (system(cmd) != 0) {
        kt_fail("parity", "the torch reference failed: %s", cmd);
        goto cleanup;
    }
    kd_safetensors *ref;
    if (kd_safetensors_open(out_path, &ref) != KD_OK) {
        kt_fail("parity", "reading the torch results: %s", kd_last_error());
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        parity_case *c = &cases[i];
        if (c->failed)
            continue;
        char name[160], key[64];
        snprintf(name, sizeof name, "parity %s", c->row->name);
        snprintf(key, sizeof key, "c%d.error", i);
        const char *err = kd_safetensors_metadata(ref, key);
        if (err) {
            kt_fail(name, "torch: %s", err);
            continue;
        }
        double tol = c->row->parity_tol > 0 ? c->row->parity_tol : 1e-5;
        snprintf(key, sizeof key, "c%d.y", i);
        kd_tensor *ty = kd_safetensors_load(ref, key, c->y->dtype);
        if (!ty) {
            kt_fail(name, "torch output: %s", kd_last_error());
            continue;
        }
        if (!kd_tensor_same_shape(ty, c->y)) {
            char a[96], b[96];
            kt_fail(name, "output shape %s, torch %s", kd_shape_str(c->y, a, sizeof a),
                    kd_shape_str(ty, b, sizeof b));
            continue;
        }
        double worst = kt_rel_error(c->y, ty);
        char what[64] = "output";
        for (int k = 0; k < c->row->n_inputs; k++) {
            if (!c->gx[k] && !(differentiable(c->row->in[k].kind) &&
                               !(c->row->flags &
                                 (KT_NO_GRADCHECK | KT_NO_BACKWARD | KT_WRONG_BACKWARD))))
                continue;
            snprintf(key, sizeof key, "c%d.gx%d", i, k);
            kd_tensor *tg = kd_safetensors_load(ref, key, KD_F32);
            if (!tg) {
                worst = INFINITY;
                snprintf(what, sizeof what, "grad of input %d missing from torch", k);
                break;
            }
            double e;
            if (c->gx[k]) {
                e = kt_rel_error(c->gx[k], tg);
            } else { /* no gradient reached this input: torch's must be zero */
                kd_tensor *zero = kd_tensor_zeros_like(tg);
                e = zero ? kt_max_abs_diff(zero, tg) : INFINITY;
            }
            if (!(e <= worst)) {
                worst = e;
                snprintf(what, sizeof what, "grad of input %d", k);
            }
        }
        kt_check(worst <= tol, name, "%s: relative error %.3g > %.3g", what, worst, tol);
    }
    kd_safetensors_close(ref);
cleanup:
#undef NAME
    kd_scope_end();
    free(cases);
    free(names);
    free(tensors);
    free(meta);
    free(strings);
    unlink(in_path);
    unlink(out_path);
    rmdir(dir);
}

/* ------------------------------------------------------------ other devices */

static const struct {
    kd_device device;
    const char *name;
} other_devices[] = {{KD_CUDA, "cuda"}};

/* The op a row tests: its name up to the first '.'. */
static void row_op(const kt_op_row *row, char *op, size_t size)
{
    snprintf(op, size, "%.*s", (int)strcspn(row->name, "."), row->name);
}

/* NULL when the device can run kernels, else why not. */
static const char *device_missing(kd_device device)
{
    if (device == KD_CUDA && !kd_have_cuda_build())
        return "this build has no CUDA (configure --with-cuda)";
    if (device == KD_CUDA && !kd_cuda_device_available())
        return "no CUDA device or driver";
    return NULL;
}

/* A device result against the CPU's: norm-wise relative error (exact
 * for integer outputs). False with *what set on a mismatch. */
static bool device_close(kd_tensor *got, kd_tensor *want, double tol, const char *label,
                         char *what, size_t size)
{
    kd_tensor *g = got ? kd_tensor_to_device(got, KD_CPU) : NULL;
    if (!g || !kd_tensor_same_shape(g, want) || g->dtype != want->dtype) {
        snprintf(what, size, "%s: %s", label, g ? "shape or dtype differs" : kd_last_error());
        return false;
    }
    bool exact = want->dtype != KD_F32 && want->dtype != KD_F64;
    double e = exact ? kt_max_abs_diff(g, want) : kt_rel_error(g, want);
    if (!(e <= (exact ? 0 : tol))) {
        snprintf(what, size, "%s: relative error %.3g > %.3g", label, e, tol);
        return false;
    }
    return true;
}

/* The row in `dtype` on the CPU and on `device` from the same inputs and
 * output gradient. Returns 1 when they agree, 0 on a mismatch or error
 * (*what says which), -1 when a helper op the row calls is not on the
 * device. */
static int device_case(const kt_op_row *row, kd_dtype dtype, kd_device device, const char *op,
                       char *what, size_t size)
{
    double tol = dtype == KD_F64 ? 1e-12 : 1e-5;
    kd_tensor *x[4] = {0}, *xd[4] = {0};
    if (!make_inputs(row, dtype, x)) {
        snprintf(what, size, "inputs: %s", kd_last_error());
        return 0;
    }
    for (int k = 0; k < row->n_inputs; k++) {
        xd[k] = kd_tensor_to_device(x[k], device);
        if (!xd[k]) {
            snprintf(what, size, "upload: %s", kd_last_error());
            return 0;
        }
        kd_tensor_set_requires_grad(xd[k], x[k]->requires_grad);
    }
    kd_tensor *want = row->fn(x);
    if (!want) {
        snprintf(what, size, "cpu forward: %s", kd_last_error());
        return 0;
    }
    kd_tensor *got = row->fn(xd);
    if (!got) {
        /* A helper the row calls (a slice's backward, a pad) may be CPU
         * only; the row's own op must run. */
        bool helper = kd_last_status() == KD_ERR_UNSUPPORTED &&
                      strncmp(kd_last_error(), op, strlen(op)) != 0;
        snprintf(what, size, "forward: %s", kd_last_error());
        return helper ? -1 : 0;
    }
    if (!device_close(got, want, tol, "output", what, size))
        return 0;
    if ((row->flags & (KT_NO_GRADCHECK | KT_NO_BACKWARD)) || !want->requires_grad)
        return 1;
    kd_rng grng = kd_rng_make(name_seed(row->name), 3, 0);
    kd_tensor *gy = kt_uniform(dtype, want->ndim, want->shape, &grng, -1.0, 1.0);
    kd_tensor *gyd = gy ? kd_tensor_to_device(gy, device) : NULL;
    if (!gyd || kd_backward_with(want, gy) != KD_OK) {
        snprintf(what, size, "cpu backward: %s", kd_last_error());
        return 0;
    }
    if (kd_backward_with(got, gyd) != KD_OK) {
        bool helper = kd_last_status() == KD_ERR_UNSUPPORTED &&
                      strncmp(kd_last_error(), op, strlen(op)) != 0;
        snprintf(what, size, "backward: %s", kd_last_error());
        return helper ? -1 : 0;
    }
    for (int k = 0; k < row->n_inputs; k++) {
        if (!x[k]->requires_grad)
            continue;
        char label[32];
        snprintf(label, sizeof label, "grad of input %d", k);
        if (!x[k]->grad || !xd[k]->grad) {
            if (x[k]->grad || xd[k]->grad) {
                snprintf(what, size, "%s: on one device only", label);
                return 0;
            }
            continue;
        }
        if (!device_close(xd[k]->grad, x[k]->grad, tol, label, what, size))
            return 0;
    }
    return 1;
}

/* Every row on every other device that has its op; a device without a
 * usable runtime skips its rows, as one skip line giving their number and
 * the reason. Prints the ops of the table each device lacks. */
static void device_rows(int n, const kt_op_row *const *table)
{
    for (size_t d = 0; d < sizeof other_devices / sizeof *other_devices; d++) {
        kd_device device = other_devices[d].device;
        const char *dev = other_devices[d].name, *missing = device_missing(device);
        char lacks[64][32];
        int n_lacks = 0, n_missed = 0;
        for (int i = 0; i < n; i++) {
            const kt_op_row *row = table[i];
            char op[64], name[160], what[256] = "";
            row_op(row, op, sizeof op);
            snprintf(name, sizeof name, "%s %s", dev, row->name);
            if (!kd_backend_has_op(device, op)) {
                bool listed = false;
                for (int j = 0; j < n_lacks && !listed; j++)
                    listed = strcmp(lacks[j], op) == 0;
                if (!listed && n_lacks < 64)
                    snprintf(lacks[n_lacks++], sizeof lacks[0], "%s", op);
                continue;
            }
            if (missing) {
                n_missed++;
                continue;
            }
            int result = 1;
            static const kd_dtype dtypes[] = {KD_F32, KD_F64};
            for (int t = 0; t < 2 && result == 1; t++) {
                kd_scope_begin();
                result = device_case(row, dtypes[t], device, op, what, sizeof what);
                kd_scope_end();
                if (result != 1) {
                    char tmp[256];
                    snprintf(tmp, sizeof tmp, "%s: %s", kd_dtype_name(dtypes[t]), what);
                    snprintf(what, sizeof what, "%s", tmp);
                }
            }
            if (result < 0)
                kt_skip(name, "a helper op is not on %s: %s", dev, what);
            else
                kt_check(result == 1, name, "%s", what);
        }
        if (n_missed)
            kt_skip(dev, "%d rows not run: %s", n_missed, missing);
        printf("# %s lacks:%s", dev, n_lacks ? "" : " nothing");
        for (int j = 0; j < n_lacks; j++)
            printf("%s %s", j ? "," : "", lacks[j]);
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    bool run_parity = true, run_grad = true, run_devices = true;
    int first = 1;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first++) {
        if (strcmp(argv[first], "--no-parity") == 0)
            run_parity = false;
        else if (strcmp(argv[first], "--no-gradcheck") == 0)
            run_grad = false;
        else if (strcmp(argv[first], "--no-devices") == 0)
            run_devices = false;
    }
    kd_set_num_threads(2);
    const kt_op_row *tables[] = {kt_rows_elementwise, kt_rows_reduce, kt_rows_linalg,
                                 kt_rows_conv, kt_rows_norm, kt_rows_shape,
                                 kt_rows_loss, kt_rows_custom};
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        add_table(tables[t], argc, argv, first);
    if (run_grad)
        for (int i = 0; i < n_rows; i++)
            gradcheck(rows[i]);
    if (run_parity)
        parity(n_rows, rows);
    if (run_devices)
        device_rows(n_rows, rows);
    return kt_finish();
}
