/* Helpers shared by op implementations: checks, broadcasting, layout. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#ifdef KD_HAVE_CUDA
#include "backend/cuda/cuda.h"
#endif

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
    kd_tensor *src = kd_contiguous_raw(g);
    kd_tensor *out = src ? kd_tensor_zeros(g->dtype, g->device, ndim, shape) : NULL;
    if (!out)
        return NULL;
    if (g->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        /* Reduce one broadcast dim at a time, keeping it as size 1. */
        kd_tensor *cur = src;
        int64_t cur_shape[KD_MAX_DIMS];
        int nd = g->ndim;
        memcpy(cur_shape, g->shape, sizeof cur_shape);
        for (int i = 0; i < nd; i++) {
            int io = i - (nd - ndim);
            int64_t want = io >= 0 ? shape[io] : 1;
            if (cur_shape[i] == want)
                continue;
            int64_t outer = kd_shape_numel(i, cur_shape);
            int64_t inner = kd_shape_numel(nd - i - 1, cur_shape + i + 1);
            int64_t reduce = cur_shape[i];
            cur_shape[i] = 1;
            kd_tensor *next = kd_tensor_empty(g->dtype, KD_CUDA, nd, cur_shape);
            if (!next || kd_cuda_reduce_sum(next, cur, outer, reduce, inner, 1.0) != KD_OK)
                return NULL;
            cur = next;
        }
        if (kd_cuda_memcpy(kd_tensor_data(out), kd_tensor_data(cur),
                           (size_t)kd_tensor_numel(out) * kd_dtype_size(out->dtype),
                           KD_COPY_D2D) != KD_OK)
            return NULL;
        return out;
#else
        kd_error(KD_ERR_UNSUPPORTED, "sum_to_shape: this build has no CUDA");
        return NULL;
#endif
    }
    int64_t ostride[KD_MAX_DIMS];
    kd_broadcast_strides(out, g->ndim, g->shape, ostride);
    int64_t n = kd_tensor_numel(src), idx[KD_MAX_DIMS] = {0};
    int nd = g->ndim;
    if (g->dtype == KD_F32) {
        const float *s = kd_tensor_data(src);
        float *o = kd_tensor_data(out);
        for (int64_t i = 0; i < n; i++) {
            int64_t off = 0;
            for (int d = 0; d < nd; d++)
                off += idx[d] * ostride[d];
            o[off] += s[i];
            for (int d = nd - 1; d >= 0 && ++idx[d] == g->shape[d]; d--)
                idx[d] = 0;
        }
    } else if (g->dtype == KD_F64) {
        const double *s = kd_tensor_data(src);
        double *o = kd_tensor_data(out);
        for (int64_t i = 0; i < n; i++) {
            int64_t off = 0;
            for (int d = 0; d < nd; d++)
                off += idx[d] * ostride[d];
            o[off] += s[i];
            for (int d = nd - 1; d >= 0 && ++idx[d] == g->shape[d]; d--)
                idx[d] = 0;
        }
    } else {
        kd_error(KD_ERR_UNSUPPORTED, "sum_to_shape: dtype %s",
                 kd_dtype_name(g->dtype));
        return NULL;
    }
    return out;
}
