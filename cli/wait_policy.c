/* OpenMP's wait policy default (wait_policy.h).
 *
 * libgomp's default lets a thread that waits for its team spin for
 * GOMP_SPINCOUNT (300000) turns before it sleeps. On cores shared with
 * loader workers or other processes, a spinning thread takes the time its
 * teammates need: bench/README.md ("OpenMP's wait policy") measured the KD
 * step 5x slower than with passive waiting on a loaded 2-core machine. */
#include "wait_policy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

kd_status kd_wait_policy_default(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
        return KD_OK;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return kd_error(KD_ERR_NOMEM, "setting OMP_WAIT_POLICY=passive: %s", strerror(errno));
    execv("/proc/self/exe", argv);
    return kd_error(KD_ERR_IO, "starting again with OMP_WAIT_POLICY=passive (/proc/self/exe): "
                    "%s; set OMP_WAIT_POLICY (passive or active) to skip this step",
                    strerror(errno));
}
