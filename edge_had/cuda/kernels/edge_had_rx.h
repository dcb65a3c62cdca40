/* C ABI of libedge_had_rx (built by the repository's CMakeLists.txt from rx_capi.cu).
 *
 * Every pointer is a device pointer of the calling process's current CUDA context (the runtime's
 * primary context: the one PyTorch, CuPy and edge_had.cuda.CudaDevice use too); `stream` is a
 * cudaStream_t (NULL: the legacy default stream). Calls only queue work: they return a cudaError_t
 * value (0 = cudaSuccess) for invalid arguments or a failed launch, and the results are ready
 * once the stream is synchronised; each call's status is its own (the library links the CUDA
 * runtime statically, and an error an earlier call returned is not returned again - except a
 * sticky one, e.g. an illegal address, which breaks the context for every later call). Semantics
 * and error bounds: rx_kernels.cu.
 *
 * ABI version 2: edge_had_rx_score takes the mean as two float32 vectors, hi + lo (version 1 took
 * one float32 mean, which cost up to 4.7e-4 of the largest score on badly conditioned data).
 */
#ifndef EDGE_HAD_RX_H
#define EDGE_HAD_RX_H

#ifdef __cplusplus
extern "C" {
#endif

#define EDGE_HAD_RX_ABI_VERSION 2

/* Element types of the pixels x. */
#define EDGE_HAD_RX_FLOAT32 0
#define EDGE_HAD_RX_FLOAT16 1

int edge_had_rx_abi_version(void);

/* scores[i] = || w (x_i - mean) ||^2 for i < n: x is n x bands (row stride ldx elements), mean =
 * mean_hi + mean_lo, bands floats each (a float64 mean m: hi = (float)m, lo = (float)(m - hi);
 * mean_lo may be NULL for a float32 mean), w is k x bands (row stride ldw floats); lower != 0
 * promises w is lower-triangular. splits <= 0 picks the column split from the device's
 * multiprocessor count; with splits > 1 the library zeroes scores first (cudaMemsetAsync on the
 * stream). */
int edge_had_rx_score(const void* x, int x_type, long long ldx, const float* mean_hi,
                      const float* mean_lo, const float* w, int ldw, float* scores, int n, int bands,
                      int k, int lower, int splits, void* stream);

/* s1[a] += sum_i c_ia and s2[a * bands + b] += sum_i c_ia c_ib (a <= b: upper triangle only) over
 * the n pixels whose valid[i] != 0 (valid may be NULL), c_i = x_i - shift (shift: bands doubles).
 * accumulate_fp32 == 0: FP64 arithmetic (use this); != 0: FP32 products and per-block FP32 sums
 * (see rx_kernels.cu for the bound; sums are then relative to (float)shift). chunk <= 0 picks the
 * pixels per block from the device's multiprocessor count; with FP32 sums a chunk above 256 is
 * cudaErrorInvalidValue (it would exceed the bound). */
int edge_had_rx_cov(const void* x, int x_type, long long ldx, const unsigned char* valid,
                    const double* shift, int n, int bands, int chunk, int accumulate_fp32,
                    double* s1, double* s2, void* stream);

/* cudaGetErrorString of a code returned above. */
const char* edge_had_rx_error_string(int code);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_HAD_RX_H */
