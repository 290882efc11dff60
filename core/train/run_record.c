/* The "run" record of metrics.jsonl (run_record.h). */
#include "run_record.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <kdengine/runtime.h>

#include "core/train/git_commit.h" /* made by the build: KD_GIT_COMMIT */
#include "dist.h"

/* The variables that cap which CPU kernels the libraries pick: two runs on
 * one machine differ in speed and rounding when these do. */
static const char *const ISA_VARIABLES[] = {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                                            "OPENBLAS_CORETYPE"};

#ifdef _OPENMP
static const int OPENMP_BUILD = 1;
#else
static const int OPENMP_BUILD = 0;
#endif

static json_t *string_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static const char *compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown C11 compiler";
#endif
}

kd_status kd_run_record(int64_t step, json_t **out)
{
    *out = NULL;
    char host[HOST_NAME_MAX + 1] = "";
    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[HOST_NAME_MAX] = '\0'; /* gethostname need not end a cut name */
    json_t *env = json_object();
    for (size_t i = 0; env && i < sizeof ISA_VARIABLES / sizeof *ISA_VARIABLES; i++)
        if (json_object_set_new(env, ISA_VARIABLES[i], string_or_null(getenv(ISA_VARIABLES[i]))))
            json_decref(env), env = NULL;
    json_t *r = env ? json_pack("{s:s, s:I, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:b, s:b, s:i, "
                                "s:o, s:o, s:i}",
                                "type", "run", "step", (json_int_t)step, "kdengine", kd_version(),
                                "git_commit", string_or_null(KD_GIT_COMMIT[0] ? KD_GIT_COMMIT : NULL),
                                "compiler", compiler(), "blas", string_or_null(kd_blas_config()),
                                "blas_core", string_or_null(kd_blas_core()),
                                "onednn", string_or_null(kd_onednn_version()),
                                "onednn_isa", string_or_null(kd_onednn_isa()),
                                "openmp", OPENMP_BUILD, "cuda", kd_have_cuda_build(), "threads", kd_num_threads(),
                                "env", env, "hostname", string_or_null(host[0] ? host : NULL),
                                "world_size", kd_dist().world)
                    : NULL;
    if (!r)
        return kd_error(KD_ERR_NOMEM, "metrics.jsonl: out of memory for the run record");
    *out = r;
    return KD_OK;
}
