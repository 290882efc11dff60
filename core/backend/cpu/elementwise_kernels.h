/* The typed binary kernels, included by elementwise.c once per dtype with
 * T (float or double) and FN(name) (name_f32 or name_f64) defined. Each op
 * has its own loops, so that no loop decides the op per element and every
 * contiguous run vectorises. */

/* Equal shapes: one flat loop. */
static void FN(binary_same)(kd_binary_op op, T *restrict out, const T *restrict a,
                            const T *restrict b, int64_t n)
{
    switch (op) {
    case KD_BIN_ADD:
#pragma omp parallel for simd if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            out[i] = a[i] + b[i];
        break;
    case KD_BIN_SUB:
#pragma omp parallel for simd if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            out[i] = a[i] - b[i];
        break;
    case KD_BIN_MUL:
#pragma omp parallel for simd if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            out[i] = a[i] * b[i];
        break;
    case KD_BIN_DIV:
#pragma omp parallel for simd if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            out[i] = a[i] / b[i];
        break;
    }
}

/* Broadcast add: out contiguous with shape[ndim]; a and b read through
 * broadcast strides. The last dim is the inner loop; outer rows run in
 * parallel. */
static void FN(add_bcast)(T *out, const T *a, const int64_t *sa, const T *b,
                            const int64_t *sb, int ndim, const int64_t *shape)
{
    int64_t inner = ndim ? shape[ndim - 1] : 1;
    int64_t ia = ndim ? sa[ndim - 1] : 0, ib = ndim ? sb[ndim - 1] : 0;
    int64_t rows = kd_shape_numel(ndim - 1 > 0 ? ndim - 1 : 0, shape);
#pragma omp parallel for if (rows * inner > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oa, ob;
        bcast_row_offsets(r, ndim, shape, sa, sb, &oa, &ob);
        T *restrict o = out + r * inner;
        const T *restrict pa = a + oa, *restrict pb = b + ob;
        if (ia == 1 && ib == 1) {
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] + pb[j];
        } else if (ia == 1 && ib == 0) {
            T vb = pb[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] + vb;
        } else if (ia == 0 && ib == 1) {
            T va = pa[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = va + pb[j];
        } else {
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j * ia] + pb[j * ib];
        }
    }
}

/* Broadcast sub: out contiguous with shape[ndim]; a and b read through
 * broadcast strides. The last dim is the inner loop; outer rows run in
 * parallel. */
static void FN(sub_bcast)(T *out, const T *a, const int64_t *sa, const T *b,
                            const int64_t *sb, int ndim, const int64_t *shape)
{
    int64_t inner = ndim ? shape[ndim - 1] : 1;
    int64_t ia = ndim ? sa[ndim - 1] : 0, ib = ndim ? sb[ndim - 1] : 0;
    int64_t rows = kd_shape_numel(ndim - 1 > 0 ? ndim - 1 : 0, shape);
#pragma omp parallel for if (rows * inner > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oa, ob;
        bcast_row_offsets(r, ndim, shape, sa, sb, &oa, &ob);
        T *restrict o = out + r * inner;
        const T *restrict pa = a + oa, *restrict pb = b + ob;
        if (ia == 1 && ib == 1) {
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] - pb[j];
        } else if (ia == 1 && ib == 0) {
            T vb = pb[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] - vb;
        } else if (ia == 0 && ib == 1) {
            T va = pa[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = va - pb[j];
        } else {
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j * ia] - pb[j * ib];
        }
    }
}

/* Broadcast mul: out contiguous with shape[ndim]; a and b read through
 * broadcast strides. The last dim is the inner loop; outer rows run in
 * parallel. */
static void FN(mul_bcast)(T *out, const T *a, const int64_t *sa, const T *b,
                            const int64_t *sb, int ndim, const int64_t *shape)
{
    int64_t inner = ndim ? shape[ndim - 1] : 1;
    int64_t ia = ndim ? sa[ndim - 1] : 0, ib = ndim ? sb[ndim - 1] : 0;
    int64_t rows = kd_shape_numel(ndim - 1 > 0 ? ndim - 1 : 0, shape);
#pragma omp parallel for if (rows * inner > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oa, ob;
        bcast_row_offsets(r, ndim, shape, sa, sb, &oa, &ob);
        T *restrict o = out + r * inner;
        const T *restrict pa = a + oa, *restrict pb = b + ob;
        if (ia == 1 && ib == 1) {
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] * pb[j];
        } else if (ia == 1 && ib == 0) {
            T vb = pb[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] * vb;
        } else if (ia == 0 && ib == 1) {
            T va = pa[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = va * pb[j];
        } else {
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j * ia] * pb[j * ib];
        }
    }
}

/* Broadcast div: out contiguous with shape[ndim]; a and b read through
 * broadcast strides. The last dim is the inner loop; outer rows run in
 * parallel. */
static void FN(div_bcast)(T *out, const T *a, const int64_t *sa, const T *b,
                            const int64_t *sb, int ndim, const int64_t *shape)
{
    int64_t inner = ndim ? shape[ndim - 1] : 1;
    int64_t ia = ndim ? sa[ndim - 1] : 0, ib = ndim ? sb[ndim - 1] : 0;
    int64_t rows = kd_shape_numel(ndim - 1 > 0 ? ndim - 1 : 0, shape);
#pragma omp parallel for if (rows * inner > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oa, ob;
        bcast_row_offsets(r, ndim, shape, sa, sb, &oa, &ob);
        T *restrict o = out + r * inner;
        const T *restrict pa = a + oa, *restrict pb = b + ob;
        if (ia == 1 && ib == 1) {
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] / pb[j];
        } else if (ia == 1 && ib == 0) {
            T vb = pb[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j] / vb;
        } else if (ia == 0 && ib == 1) {
            T va = pa[0];
#pragma omp simd
            for (int64_t j = 0; j < inner; j++)
                o[j] = va / pb[j];
        } else {
            for (int64_t j = 0; j < inner; j++)
                o[j] = pa[j * ia] / pb[j * ib];
        }
    }
}

static void FN(binary_bcast)(kd_binary_op op, T *out, const T *a, const int64_t *sa,
                             const T *b, const int64_t *sb, int ndim, const int64_t *shape)
{
    switch (op) {
    case KD_BIN_ADD:
        FN(add_bcast)(out, a, sa, b, sb, ndim, shape);
        break;
    case KD_BIN_SUB:
        FN(sub_bcast)(out, a, sa, b, sb, ndim, shape);
        break;
    case KD_BIN_MUL:
        FN(mul_bcast)(out, a, sa, b, sb, ndim, shape);
        break;
    case KD_BIN_DIV:
        FN(div_bcast)(out, a, sa, b, sb, ndim, shape);
        break;
    }
}
