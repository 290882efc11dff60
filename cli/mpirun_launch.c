/* `--nproc N`: this executable again under mpirun (mpirun_launch.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#include "../core/train/dist.h"
#include "mpirun_launch.h"

kd_status kd_launch_under_mpirun(const char *command, int nproc, int argc, char **argv)
{
    if (kd_dist_launched())
        return kd_error(KD_ERR_INVALID, "--nproc %d: this process was already started by a "
                        "launcher (mpirun, srun); give the process count to it instead", nproc);
#ifdef KD_HAVE_MPI
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || len >= (ssize_t)sizeof self - 1)
        return kd_error(KD_ERR_IO, "--nproc: cannot find this executable (/proc/self/exe)");
    self[len] = '\0';
    char count[16];
    snprintf(count, sizeof count, "%d", nproc);
    const char *head[] = {KD_MPIRUN, "-np", count, "--oversubscribe", "--bind-to", "none",
                          self, command};
    int n_head = (int)(sizeof head / sizeof *head);
    char **args = calloc((size_t)(n_head + argc + 1), sizeof *args);
    if (!args)
        return kd_error(KD_ERR_NOMEM, "--nproc: out of memory");
    int n = 0;
    for (int i = 0; i < n_head; i++)
        args[n++] = (char *)head[i];
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--nproc"))
            i++; /* and its value */
        else
            args[n++] = argv[i];
    }
    fflush(NULL);
    execvp(KD_MPIRUN, args);
    kd_status st = kd_error(KD_ERR_IO, "--nproc: cannot start %s: %s", KD_MPIRUN,
                            strerror(errno));
    free(args);
    return st;
#else
    (void)command, (void)argc, (void)argv;
    return kd_error(KD_ERR_UNSUPPORTED, "--nproc %d: this kdengine was built without MPI "
                    "(configure found no Open MPI); install libopenmpi-dev and openmpi-bin "
                    "(scripts/setup), reconfigure and rebuild", nproc);
#endif
}
