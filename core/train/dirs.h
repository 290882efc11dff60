/* Making the folders a run or a label store writes into. */
#ifndef KD_CORE_TRAIN_DIRS_H
#define KD_CORE_TRAIN_DIRS_H

#include <kdengine/kdengine.h>

/* mkdir -p: `path` and every missing parent (0777 before the umask); an
 * existing folder is fine. The error names the folder that failed. */
kd_status kd_make_dirs(const char *path);

#endif
