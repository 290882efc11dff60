/* Row-major batched GEMM on cuBLAS. cuBLAS is column-major: a row-major
 * matrix read column-major is its transpose, so C = op(A) op(B) is computed
 * as C^T = op(B)^T op(A)^T by swapping the operands. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include <cublas_v2.h>

#include "cuda.h"

static pthread_once_t handle_once = PTHREAD_ONCE_INIT;
static cublasHandle_t handle;
static cublasStatus_t handle_status;

static void destroy_handle(void) { cublasDestroy(handle); }

static void create_handle(void)
{
    handle_status = cublasCreate(&handle);
    if (handle_status != CUBLAS_STATUS_SUCCESS)
        return;
    /* Default math keeps full f32 products (TF32 is opt-in), matching the
     * CPU path. */
    handle_status = cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH);
    if (handle_status == CUBLAS_STATUS_SUCCESS)
        atexit(destroy_handle);
}

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

kd_status kd_cuda_gemm(kd_dtype dtype, bool trans_a, bool trans_b, int64_t m,
                       int64_t n, int64_t k, double alpha, const void *a,
                       int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                       int64_t stride_b, double beta, void *c, int64_t ldc,
                       int64_t stride_c, int64_t batch)
{
    if (dtype != KD_F32 && dtype != KD_F64)
        return kd_error(KD_ERR_UNSUPPORTED, "cuda gemm: dtype %s (f32 or f64)",
                        kd_dtype_name(dtype));
    if (!fits_int(m) || !fits_int(n) || !fits_int(k) || !fits_int(lda) ||
        !fits_int(ldb) || !fits_int(ldc) || !fits_int(batch))
        return kd_error(KD_ERR_INVALID,
                        "cuda gemm: m %lld, n %lld, k %lld, batch %lld or a leading "
                        "dimension is negative or above INT_MAX",
                        (long long)m, (long long)n, (long long)k, (long long)batch);
    if (m == 0 || n == 0 || batch == 0)
        return KD_OK;
    pthread_once(&handle_once, create_handle);
    if (handle_status != CUBLAS_STATUS_SUCCESS)
        return kd_error(KD_ERR_DEVICE, "cuda: creating the cuBLAS handle: %s",
                        cublasGetStatusString(handle_status));
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (dtype == KD_F32) {
        float fa = (float)alpha, fb = (float)beta;
        st = cublasSgemmStridedBatched(handle, op_b, op_a, (int)n, (int)m, (int)k, &fa,
                                       b, (int)ldb, stride_b, a, (int)lda, stride_a,
                                       &fb, c, (int)ldc, stride_c, (int)batch);
    } else {
        st = cublasDgemmStridedBatched(handle, op_b, op_a, (int)n, (int)m, (int)k,
                                       &alpha, b, (int)ldb, stride_b, a, (int)lda,
                                       stride_a, &beta, c, (int)ldc, stride_c,
                                       (int)batch);
    }
    if (st != CUBLAS_STATUS_SUCCESS)
        return kd_error(KD_ERR_DEVICE,
                        "cuda: cublas%cgemmStridedBatched (m %lld, n %lld, k %lld, "
                        "batch %lld, lda %lld, ldb %lld, ldc %lld): %s",
                        dtype == KD_F32 ? 'S' : 'D', (long long)m, (long long)n,
                        (long long)k, (long long)batch, (long long)lda,
                        (long long)ldb, (long long)ldc, cublasGetStatusString(st));
    return KD_OK;
}
