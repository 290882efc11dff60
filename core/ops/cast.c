/* Dtype conversion. Between float dtypes the gradient is cast back to the
 * input's dtype; a conversion to or from an integer dtype has no gradient.
 * The fast CPU conversions are in core/backend/cpu/cast.c. */
#include "../backend/cpu/cpu.h"
#include "../internal.h"

/* Contiguous CPU conversions the generic copy would do element by element
 * through a switch. Returns false when there is no fast path. */
static bool convert_fast(kd_tensor *dst, const kd_tensor *src)
{
    if (src->device != KD_CPU || dst->device != KD_CPU || !kd_tensor_is_contiguous(src))
        return false;
    return kd_cpu_convert(dst->dtype, kd_tensor_data(dst), src->dtype, kd_tensor_data(src),
                          kd_tensor_numel(src));
}

/* x converted to dtype: a new contiguous tensor, not recorded. */
static kd_tensor *convert(kd_tensor *x, kd_dtype dtype)
{
    kd_tensor *out = kd_tensor_empty(dtype, x->device, x->ndim, x->shape);
    if (!out)
        return NULL;
    if (!convert_fast(out, x) && kd_tensor_copy_(out, x) != KD_OK)
        return NULL;
    return out;
}

static kd_status cast_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    kd_tensor *gx = convert(g, x->dtype);
    return gx ? kd_grad_accumulate_take(x, gx) : KD_ERR_NOMEM;
}

/* Casting to x's own dtype returns x itself. */
kd_tensor *kd_cast(kd_tensor *x, kd_dtype dtype)
{
    if (!x)
        return NULL;
    if ((unsigned)dtype >= KD_DTYPE_COUNT) {
        kd_error(KD_ERR_INVALID, "cast: unknown dtype %d", (int)dtype);
        return NULL;
    }
    if (x->dtype == dtype)
        return x;
    kd_tensor *out = convert(x, dtype);
    if (!out)
        return NULL;
    if (kd_dtype_is_float(dtype) && kd_dtype_is_float(x->dtype)) {
        kd_node *node;
        if (kd_record("cast", cast_backward, out, 1, &x, &node) != KD_OK)
            return NULL;
    }
    return out;
}
