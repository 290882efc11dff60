/* kdengine: the whole public API of the core. */
#ifndef KDENGINE_KDENGINE_H
#define KDENGINE_KDENGINE_H

#include <kdengine/custom_op.h>
#include <kdengine/dtype.h>
#include <kdengine/ops.h>
#include <kdengine/plugin.h>
#include <kdengine/rng.h>
#include <kdengine/runtime.h>
#include <kdengine/safetensors.h>
#include <kdengine/status.h>
#include <kdengine/tensor.h>

#endif
