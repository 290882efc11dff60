#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dirs.h"

kd_status kd_make_dirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return kd_error(KD_ERR_INVALID, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return kd_error(KD_ERR_IO, "%s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return kd_error(KD_ERR_IO, "%s: %s", buf, strerror(errno));
    return KD_OK;
}
