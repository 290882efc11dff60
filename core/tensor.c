/* Tensor headers, creation, copies and element access. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#ifdef KD_HAVE_CUDA
#include "backend/cuda/cuda.h"
#endif

int64_t kd_shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

void kd_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

static kd_tensor *tensor_header(kd_dtype dtype, kd_device device, int ndim,
                                const int64_t *shape)
{
    if ((unsigned)dtype >= KD_DTYPE_COUNT) {
        kd_error(KD_ERR_INVALID, "tensor: unknown dtype %d", (int)dtype);
        return NULL;
    }
    if (ndim < 0 || ndim > KD_MAX_DIMS) {
        kd_error(KD_ERR_INVALID, "tensor: %d dims (at most %d)", ndim,
                 KD_MAX_DIMS);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            kd_error(KD_ERR_INVALID, "tensor: negative size %lld in dim %d",
                     (long long)shape[i], i);
            return NULL;
        }
    }
    kd_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        kd_error(KD_ERR_NOMEM, "tensor: out of host memory");
        return NULL;
    }
    t->dtype = dtype;
    t->device = device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    kd_contiguous_strides(ndim, shape, t->stride);
    return t;
}

kd_tensor *kd_tensor_empty(kd_dtype dtype, kd_device device, int ndim,
                           const int64_t *shape)
{
    kd_tensor *t = tensor_header(dtype, device, ndim, shape);
    if (!t)
        return NULL;
    size_t nbytes = (size_t)kd_shape_numel(ndim, shape) * kd_dtype_size(dtype);
    if (kd_storage_new(device, nbytes, &t->storage) != KD_OK) {
        free(t);
        return NULL;
    }
    kd_scope_adopt_tensor(t);
    return t;
}

kd_tensor *kd_tensor_alias(const kd_tensor *base)
{
    kd_tensor *t = tensor_header(base->dtype, base->device, base->ndim,
                                 base->shape);
    if (!t)
        return NULL;
    memcpy(t->stride, base->stride, sizeof t->stride);
    t->offset = base->offset;
    t->storage = base->storage;
    kd_storage_retain(t->storage);
    kd_scope_adopt_tensor(t);
    return t;
}

kd_tensor *kd_tensor_full(kd_dtype dtype, kd_device device, int ndim,
                          const int64_t *shape, double value)
{
    kd_tensor *t = kd_tensor_empty(dtype, device, ndim, shape);
    if (t && kd_tensor_fill_(t, value) != KD_OK) {
        kd_tensor_free(t);
        return NULL;
    }
    return t;
}

kd_tensor *kd_tensor_zeros(kd_dtype dtype, kd_device device, int ndim,
                           const int64_t *shape)
{
    return kd_tensor_full(dtype, device, ndim, shape, 0.0);
}

kd_tensor *kd_tensor_from_data(kd_dtype dtype, int ndim, const int64_t *shape,
                               const void *data)
{
    kd_tensor *t = kd_tensor_empty(dtype, KD_CPU, ndim, shape);
    if (t)
        memcpy(t->storage->data, data, t->storage->nbytes);
    return t;
}

kd_tensor *kd_tensor_empty_like(const kd_tensor *t)
{
    return kd_tensor_empty(t->dtype, t->device, t->ndim, t->shape);
}

kd_tensor *kd_tensor_zeros_like(const kd_tensor *t)
{
    return kd_tensor_zeros(t->dtype, t->device, t->ndim, t->shape);
}

void kd_tensor_free(kd_tensor *t)
{
    if (!t || t->scope)
        return;
    if (t->grad_fn && t->grad_fn->output == t)
        t->grad_fn->output = NULL;
    kd_tensor_free(t->grad);
    kd_storage_release(t->storage);
    free(t);
}

int64_t kd_tensor_numel(const kd_tensor *t)
{
    return kd_shape_numel(t->ndim, t->shape);
}

bool kd_tensor_is_contiguous(const kd_tensor *t)
{
    if (kd_tensor_numel(t) == 0)
        return true; /* nothing to lay out */
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect)
            return false;
        expect *= t->shape[i];
    }
    return true;
}

