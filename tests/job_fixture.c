#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kdengine/kdengine.h>

#include "harness.h"
#include "job_fixture.h"

bool kt_write_idx(const char *path, int ndims, const uint32_t *dims, const uint8_t *data,
                  size_t n)
{
    size_t header = 4 + 4 * (size_t)ndims;
    uint8_t *buf = malloc(header + n);
    if (!buf)
        return false;
    buf[0] = buf[1] = 0;
    buf[2] = 0x08;
    buf[3] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++)
        for (int b = 0; b < 4; b++)
            buf[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
    memcpy(buf + header, data, n);
    bool ok = kt_write_file(path, buf, header + n);
    free(buf);
    return ok;
}

bool kt_write_quadrants(const char *dir, const char *name, uint32_t count, uint64_t seed)
{
    uint8_t *images = malloc((size_t)count * 64), *labels = malloc(count);
    kd_rng rng = kd_rng_make(seed, 7, 0);
    for (uint32_t i = 0; images && labels && i < count; i++) {
        labels[i] = (uint8_t)(i % 4);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int q = (y >= 4) * 2 + (x >= 4);
                int v = (q == labels[i] ? 160 : 40) + (int)kd_rng_below(&rng, 80);
                images[i * 64 + (uint32_t)(y * 8 + x)] = (uint8_t)v;
            }
    }
    char path[512];
    uint32_t idims[3] = {count, 8, 8}, ldims[1] = {count};
    snprintf(path, sizeof path, "%s/%s-images.idx", dir, name);
    bool ok = images && labels && kt_write_idx(path, 3, idims, images, (size_t)count * 64);
    snprintf(path, sizeof path, "%s/%s-labels.idx", dir, name);
    ok = ok && kt_write_idx(path, 1, ldims, labels, count);
    free(images);
    free(labels);
    return ok;
}

int kt_kdengine(const char *dir, char **out, const char *fmt, ...)
{
    char args[16384], cmd[20480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && %s/kdengine %s 2>&1", dir, KD_BUILDDIR, args);
    return kt_run_command(cmd, out);
}

void kt_stage_mlp(const char *dir, char *plugin_dir, size_t size)
{
    char from[1024], to[1024];
    snprintf(plugin_dir, size, "%s/extra", dir);
    mkdir(plugin_dir, 0777);
    snprintf(to, sizeof to, "%s/mlp", plugin_dir);
    mkdir(to, 0777);
    size_t len;
    unsigned char *manifest =
        kt_read_file(kt_source_path("tests/plugins/mlp/manifest.json", from, sizeof from), &len);
    snprintf(to, sizeof to, "%s/mlp/manifest.json", plugin_dir);
    if (manifest)
        kt_write_file(to, manifest, len);
    free(manifest);
    snprintf(from, sizeof from, "%s/tests/plugins/mlp/.libs/mlp.so", KD_BUILDDIR);
    snprintf(to, sizeof to, "%s/mlp/mlp.so", plugin_dir);
    if (symlink(from, to) != 0)
        perror(to);
}
