/* The one oneDNN CPU engine and stream every oneDNN kernel here runs on. */
#include <pthread.h>

#include <dnnl_debug.h>

#include "dnnl_context.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static dnnl_status_t made;

static void make(void)
{
    made = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (made == dnnl_success && (made = dnnl_stream_create(&stream, engine,
                                                           dnnl_stream_default_flags))) {
        dnnl_engine_destroy(engine);
        engine = NULL;
    }
}

kd_status kd_dnnl_context(const char *who, dnnl_engine_t *e, dnnl_stream_t *s)
{
    pthread_once(&once, make);
    if (made != dnnl_success)
        return kd_error(made == dnnl_out_of_memory ? KD_ERR_NOMEM : KD_ERR_UNSUPPORTED,
                        "%s: oneDNN engine or stream creation failed: %s", who,
                        dnnl_status2str(made));
    *e = engine;
    *s = stream;
    return KD_OK;
}

kd_status kd_dnnl_fail(const char *who, const char *what, dnnl_status_t s)
{
    return kd_error(s == dnnl_out_of_memory ? KD_ERR_NOMEM : KD_ERR_UNSUPPORTED,
                    "%s: oneDNN %s failed: %s", who, what, dnnl_status2str(s));
}
