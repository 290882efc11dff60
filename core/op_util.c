/* Helpers shared by op implementations: checks, broadcasting, layout. */
#include <string.h>

#include "internal.h"

kd_tensor *kd_contiguous_raw(kd_tensor *x)
{
    if (!x || kd_tensor_is_contiguous(x))
        return x;
    kd_tensor *c = kd_tensor_empty(x->dtype, x->device, x->ndim, x->shape);
    if (c && kd_tensor_copy_(c, x) != KD_OK)
        return NULL;
    return c;
}

kd_status kd_check_float(const char *op, const kd_tensor *x)
{
    if (!x)
        return kd_error(KD_ERR_INVALID, "%s: NULL tensor", op);
    if (x->dtype != KD_F32 && x->dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: dtype %s (f32 or f64 expected)",
                        op, kd_dtype_name(x->dtype));
    return KD_OK;
}

kd_status kd_check_same(const char *op, const kd_tensor *a, const kd_tensor *b)
{
    if (a->dtype != b->dtype)
        return kd_error(KD_ERR_INVALID, "%s: dtypes %s and %s differ", op,
                        kd_dtype_name(a->dtype), kd_dtype_name(b->dtype));
    if (a->device != b->device)
        return kd_error(KD_ERR_INVALID, "%s: tensors on cpu and cuda", op);
    return KD_OK;
}

kd_status kd_norm_dim(const char *op, int ndim, int dim, int *out)
{
    int d = dim < 0 ? dim + ndim : dim;
    if (d < 0 || d >= (ndim ? ndim : 1))
        return kd_error(KD_ERR_INVALID, "%s: dim %d out of range for %d dims", op,
                        dim, ndim);
    *out = d;
    return KD_OK;
}

kd_status kd_broadcast_shape(const char *op, const kd_tensor *a,
                             const kd_tensor *b, int *ndim, int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char x[96], y[96];
            return kd_error(KD_ERR_INVALID, "%s: shapes %s and %s do not broadcast",
                            op, kd_shape_str(a, x, sizeof x),
                            kd_shape_str(b, y, sizeof y));
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return KD_OK;
}

void kd_broadcast_strides(const kd_tensor *t, int ndim, const int64_t *shape,
                          int64_t *stride)
{
    for (int i = 0; i < ndim; i++) {
        int it = i - (ndim - t->ndim);
        stride[i] = (it < 0 || (t->shape[it] == 1 && shape[i] != 1)) ? 0
                                                                      : t->stride[it];
    }
}

kd_tensor *kd_sum_to_shape(kd_tensor *g, int ndim, const int64_t *shape)
{
    if (!g)
        return NULL;
    if (g->ndim == ndim && memcmp(g->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return g;
    /* Leading dims the target lacks, and dims it holds at size 1. */
    int dims[KD_MAX_DIMS], n = 0;
    for (int i = 0; i < g->ndim; i++) {
        int it = i - (g->ndim - ndim);
        if (it < 0 || (shape[it] == 1 && g->shape[i] != 1))
            dims[n++] = i;
    }
    kd_tensor *summed = n ? kd_sum(g, n, dims, true) : g;
    kd_tensor *out = kd_reshape(summed, ndim, shape);
    return out ? kd_contiguous_raw(out) : NULL;
}