bool kd_tensor_same_shape(const kd_tensor *a, const kd_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

void *kd_tensor_data(const kd_tensor *t)
{
    return (char *)t->storage->data + t->offset * (int64_t)kd_dtype_size(t->dtype);
}

const char *kd_dims_str(int ndim, const int64_t *shape, char *buf, int size)
{
    int used = snprintf(buf, (size_t)size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += snprintf(buf + used, (size_t)(size - used), "%s%lld",
                         i ? ", " : "", (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, (size_t)(size - used), "]");
    return buf;
}

const char *kd_shape_str(const kd_tensor *t, char *buf, int size)
{
    return kd_dims_str(t->ndim, t->shape, buf, size);
}

static double load_as_double(kd_dtype dtype, const char *p)
{
    switch (dtype) {
    case KD_F32: { float v; memcpy(&v, p, 4); return v; }
    case KD_F64: { double v; memcpy(&v, p, 8); return v; }
    case KD_F16: { uint16_t v; memcpy(&v, p, 2); return kd_f16_to_f32(v); }
    case KD_BF16: { uint16_t v; memcpy(&v, p, 2); return kd_bf16_to_f32(v); }
    case KD_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case KD_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case KD_U8: return (unsigned char)*p;
    default: return NAN;
    }
}

static int64_t load_as_i64(kd_dtype dtype, const char *p)
{
    switch (dtype) {
    case KD_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case KD_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case KD_U8: return (unsigned char)*p;
    default: return (int64_t)load_as_double(dtype, p);
    }
}

static void store_double(kd_dtype dtype, char *p, double v)
{
    switch (dtype) {
    case KD_F32: { float f = (float)v; memcpy(p, &f, 4); break; }
    case KD_F64: memcpy(p, &v, 8); break;
    case KD_F16: { uint16_t h = kd_f32_to_f16((float)v); memcpy(p, &h, 2); break; }
    case KD_BF16: { uint16_t h = kd_f32_to_bf16((float)v); memcpy(p, &h, 2); break; }
    case KD_I32: { int32_t i = (int32_t)v; memcpy(p, &i, 4); break; }
    case KD_I64: { int64_t i = (int64_t)v; memcpy(p, &i, 8); break; }
    case KD_U8: *p = (char)(unsigned char)v; break;
    default: break;
    }
}

static void store_i64(kd_dtype dtype, char *p, int64_t v)
{
    switch (dtype) {
    case KD_I32: { int32_t i = (int32_t)v; memcpy(p, &i, 4); break; }
    case KD_I64: memcpy(p, &v, 8); break;
    case KD_U8: *p = (char)(unsigned char)v; break;
    default: store_double(dtype, p, (double)v); break;
    }
}

double kd_tensor_get(const kd_tensor *t, int64_t i)
{
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return load_as_double(t->dtype,
                          (const char *)t->storage->data +
                              off * (int64_t)kd_dtype_size(t->dtype));
}

/* Host copy of src into contiguous dst with element conversion; both CPU. */
static void cpu_copy_convert(kd_tensor *dst, const kd_tensor *src)
{
    int64_t n = kd_tensor_numel(src);
    size_t ssz = kd_dtype_size(src->dtype), dsz = kd_dtype_size(dst->dtype);
    const char *sbase = src->storage->data;
    char *d = kd_tensor_data(dst);
    if (src->dtype == dst->dtype && kd_tensor_is_contiguous(src)) {
        memcpy(d, kd_tensor_data(src), (size_t)n * ssz);
        return;
    }
    bool ints = !kd_dtype_is_float(src->dtype) && !kd_dtype_is_float(dst->dtype);
    int nd = src->ndim;
    int64_t idx[KD_MAX_DIMS] = {0};
    int64_t inner = nd ? src->shape[nd - 1] : 1;
    int64_t inner_stride = nd ? src->stride[nd - 1] : 0;
    for (int64_t done = 0; done < n; done += inner) {
        int64_t off = src->offset;
        for (int k = 0; k < nd - 1; k++)
            off += idx[k] * src->stride[k];
        const char *s = sbase + off * (int64_t)ssz;
        if (src->dtype == dst->dtype && ssz == 4) {
            const uint32_t *s4 = (const uint32_t *)(const void *)s;
            uint32_t *d4 = (uint32_t *)(void *)d;
            for (int64_t j = 0; j < inner; j++)
                d4[j] = s4[j * inner_stride];
        } else if (src->dtype == dst->dtype && ssz == 8) {
            const uint64_t *s8 = (const uint64_t *)(const void *)s;
            uint64_t *d8 = (uint64_t *)(void *)d;
            for (int64_t j = 0; j < inner; j++)
                d8[j] = s8[j * inner_stride];
        } else if (src->dtype == dst->dtype) {
            for (int64_t j = 0; j < inner; j++)
                memcpy(d + j * (int64_t)dsz, s + j * inner_stride * (int64_t)ssz,
                       ssz);
        } else if (ints) {
            for (int64_t j = 0; j < inner; j++)
                store_i64(dst->dtype, d + j * (int64_t)dsz,
                          load_as_i64(src->dtype, s + j * inner_stride * (int64_t)ssz));
        } else {
            for (int64_t j = 0; j < inner; j++)
                store_double(dst->dtype, d + j * (int64_t)dsz,
                             load_as_double(src->dtype,
                                            s + j * inner_stride * (int64_t)ssz));
        }
        d += inner * (int64_t)dsz;
        for (int k = nd - 2; k >= 0; k--) {
            if (++idx[k] < src->shape[k])
                break;
            idx[k] = 0;
        }
    }
}

kd_status kd_tensor_copy_(kd_tensor *dst, const kd_tensor *src)
{
    if (!kd_tensor_same_shape(dst, src)) {
        char a[96], b[96];
        return kd_error(KD_ERR_INVALID, "copy: shape %s into %s",
                        kd_shape_str(src, a, sizeof a), kd_shape_str(dst, b, sizeof b));
    }
    if (dst->device == KD_CPU && src->device == KD_CPU) {
        if (kd_tensor_is_contiguous(dst)) {
            cpu_copy_convert(dst, src);
            return KD_OK;
        }
        /* Strided destination: stage through a contiguous buffer. */
        kd_tensor *tmp = kd_tensor_empty(dst->dtype, KD_CPU, dst->ndim, dst->shape);
        if (!tmp)
            return KD_ERR_NOMEM;
        cpu_copy_convert(tmp, src);
        int64_t n = kd_tensor_numel(dst);
        size_t sz = kd_dtype_size(dst->dtype);
        for (int64_t i = 0; i < n; i++) {
            int64_t off = dst->offset, r = i;
            for (int d = dst->ndim - 1; d >= 0; d--) {
                off += (r % dst->shape[d]) * dst->stride[d];
                r /= dst->shape[d];
            }
            memcpy((char *)dst->storage->data + off * (int64_t)sz,
                   (char *)tmp->storage->data + i * (int64_t)sz, sz);
        }
        kd_tensor_free(tmp);
        return KD_OK;
    }
#ifdef KD_HAVE_CUDA
    kd_status st = KD_OK;
    if (!kd_tensor_is_contiguous(dst))
        return kd_error(KD_ERR_UNSUPPORTED,
                        "copy: a strided destination on cuda is not supported");
    if (dst->device == KD_CUDA && src->device == KD_CUDA) {
        if (src->dtype == dst->dtype)
            return kd_cuda_copy_strided(dst, src);
        kd_tensor *tmp = kd_tensor_empty(src->dtype, KD_CUDA, src->ndim, src->shape);
        if (!tmp)
            return KD_ERR_NOMEM;
        st = kd_cuda_copy_strided(tmp, src);
        if (st == KD_OK)
            st = kd_cuda_cast(dst, tmp);
        kd_tensor_free(tmp);
        return st;
    }
    /* Between host and device: convert and pack on the host side. */
    size_t nbytes = (size_t)kd_tensor_numel(dst) * kd_dtype_size(dst->dtype);
    if (dst->device == KD_CUDA) {
        kd_tensor *stage = kd_tensor_empty(dst->dtype, KD_CPU, dst->ndim, dst->shape);
        if (!stage)
            return KD_ERR_NOMEM;
        cpu_copy_convert(stage, src);
        st = kd_cuda_memcpy(kd_tensor_data(dst), kd_tensor_data(stage), nbytes,
                            KD_COPY_H2D);
        kd_tensor_free(stage);
        return st;
    }
    kd_tensor *packed = (kd_tensor *)src;
    if (!kd_tensor_is_contiguous(src)) {
        packed = kd_tensor_empty(src->dtype, KD_CUDA, src->ndim, src->shape);
        if (!packed)
            return KD_ERR_NOMEM;
        st = kd_cuda_copy_strided(packed, src);
    }
    kd_tensor *stage = st == KD_OK ? kd_tensor_empty(src->dtype, KD_CPU, src->ndim,
                                                     src->shape)
                                   : NULL;
    if (st == KD_OK && !stage)
        st = KD_ERR_NOMEM;
    if (st == KD_OK)
        st = kd_cuda_memcpy(kd_tensor_data(stage), kd_tensor_data(packed),
                            (size_t)kd_tensor_numel(src) * kd_dtype_size(src->dtype),
                            KD_COPY_D2H);
    if (st == KD_OK)
        cpu_copy_convert(dst, stage);
    kd_tensor_free(stage);
    if (packed != src)
        kd_tensor_free(packed);
    return st;
#else
    return kd_error(KD_ERR_UNSUPPORTED, "copy: this build has no CUDA");
#endif
}

kd_status kd_tensor_fill_(kd_tensor *t, double value)
{
    int64_t n = kd_tensor_numel(t);
    if (t->device == KD_CUDA) {
#ifdef KD_HAVE_CUDA
        if (!kd_tensor_is_contiguous(t))
            return kd_error(KD_ERR_UNSUPPORTED, "fill: strided cuda tensor");
        return kd_cuda_fill(t, value);
#else
        return kd_error(KD_ERR_UNSUPPORTED, "fill: this build has no CUDA");
#endif
    }
    if (!kd_tensor_is_contiguous(t)) {
        kd_tensor *tmp = kd_tensor_empty(t->dtype, KD_CPU, t->ndim, t->shape);
        if (!tmp)
            return KD_ERR_NOMEM;
        kd_status st = kd_tensor_fill_(tmp, value);
        if (st == KD_OK)
            st = kd_tensor_copy_(t, tmp);
        kd_tensor_free(tmp);
        return st;
    }
    char *p = kd_tensor_data(t);
    if (t->dtype == KD_F32) {
        float v = (float)value, *f = (float *)(void *)p;
        for (int64_t i = 0; i < n; i++)
            f[i] = v;
    } else if (t->dtype == KD_F64) {
        double *f = (double *)(void *)p;
        for (int64_t i = 0; i < n; i++)
            f[i] = value;
    } else {
        size_t sz = kd_dtype_size(t->dtype);
        if (n > 0)
            store_double(t->dtype, p, value);
        for (int64_t i = 1; i < n; i++)
            memcpy(p + i * (int64_t)sz, p, sz);
    }
    return KD_OK;
}

kd_tensor *kd_tensor_to_device(kd_tensor *t, kd_device device)
{
    if (!t)
        return NULL;
    kd_tensor *out = kd_tensor_empty(t->dtype, device, t->ndim, t->shape);
    if (out && kd_tensor_copy_(out, t) != KD_OK) {
        kd_tensor_free(out);
        return NULL;
    }
    return out;
}

void kd_tensor_set_requires_grad(kd_tensor *t, bool requires_grad)
{
    t->requires_grad = requires_grad;
}

void kd_tensor_zero_grad(kd_tensor *t)
{
    kd_tensor_free(t->grad);
    t->grad = NULL;
}
