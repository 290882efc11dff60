/* The typed unary kernels, included by unary.c once per dtype with T
 * (float or double), FN(name) (name_f32 or name_f64), ERF and EXP_NEG
 * (erf, and exp of a number <= 0, of T) defined, and <tgmath.h> picking the float or double math function.
 * Each op has its own loop so the compiler vectorises each one: forward
 * y = F(x), backward gx = gy * dy/dx. lo and hi are the op's scalars (clamp's bounds, pow's
 * exponent, the scalar of add_scalar and mul_scalar). */

static inline T FN(gelu_tanh_grad)(T x)
{
    T t = tanh((T)GELU_K * (x + (T)GELU_C * x * x * x));
    return (T)0.5 * (1 + t) + (T)0.5 * x * (1 - t * t) * (T)GELU_K * (1 + 3 * (T)GELU_C * x * x);
}

static inline T FN(silu_grad)(T x)
{
    T s = 1 / (1 + exp(-x));
    return s * (1 + x * (1 - s));
}

static void FN(unary_forward)(kd_unary_op op, T *out, const T *in, int64_t n, T lo, T hi)
{
    switch (op) {
    case KD_UN_NEG:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = -x;
        }
        break;
    case KD_UN_EXP:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = exp(x);
        }
        break;
    case KD_UN_LOG:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = log(x);
        }
        break;
    case KD_UN_SQRT:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = sqrt(x);
        }
        break;
    case KD_UN_ABS:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = fabs(x);
        }
        break;
    case KD_UN_TANH:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = tanh(x);
        }
        break;
    case KD_UN_RELU:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x > 0 ? x : 0;
        }
        break;
    case KD_UN_RELU6:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x > 0 ? (x < 6 ? x : 6) : 0;
        }
        break;
    case KD_UN_GELU:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = (T)0.5 * x * (1 + ERF(x * (T)SQRT1_2));
        }
        break;
    case KD_UN_GELU_TANH:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = (T)0.5 * x * (1 + tanh((T)GELU_K * (x + (T)GELU_C * x * x * x)));
        }
        break;
    case KD_UN_SILU:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x / (1 + exp(-x));
        }
        break;
    case KD_UN_SIGMOID:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = 1 / (1 + exp(-x));
        }
        break;
    case KD_UN_HARDSIGMOID:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x <= -3 ? 0 : (x >= 3 ? 1 : x / 6 + (T)0.5);
        }
        break;
    case KD_UN_HARDSWISH:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x <= -3 ? 0 : (x >= 3 ? x : x * (x + 3) / 6);
        }
        break;
    case KD_UN_CLAMP:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x < lo ? lo : (x > hi ? hi : x);
        }
        break;
    case KD_UN_POW:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = pow(x, lo);
        }
        break;
    case KD_UN_ADD_SCALAR:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x + lo;
        }
        break;
    case KD_UN_MUL_SCALAR:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            out[i] = x * lo;
        }
        break;
    default:
        break;
    }
}

static void FN(unary_backward)(kd_unary_op op, T *gx, const T *gy, const T *in, const T *yv,
                               int64_t n, T lo, T hi)
{
    switch (op) {
    case KD_UN_NEG:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            gx[i] = gy[i] * (-1);
        break;
    case KD_UN_EXP:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T y = yv[i];
            gx[i] = gy[i] * (y);
        }
        break;
    case KD_UN_LOG:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * (1 / x);
        }
        break;
    case KD_UN_SQRT:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T y = yv[i];
            gx[i] = gy[i] * ((T)0.5 / y);
        }
        break;
    case KD_UN_ABS:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * ((T)((x > 0) - (x < 0)));
        }
        break;
    case KD_UN_TANH:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T y = yv[i];
            gx[i] = gy[i] * (1 - y * y);
        }
        break;
    case KD_UN_RELU:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * ((T)(x > 0));
        }
        break;
    case KD_UN_RELU6:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * ((T)(x > 0 && x < 6));
        }
        break;
    case KD_UN_GELU:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * ((T)0.5 * (1 + ERF(x * (T)SQRT1_2)) + x * (T)INV_SQRT_2PI * EXP_NEG((T)-0.5 * x * x));
        }
        break;
    case KD_UN_GELU_TANH:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * (FN(gelu_tanh_grad)(x));
        }
        break;
    case KD_UN_SILU:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * (FN(silu_grad)(x));
        }
        break;
    case KD_UN_SIGMOID:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T y = yv[i];
            gx[i] = gy[i] * (y * (1 - y));
        }
        break;
    case KD_UN_HARDSIGMOID:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * ((T)(x > -3 && x < 3) / 6);
        }
        break;
    case KD_UN_HARDSWISH:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * (x < -3 ? 0 : (x <= 3 ? (2 * x + 3) / 6 : 1));
        }
        break;
    case KD_UN_CLAMP:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * ((T)(x >= lo && x <= hi));
        }
        break;
    case KD_UN_POW:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            T x = in[i];
            gx[i] = gy[i] * (lo * pow(x, lo - 1));
        }
        break;
    case KD_UN_ADD_SCALAR:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            gx[i] = gy[i] * (1);
        break;
    case KD_UN_MUL_SCALAR:
#pragma omp parallel for if (n > 32768) schedule(static)
        for (int64_t i = 0; i < n; i++)
            gx[i] = gy[i] * (lo);
        break;
    default:
        break;
    }
}
