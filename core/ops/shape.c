/* Shape ops. Views re-describe the input's storage (reshape, permute,
 * slice); copies move data (contiguous, concat, roll, pad). Each backward
 * maps the gradient back to the input's shape as a contiguous tensor. */
#include <string.h>

#include "../backend/cpu/cpu.h"
#include "../internal.h"

/* A view of x sharing its storage, owned by the current scope. */
static kd_tensor *make_view(kd_tensor *x, int ndim, const int64_t *shape,
                            const int64_t *stride, int64_t offset)
{
    kd_tensor *v = kd_tensor_alias(x);
    if (!v)
        return NULL;
    memset(v->shape, 0, sizeof v->shape);
    memset(v->stride, 0, sizeof v->stride);
    v->ndim = ndim;
    memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
    memcpy(v->stride, stride, (size_t)ndim * sizeof *stride);
    v->offset = offset;
    return v;
}

/* A copy of t's header on the stack that owns nothing and is never
 * recorded or freed: kernels and kd_grad_accumulate may read through it. */
static kd_tensor header_of(const kd_tensor *t)
{
    kd_tensor h = *t;
    h.grad = NULL;
    h.grad_fn = NULL;
    h.requires_grad = false;
    h.scope = NULL;
    return h;
}

/* t's header narrowed along dim to len elements from start. */
static kd_tensor region(const kd_tensor *t, int dim, int64_t start, int64_t len)
{
    kd_tensor r = header_of(t);
    r.offset += start * t->stride[dim];
    r.shape[dim] = len;
    return r;
}

static kd_status require_cpu(const char *op, const kd_tensor *x)
{
    if (x->device != KD_CPU)
        return kd_error(KD_ERR_UNSUPPORTED, "%s: only CPU tensors are supported", op);
    return KD_OK;
}

/* A new contiguous copy of the elements t describes (threads split the
 * rows on the CPU; elsewhere the generic copy). */
static kd_tensor *packed_copy(const kd_tensor *t)
{
    kd_tensor *c = kd_tensor_empty(t->dtype, t->device, t->ndim, t->shape);
    if (!c)
        return NULL;
    if (t->device == KD_CPU)
        kd_cpu_copy_strided(c, t);
    else if (kd_tensor_copy_(c, t) != KD_OK)
        return NULL;
    return c;
}

/* ------------------------------------------------------------ reshape */

/* Strides that let x be read as `shape` without moving data, if any:
 * x's dims are grouped into maximal runs that are contiguous with each
 * other, and every new dim must fall inside one run. */
static bool view_strides(const kd_tensor *x, int ndim, const int64_t *shape,
                         int64_t *stride)
{
    if (kd_tensor_numel(x) == 0) {
        kd_contiguous_strides(ndim, shape, stride);
        return true;
    }
    int o = x->ndim - 1, n = ndim - 1;
    for (;;) {
        while (o >= 0 && x->shape[o] == 1)
            o--;
        if (o < 0)
            break;
        int64_t run = x->shape[o], base = x->stride[o];
        int64_t last_stride = base, last_size = x->shape[o];
        int lo = o;
        while (lo > 0) {
            if (x->shape[lo - 1] == 1) {
                lo--;
                continue;
            }
            if (x->stride[lo - 1] != last_stride * last_size)
                break;
            last_stride = x->stride[lo - 1];
            last_size = x->shape[lo - 1];
            run *= last_size;
            lo--;
        }
        int64_t prod = 1;
        while (prod < run) {
            if (n < 0)
                return false;
            stride[n] = base * prod;
            prod *= shape[n--];
        }
        if (prod != run)
            return false;
        o = lo - 1;
    }
    for (; n >= 0; n--) /* what is left has size 1 */
        stride[n] = 1;
    return true;
}

static kd_status reshape_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    kd_tensor gx = header_of(g);
    gx.ndim = x->ndim;
    memcpy(gx.shape, x->shape, sizeof gx.shape);
    kd_contiguous_strides(x->ndim, x->shape, gx.stride);
    return kd_grad_accumulate(x, &gx);
}

