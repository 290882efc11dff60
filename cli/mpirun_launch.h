/* `--nproc N` of the CLI's commands: this executable again under mpirun. */
#ifndef KD_CLI_MPIRUN_LAUNCH_H
#define KD_CLI_MPIRUN_LAUNCH_H

#include <kdengine/status.h>

/* Re-executes this kdengine as `mpirun -np N --oversubscribe --bind-to
 * none kdengine COMMAND ARGS`, ARGS being argv without --nproc and its
 * value; returns only when that cannot start (a launched process, a build
 * without MPI, no mpirun), with the error. */
kd_status kd_launch_under_mpirun(const char *command, int nproc, int argc, char **argv);

#endif
