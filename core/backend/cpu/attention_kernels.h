/* The typed attention kernels, included by attention.c once per dtype with
 * T (float or double) and FN(name) (name_f32 or name_f64) defined. */

/* p holds scores for all rows; adds bias, then softmax per row. */
static void FN(attn_softmax)(T *p, const T *bias, const int64_t *bst, const kd_attn_dims *ad)
{
    int64_t rows = ad->b * ad->l, s = ad->s;
#pragma omp parallel for if (rows * s > PAR_MIN) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        T *pr = p + row * s;
        if (bias) {
            const T *br = bias + bias_row_offset(ad, bst, row / ad->l, row % ad->l);
            int64_t cs = bst[ad->nbatch + 1];
            for (int64_t j = 0; j < s; j++)
                pr[j] += br[j * cs];
        }
        FN(kd_row_softmax)(pr, pr, s);
    }
}

/* dp (holding dP) becomes dS = P (dP - rowsum(dP P)). */
static void FN(attn_softmax_backward)(T *dp, const T *p, int64_t rows, int64_t s)
{
#pragma omp parallel for if (rows * s > PAR_MIN) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        T *dr = dp + row * s;
        const T *pr = p + row * s;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < s; j++)
            dot += dr[j] * pr[j];
        T dt = (T)dot;
#pragma omp simd
        for (int64_t j = 0; j < s; j++)
            dr[j] = pr[j] * (dr[j] - dt);
    }
}
