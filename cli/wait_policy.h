/* OpenMP's wait policy for the commands that compute: passive unless the
 * user chose one. */
#ifndef KD_CLI_WAIT_POLICY_H
#define KD_CLI_WAIT_POLICY_H

#include <kdengine/status.h>

/* With neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT in the environment, sets
 * OMP_WAIT_POLICY=passive and executes this program again with argv: libgomp
 * reads both once, when it is loaded, before main, so only a new image of
 * the program sees them. Returns KD_OK when the user set either (nothing
 * done), an error when the new image cannot start. */
kd_status kd_wait_policy_default(char **argv);

#endif
