/* kdengine: KD_API marks what libkdcore exports.
 *
 * libkdcore is compiled with -fvisibility=hidden, so only the functions
 * declared with KD_API in these headers (the SDK) can be reached by a
 * plugin; the tape, the allocators and the host's job, session and runner
 * code stay inside. */
#ifndef KDENGINE_API_H
#define KDENGINE_API_H

#if defined(__GNUC__)
#define KD_API __attribute__((visibility("default")))
#else
#define KD_API
#endif

#endif