kd_tensor *kd_reshape(kd_tensor *x, int ndim, const int64_t *shape)
{
    if (!x)
        return NULL;
    if (ndim < 0 || ndim > KD_MAX_DIMS) {
        kd_error(KD_ERR_INVALID, "reshape: %d dims (at most %d)", ndim, KD_MAX_DIMS);
        return NULL;
    }
    int64_t want[KD_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        want[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            kd_error(KD_ERR_INVALID, "reshape: size %lld in dim %d (only one -1 allowed)",
                     (long long)shape[i], i);
            return NULL;
        } else {
            known *= shape[i];
        }
    }
    int64_t numel = kd_tensor_numel(x);
    if (infer >= 0) {
        if (known == 0 || numel % known != 0) {
            char s[96];
            kd_error(KD_ERR_INVALID, "reshape: cannot infer dim %d of %s from %lld elements",
                     infer, kd_shape_str(x, s, sizeof s), (long long)known);
            return NULL;
        }
        want[infer] = numel / known;
        known *= want[infer];
    }
    if (known != numel) {
        char s[96];
        kd_error(KD_ERR_INVALID, "reshape: %s has %lld elements, the new shape %lld",
                 kd_shape_str(x, s, sizeof s), (long long)numel, (long long)known);
        return NULL;
    }
    int64_t stride[KD_MAX_DIMS];
    kd_tensor *base = x;
    if (!view_strides(x, ndim, want, stride)) {
        base = packed_copy(x);
        if (!base)
            return NULL;
        kd_contiguous_strides(ndim, want, stride);
    }
    kd_tensor *out = make_view(base, ndim, want, stride, base->offset);
    kd_node *node;
    if (!out || kd_record("reshape", reshape_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    return out;
}

kd_tensor *kd_flatten(kd_tensor *x, int start_dim, int end_dim)
{
    if (!x)
        return NULL;
    if (x->ndim == 0)
        return kd_reshape(x, 1, (int64_t[]){1});
    int s, e;
    if (kd_norm_dim("flatten", x->ndim, start_dim, &s) != KD_OK ||
        kd_norm_dim("flatten", x->ndim, end_dim, &e) != KD_OK)
        return NULL;
    if (s > e) {
        kd_error(KD_ERR_INVALID, "flatten: start_dim %d after end_dim %d", start_dim,
                 end_dim);
        return NULL;
    }
    int64_t shape[KD_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < s; i++)
        shape[nd++] = x->shape[i];
    shape[nd++] = kd_shape_numel(e - s + 1, x->shape + s);
    for (int i = e + 1; i < x->ndim; i++)
        shape[nd++] = x->shape[i];
    return kd_reshape(x, nd, shape);
}

kd_tensor *kd_unsqueeze(kd_tensor *x, int dim)
{
    if (!x)
        return NULL;
    int d;
    if (x->ndim == KD_MAX_DIMS) {
        kd_error(KD_ERR_INVALID, "unsqueeze: the tensor already has %d dims", KD_MAX_DIMS);
        return NULL;
    }
    if (kd_norm_dim("unsqueeze", x->ndim + 1, dim, &d) != KD_OK)
        return NULL;
    int64_t shape[KD_MAX_DIMS];
    for (int i = 0, j = 0; i <= x->ndim; i++)
        shape[i] = i == d ? 1 : x->shape[j++];
    return kd_reshape(x, x->ndim + 1, shape);
}

/* As torch: a dim whose size is not 1 is left alone. */
kd_tensor *kd_squeeze(kd_tensor *x, int dim)
{
    if (!x)
        return NULL;
    int d;
    if (kd_norm_dim("squeeze", x->ndim, dim, &d) != KD_OK)
        return NULL;
    int64_t shape[KD_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++)
        if (i != d || x->shape[i] != 1)
            shape[nd++] = x->shape[i];
    return kd_reshape(x, nd, shape);
}

/* ------------------------------------------------------------ permute */

static kd_status permute_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    kd_tensor gx = header_of(g);
    for (int i = 0; i < x->ndim; i++) { /* output dim i is input dim perm[i] */
        int d = (int)node->iarg[i];
        gx.shape[d] = g->shape[i];
        gx.stride[d] = g->stride[i];
    }
    kd_tensor *packed = packed_copy(&gx);
    return packed ? kd_grad_accumulate_take(x, packed) : KD_ERR_NOMEM;
}

kd_tensor *kd_permute(kd_tensor *x, const int *dims)
{
    if (!x)
        return NULL;
    int perm[KD_MAX_DIMS];
    bool seen[KD_MAX_DIMS] = {false};
    for (int i = 0; i < x->ndim; i++) {
        if (kd_norm_dim("permute", x->ndim, dims[i], &perm[i]) != KD_OK)
            return NULL;
        if (seen[perm[i]]) {
            kd_error(KD_ERR_INVALID, "permute: dim %d appears twice", dims[i]);
            return NULL;
        }
        seen[perm[i]] = true;
    }
    int64_t shape[KD_MAX_DIMS], stride[KD_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        shape[i] = x->shape[perm[i]];
        stride[i] = x->stride[perm[i]];
    }
    kd_tensor *out = make_view(x, x->ndim, shape, stride, x->offset);
    kd_node *node;
    if (!out || kd_record("permute", permute_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        for (int i = 0; i < x->ndim; i++)
            node->iarg[i] = perm[i];
    return out;
}

kd_tensor *kd_transpose(kd_tensor *x, int dim0, int dim1)
{
    if (!x)
        return NULL;
    int a, b, dims[KD_MAX_DIMS];
    if (kd_norm_dim("transpose", x->ndim, dim0, &a) != KD_OK ||
        kd_norm_dim("transpose", x->ndim, dim1, &b) != KD_OK)
        return NULL;
    for (int i = 0; i < x->ndim; i++)
        dims[i] = i == a ? b : (i == b ? a : i);
    return kd_permute(x, dims);
}

/* ------------------------------------------------------------ contiguous */

static kd_status pass_through_backward(kd_node *node, kd_tensor *g)
{
    return kd_grad_accumulate(node->inputs[0], g);
}

/* A contiguous input is returned itself (nothing to record). */
kd_tensor *kd_contiguous(kd_tensor *x)
{
    if (!x || kd_tensor_is_contiguous(x))
        return x;
    kd_tensor *out = packed_copy(x);
    kd_node *node;
    if (!out || kd_record("contiguous", pass_through_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    return out;
}

/* ------------------------------------------------------------ slice, split */

static kd_status slice_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    int dim = (int)node->iarg[0];
    int64_t start = node->iarg[1], step = node->iarg[2];
    if (require_cpu("slice backward", g) != KD_OK)
        return KD_ERR_UNSUPPORTED;
    kd_tensor *gx = kd_tensor_zeros_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    kd_tensor dst = region(gx, dim, start, g->shape[dim]);
    dst.stride[dim] *= step;
    kd_cpu_copy_strided(&dst, g);
    return kd_grad_accumulate_take(x, gx);
}

kd_tensor *kd_slice(kd_tensor *x, int dim, int64_t start, int64_t end, int64_t step)
{
    if (!x)
        return NULL;
    int d;
    if (kd_norm_dim("slice", x->ndim, dim, &d) != KD_OK)
        return NULL;
    if (x->ndim == 0) {
        kd_error(KD_ERR_INVALID, "slice: a 0-dim tensor has nothing to slice");
        return NULL;
    }
    if (step <= 0) {
        kd_error(KD_ERR_INVALID, "slice: step %lld (must be positive)", (long long)step);
        return NULL;
    }
    int64_t size = x->shape[d];
    if (start < 0)
        start += size;
    if (end < 0)
        end += size;
    start = start < 0 ? 0 : (start > size ? size : start);
    end = end < start ? start : (end > size ? size : end);
    int64_t len = (end - start + step - 1) / step;
    int64_t shape[KD_MAX_DIMS], stride[KD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    memcpy(stride, x->stride, sizeof stride);
    shape[d] = len;
    stride[d] *= step;
    kd_tensor *out = make_view(x, x->ndim, shape, stride, x->offset + start * x->stride[d]);
    kd_node *node;
    if (!out || kd_record("slice", slice_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node) {
        node->iarg[0] = d;
        node->iarg[1] = start;
        node->iarg[2] = step;
    }
    return out;
}

kd_status kd_split(kd_tensor *x, int dim, int n, const int64_t *sizes, kd_tensor **out)
{
    if (!x)
        return kd_error(KD_ERR_INVALID, "split: NULL tensor");
    int d;
    kd_status st = kd_norm_dim("split", x->ndim, dim, &d);
    if (st != KD_OK)
        return st;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return kd_error(KD_ERR_INVALID, "split: negative size %lld for part %d",
                            (long long)sizes[i], i);
        total += sizes[i];
    }
    if (n < 1 || x->ndim == 0 || total != x->shape[d]) {
        char s[96];
        return kd_error(KD_ERR_INVALID, "split: %d parts of %lld elements for dim %d of %s",
                        n, (long long)total, dim, kd_shape_str(x, s, sizeof s));
    }
    for (int64_t i = 0, start = 0; i < n; start += sizes[i++]) {
        out[i] = kd_slice(x, d, start, start + sizes[i], 1);
        if (!out[i])
            return kd_error_wrap(kd_last_status(), "split: part %d", (int)i);
    }
    return KD_OK;
}

/* ------------------------------------------------------------ concat */

static kd_status concat_backward(kd_node *node, kd_tensor *g)
{
    int dim = (int)node->iarg[0];
    int64_t start = 0;
    for (int i = 0; i < node->n_inputs; i++) {
        kd_tensor *x = node->inputs[i];
        kd_tensor part = region(g, dim, start, x->shape[dim]);
        start += x->shape[dim];
        if (!x->requires_grad)
            continue;
        kd_tensor *gx = packed_copy(&part);
        kd_status st = gx ? kd_grad_accumulate_take(x, gx) : KD_ERR_NOMEM;
        if (st != KD_OK)
            return st;
    }
    return KD_OK;
}

kd_tensor *kd_concat(int n, kd_tensor *const *xs, int dim)
{
    if (n < 1 || !xs) {
        kd_error(KD_ERR_INVALID, "concat: no tensors");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i])
            return NULL;
    kd_tensor *x0 = xs[0];
    int d;
    if (kd_norm_dim("concat", x0->ndim, dim, &d) != KD_OK || require_cpu("concat", x0) != KD_OK)
        return NULL;
    if (x0->ndim == 0) {
        kd_error(KD_ERR_INVALID, "concat: 0-dim tensors cannot be concatenated");
        return NULL;
    }
    int64_t shape[KD_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        kd_tensor *x = xs[i];
        bool ok = x->ndim == x0->ndim && x->dtype == x0->dtype && x->device == x0->device;
        for (int k = 0; ok && k < x->ndim; k++)
            ok = k == d || x->shape[k] == x0->shape[k];
        if (!ok) {
            char a[96], b[96];
            kd_error(KD_ERR_INVALID,
                     "concat: tensor %d is %s %s, tensor 0 is %s %s (dim %d may differ)", i,
                     kd_shape_str(x, a, sizeof a), kd_dtype_name(x->dtype),
                     kd_shape_str(x0, b, sizeof b), kd_dtype_name(x0->dtype), dim);
            return NULL;
        }
        shape[d] += x->shape[d];
    }
    kd_tensor *out = kd_tensor_empty(x0->dtype, x0->device, x0->ndim, shape);
    if (!out)
        return NULL;
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        kd_tensor part = region(out, d, start, xs[i]->shape[d]);
        kd_cpu_copy_strided(&part, xs[i]);
        start += xs[i]->shape[d];
    }
    kd_node *node;
    if (kd_record("concat", concat_backward, out, n, xs, &node) != KD_OK)
        return NULL;
    if (node)
        node->iarg[0] = d;
    return out;
}

/* ------------------------------------------------------------ roll */

static kd_status roll_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    int dims[KD_MAX_DIMS];
    int64_t shifts[KD_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        dims[i] = i;
        shifts[i] = -node->iarg[i];
    }
    kd_tensor *gx = kd_roll(g, x->ndim, shifts, dims);
    return gx ? kd_grad_accumulate_take(x, gx) : KD_ERR_NOMEM;
}

kd_tensor *kd_roll(kd_tensor *x, int n, const int64_t *shifts, const int *dims)
{
    if (!x)
        return NULL;
    if (require_cpu("roll", x) != KD_OK)
        return NULL;
    if (n < 1 || x->ndim == 0) {
        kd_error(KD_ERR_INVALID, "roll: needs at least one dim of a tensor with dims");
        return NULL;
    }
    int64_t shift[KD_MAX_DIMS] = {0}; /* per dim, in [0, size) */
    for (int i = 0; i < n; i++) {
        int d;
        if (kd_norm_dim("roll", x->ndim, dims[i], &d) != KD_OK)
            return NULL;
        int64_t size = x->shape[d];
        if (size > 0)
            shift[d] = ((shift[d] + shifts[i]) % size + size) % size;
    }
    kd_tensor *out = kd_tensor_empty_like(x);
    if (!out)
        return NULL;
    /* Along a shifted dim the output is two pieces: [s, L) from [0, L-s)
     * and [0, s) from [L-s, L). Copy every combination of pieces. */
    int rolled[KD_MAX_DIMS], nr = 0;
    for (int d = 0; d < x->ndim; d++)
        if (shift[d])
            rolled[nr++] = d;
    for (int combo = 0; combo < (1 << nr); combo++) {
        kd_tensor dst = *out, src = *x;
        for (int k = 0; k < nr; k++) {
            int d = rolled[k];
            int64_t s = shift[d], size = x->shape[d];
            if (combo >> k & 1) {
                dst = region(&dst, d, 0, s);
                src = region(&src, d, size - s, s);
            } else {
                dst = region(&dst, d, s, size - s);
                src = region(&src, d, 0, size - s);
            }
        }
        kd_cpu_copy_strided(&dst, &src);
    }
    kd_node *node;
    if (kd_record("roll", roll_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        for (int d = 0; d < x->ndim; d++)
            node->iarg[d] = shift[d];
    return out;
}

/* ------------------------------------------------------------ pad */

/* The parts of x and of the padded output that hold the same elements
 * (negative pads crop). */
static void pad_regions(const kd_tensor *x, const kd_tensor *out, const int64_t *before,
                        kd_tensor *xr, kd_tensor *outr)
{
    *xr = header_of(x);
    *outr = header_of(out);
    for (int d = 0; d < x->ndim; d++) {
        int64_t b = before[d], a = out->shape[d] - x->shape[d] - b;
        int64_t skip = b < 0 ? -b : 0;
        int64_t len = x->shape[d] - skip - (a < 0 ? -a : 0);
        if (len < 0)
            len = 0;
        *xr = region(xr, d, skip, len);
        *outr = region(outr, d, b > 0 ? b : 0, len);
    }
}

static kd_status pad_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    kd_tensor *gx = kd_tensor_zeros_like(x);
    if (!gx)
        return KD_ERR_NOMEM;
    kd_tensor gxr, gr;
    pad_regions(gx, g, node->iarg, &gxr, &gr);
    kd_cpu_copy_strided(&gxr, &gr);
    return kd_grad_accumulate_take(x, gx);
}

kd_tensor *kd_pad(kd_tensor *x, int npairs, const int64_t *pads, double value)
{
    if (!x)
        return NULL;
    if (require_cpu("pad", x) != KD_OK)
        return NULL;
    if (npairs < 0 || npairs > x->ndim) {
        kd_error(KD_ERR_INVALID, "pad: %d pairs for a tensor of %d dims", npairs, x->ndim);
        return NULL;
    }
    int64_t shape[KD_MAX_DIMS], before[KD_MAX_DIMS] = {0};
    memcpy(shape, x->shape, sizeof shape);
    for (int i = 0; i < npairs; i++) {
        int d = x->ndim - 1 - i;
        before[d] = pads[2 * i];
        shape[d] += pads[2 * i] + pads[2 * i + 1];
        if (shape[d] < 0) {
            char s[96];
            kd_error(KD_ERR_INVALID, "pad: pads (%lld, %lld) leave dim %d of %s negative",
                     (long long)pads[2 * i], (long long)pads[2 * i + 1], d,
                     kd_shape_str(x, s, sizeof s));
            return NULL;
        }
    }
    kd_tensor *out = kd_tensor_full(x->dtype, x->device, x->ndim, shape, value);
    if (!out)
        return NULL;
    kd_tensor xr, outr;
    pad_regions(x, out, before, &xr, &outr);
    kd_cpu_copy_strided(&outr, &xr);
    kd_node *node;
    if (kd_record("pad", pad_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    if (node)
        memcpy(node->iarg, before, sizeof before);
    return out;
}

/* ------------------------------------------------------------ expand */

static kd_status expand_backward(kd_node *node, kd_tensor *g)
{
    kd_tensor *x = node->inputs[0];
    kd_tensor *gx = kd_sum_to_shape(g, x->ndim, x->shape);
    return gx ? kd_grad_accumulate(x, gx) : kd_last_status();
}

kd_tensor *kd_expand(kd_tensor *x, int ndim, const int64_t *shape)
{
    if (!x)
        return NULL;
    char sx[96];
    if (ndim < x->ndim || ndim > KD_MAX_DIMS) {
        kd_error(KD_ERR_INVALID, "expand: %s to %d dims (from %d to %d)",
                 kd_shape_str(x, sx, sizeof sx), ndim, x->ndim, KD_MAX_DIMS);
        return NULL;
    }
    int64_t want[KD_MAX_DIMS], stride[KD_MAX_DIMS];
    int lead = ndim - x->ndim;
    for (int i = 0; i < ndim; i++) {
        int d = i - lead; /* x's dim, < 0 for a new one */
        int64_t size = shape[i];
        if (d >= 0 && size == -1)
            size = x->shape[d];
        if (size < 0 || (d >= 0 && x->shape[d] != 1 && x->shape[d] != size)) {
            kd_error(KD_ERR_INVALID, "expand: %s cannot be read as size %lld in dim %d",
                     kd_shape_str(x, sx, sizeof sx), (long long)shape[i], i);
            return NULL;
        }
        want[i] = size;
        stride[i] = d >= 0 && x->shape[d] == size ? x->stride[d] : 0;
    }
    kd_tensor *out = make_view(x, ndim, want, stride, x->offset);
    kd_node *node;
    if (!out || kd_record("expand", expand_backward, out, 1, &x, &node) != KD_OK)
        return NULL;
    return out;
}
