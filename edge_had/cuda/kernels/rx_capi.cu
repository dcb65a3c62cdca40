// C ABI wrapper around rx_kernels.cu: the small shared library libedge_had_rx (CMakeLists.txt).
// Declarations and semantics: edge_had_rx.h. Launch geometry and the automatic split / chunk
// choices are the same as edge_had/cuda/rx_kernels.py (score_splits, cov_chunk).

#include <cuda_runtime.h>

#include "edge_had_rx.h"
#include "rx_kernels.cu"

namespace {

constexpr int kMaxFp32Chunk = 256;  // bounds the FP32 partial sums (rx_kernels.cu)

int ceil_div(long long a, long long b) { return (int)((a + b - 1) / b); }

// The runtime is linked statically: its last error can only come from an earlier call of this
// library, which returned it then (a failed cudaMemsetAsync, say). Cleared before a launch, so that
// the cudaGetLastError after it is the launch's own status. (A sticky error - the context broken
// by an illegal address, say - is returned by every call after it, as by any CUDA call.)
void forget_reported_error() { (void)cudaGetLastError(); }

// The device's multiprocessor count, 1 if it cannot be read (the launch after says why, if it
// fails: the failed query's error is cleared, not left to pass for the launch's).
int multiprocessors() {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return count > 0 ? count : 1;
}

int score_splits(int n, int k, int sms) {
    const int row_tiles = ceil_div(n, EH_TILE), col_tiles = ceil_div(k, EH_TILE);
    int splits = ceil_div(2LL * sms, row_tiles);
    if (splits < 1) splits = 1;
    return splits < col_tiles ? splits : col_tiles;
}

int cov_chunk(int n, int bands, int sms, bool fp32) {
    const int tiles = ceil_div(bands, EH_TILE);
    const int pairs = tiles * (tiles + 1) / 2;
    int chunks = ceil_div(2LL * sms, pairs);
    if (chunks < 1) chunks = 1;
    int chunk = ceil_div(ceil_div(n, chunks), EH_SLICE) * EH_SLICE;
    if (chunk < 64) chunk = 64;
    if (fp32 && chunk > kMaxFp32Chunk) chunk = kMaxFp32Chunk;
    return chunk;
}

}  // namespace

extern "C" {

int edge_had_rx_abi_version(void) { return EDGE_HAD_RX_ABI_VERSION; }

int edge_had_rx_score(const void* x, int x_type, long long ldx, const float* mean_hi,
                      const float* mean_lo, const float* w, int ldw, float* scores, int n, int bands,
                      int k, int lower, int splits, void* stream) {
    if (n < 0 || bands < 1 || k < 1 || ldx < bands || ldw < bands) return cudaErrorInvalidValue;
    if (x_type != EDGE_HAD_RX_FLOAT32 && x_type != EDGE_HAD_RX_FLOAT16) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!x || !mean_hi || !w || !scores) return cudaErrorInvalidValue;
    forget_reported_error();
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int col_tiles = ceil_div(k, EH_TILE);
    if (splits <= 0) splits = score_splits(n, k, multiprocessors());
    if (splits > col_tiles) splits = col_tiles;
    if (splits > 1) {
        const cudaError_t status = cudaMemsetAsync(scores, 0, sizeof(float) * (size_t)n, s);
        if (status != cudaSuccess) return status;
    }
    const dim3 grid(ceil_div(n, EH_TILE), splits), block(EH_THREADS);
    if (x_type == EDGE_HAD_RX_FLOAT16)
        rx_score_f16<<<grid, block, 0, s>>>(static_cast<const unsigned short*>(x), ldx, mean_hi,
                                            mean_lo, w, ldw, scores, n, bands, k, lower);
    else
        rx_score_f32<<<grid, block, 0, s>>>(static_cast<const float*>(x), ldx, mean_hi, mean_lo,
                                            w, ldw, scores, n, bands, k, lower);
    return cudaGetLastError();
}

int edge_had_rx_cov(const void* x, int x_type, long long ldx, const unsigned char* valid,
                    const double* shift, int n, int bands, int chunk, int accumulate_fp32,
                    double* s1, double* s2, void* stream) {
    if (n < 0 || bands < 1 || ldx < bands) return cudaErrorInvalidValue;
    if (x_type != EDGE_HAD_RX_FLOAT32 && x_type != EDGE_HAD_RX_FLOAT16) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    if (!x || !shift || !s1 || !s2) return cudaErrorInvalidValue;
    forget_reported_error();
    const bool fp32 = accumulate_fp32 != 0;
    if (chunk <= 0) chunk = cov_chunk(n, bands, multiprocessors(), fp32);
    if (fp32 && chunk > kMaxFp32Chunk) return cudaErrorInvalidValue;  // the FP32 sums' error bound
    const int tiles = ceil_div(bands, EH_TILE);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    // gridDim.y counts the pixel chunks and holds at most 65535: more pixels take several
    // launches into the same sums
    const long long per_launch = static_cast<long long>(chunk) * 65535;
    for (long long start = 0; start < n; start += per_launch) {
        const int count = static_cast<int>(n - start < per_launch ? n - start : per_launch);
        const dim3 grid(tiles * (tiles + 1) / 2, ceil_div(count, chunk)), block(EH_THREADS);
        const unsigned char* v = valid ? valid + start : nullptr;
        if (x_type == EDGE_HAD_RX_FLOAT16) {
            const unsigned short* h = static_cast<const unsigned short*>(x) + start * ldx;
            if (fp32)
                rx_cov_f16_acc32<<<grid, block, 0, s>>>(h, ldx, v, shift, count, bands, chunk, s1, s2);
            else
                rx_cov_f16_acc64<<<grid, block, 0, s>>>(h, ldx, v, shift, count, bands, chunk, s1, s2);
        } else {
            const float* f = static_cast<const float*>(x) + start * ldx;
            if (fp32)
                rx_cov_f32_acc32<<<grid, block, 0, s>>>(f, ldx, v, shift, count, bands, chunk, s1, s2);
            else
                rx_cov_f32_acc64<<<grid, block, 0, s>>>(f, ldx, v, shift, count, bands, chunk, s1, s2);
        }
        const cudaError_t error = cudaGetLastError();
        if (error != cudaSuccess) return error;
    }
    return cudaSuccess;
}

const char* edge_had_rx_error_string(int code) {
    return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // extern "C"
