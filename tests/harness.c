#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int n_passed, n_failed, n_skipped;

void kt_pass(const char *name)
{
    n_passed++;
    printf("ok   %s\n", name);
}

static void vreport(const char *tag, const char *name, const char *fmt, va_list ap)
{
    printf("%s %s: ", tag, name);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
}

void kt_fail(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    n_failed++;
    vreport("FAIL", name, fmt, ap);
    va_end(ap);
}

void kt_skip(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    n_skipped++;
    vreport("skip", name, fmt, ap);
    va_end(ap);
}

bool kt_check(bool cond, const char *name, const char *fmt, ...)
{
    if (cond) {
        kt_pass(name);
        return true;
    }
    va_list ap;
    va_start(ap, fmt);
    n_failed++;
    vreport("FAIL", name, fmt, ap);
    va_end(ap);
    return false;
}

int kt_finish(void)
{
    printf("RESULT %d %d %d\n", n_passed, n_failed, n_skipped);
    return n_failed ? 1 : 0;
}

kd_tensor *kt_uniform(kd_dtype dtype, int ndim, const int64_t *shape, kd_rng *rng,
                      double lo, double hi)
{
    kd_tensor *t = kd_tensor_empty(KD_F64, KD_CPU, ndim, shape);
    if (!t)
        return NULL;
    double *d = kd_tensor_data(t);
    int64_t n = kd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        d[i] = lo + (hi - lo) * kd_rng_uniform(rng);
    if (dtype == KD_F64)
        return t;
    kd_tensor *c = kd_tensor_empty(dtype, KD_CPU, ndim, shape);
    if (!c || kd_tensor_copy_(c, t) != KD_OK)
        return NULL;
    kd_tensor_free(t);
    return c;
}

double kt_rel_error(const kd_tensor *a, const kd_tensor *b)
{
    double num = 0, den = 0;
    int64_t n = kd_tensor_numel(b);
    for (int64_t i = 0; i < n; i++) {
        double x = kd_tensor_get(a, i), y = kd_tensor_get(b, i);
        if (isnan(x) != isnan(y))
            return INFINITY;
        if (isnan(x))
            continue;
        num += (x - y) * (x - y);
        den += y * y;
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

double kt_max_abs_diff(const kd_tensor *a, const kd_tensor *b)
{
    double m = 0;
    int64_t n = kd_tensor_numel(b);
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(kd_tensor_get(a, i) - kd_tensor_get(b, i)));
    return m;
}

bool kt_write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return false;
    bool ok = fwrite(data, 1, len, fp) == len;
    return fclose(fp) == 0 && ok;
}

unsigned char *kt_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, used = 0, got;
    do {
        if (used == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(fp);
                return NULL;
            }
            buf = grown;
        }
        got = fread(buf + used, 1, cap - used, fp);
        used += got;
    } while (got > 0);
    fclose(fp);
    *len = used;
    return buf;
}

void kt_remove_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

const char *kt_source_path(const char *relative, char *buf, int size)
{
    snprintf(buf, (size_t)size, "%s/%s", KD_SRCDIR, relative);
    return buf;
}

void kt_replay_corpus(const char *relative_dir, kt_corpus_parse_fn parse)
{
    char dir_path[512];
    kt_source_path(relative_dir, dir_path, sizeof dir_path);
    DIR *dir = opendir(dir_path);
    if (!kt_check(dir != NULL, "corpus: directory", "%s: %s", dir_path, strerror(errno)))
        return;
    int files = 0, valid = 0, bad = 0;
    char first_bad[320] = "";
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.')
            continue;
        char path[800];
        snprintf(path, sizeof path, "%s/%s", dir_path, de->d_name);
        size_t len;
        unsigned char *bytes = kt_read_file(path, &len);
        if (!bytes)
            continue;
        files++;
        bool consistent = true;
        kd_status st = parse(bytes, len, de->d_name, &consistent);
        if (st == KD_OK) {
            valid++;
            if (!consistent && !bad++)
                snprintf(first_bad, sizeof first_bad, "%s: parsed, but its checks failed",
                         de->d_name);
        } else if (st != KD_ERR_FORMAT || !strstr(kd_last_error(), de->d_name)) {
            if (!bad++)
                snprintf(first_bad, sizeof first_bad, "%s: %s: %s", de->d_name,
                         kd_status_name(st), kd_last_error());
        }
        free(bytes);
    }
    closedir(dir);
    kt_check(files > 0 && bad == 0, "corpus: every file parses or is KD_ERR_FORMAT",
             "%d files, %d bad (%s)", files, bad, first_bad);
    printf("     corpus: %d files, %d valid\n", files, valid);
}

/* Runs a shell command, returns its exit status and (if out) its stdout. */
int kt_run_command(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t cap = 4096, n = 0;
    char *text = malloc(cap);
    size_t got;
    while (text && (got = fread(text + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 2) {
            char *grown = realloc(text, cap * 2);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            cap *= 2;
        }
    }
    int status = pclose(p);
    if (text)
        text[n] = '\0';
    if (out)
        *out = text;
    else
        free(text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
