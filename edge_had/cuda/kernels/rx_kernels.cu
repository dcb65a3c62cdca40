// edge-had CUDA kernels: global RX (fused Mahalanobis scoring, covariance accumulation) and the
// local (dual-window) RX of one line of a line-scan stream.
//
// One source for every loader: nvcc (CMake builds a fatbin, per-architecture cubins and a C ABI
// library from it), pycuda (module_from_file on the fatbin, or pycuda.compiler at run time) and
// CuPy (RawModule on the fatbin, or NVRTC at run time). It therefore includes no header at all
// (NVRTC has no system headers) and every entry point is `extern "C"` with plain pointer, int and
// long long parameters. Launch every kernel with EH_THREADS (256) threads per block, 1-D, except
// lrx_score_f64: EH_LRX_THREADS (32).
//
// Scoring  (rx_score_f32 / rx_score_f16)
//   scores[i] = || W (x_i - mean) ||^2 for the n pixels x_i (rows of X, n x bands, row stride ldx
//   elements, float32 or IEEE float16 given as its 16-bit pattern), mean = mean_hi + mean_lo (two
//   float32 vectors of bands: the float64 mean split, hi = float(mean), lo = float(mean - hi);
//   mean_lo may be NULL, read as zeros) and the whitener W (k x bands, float32, row stride ldw),
//   with W^T W = inv(cov). One kernel does the
//   centring, the GEMM and the row norm: a block owns 64 pixels and walks the k outputs in tiles of
//   64; the 64 x 64 tile of W (x - mean) lives only in registers (4 x 4 per thread), is squared
//   and summed into per-pixel partial norms, and never reaches global memory. Bands are consumed
//   16 at a time through shared memory with a register prefetch of the next slice. Arithmetic is
//   FP32 (products and accumulation, FMA); FP16 input is widened to FP32 on load.
//   `lower` != 0 promises that W is lower-triangular (the Cholesky whitener inv(L)): the band loop
//   of output tile [c, c+64) then stops at c+64, halving the work for k = bands.
//   Grid: (ceil(n / 64), splits) with 1 <= splits <= ceil(k / 64). splits == 1 writes scores;
//   splits > 1 spreads the output tiles over blockIdx.y (more blocks for small n) and atomically
//   ADDS each block's partial norm: the caller zeroes `scores` first (the order of those <= splits
//   FP32 additions is not fixed, so the last bits may differ from run to run).
//   Error: each score is a sum of k squares of dot products of length bands; with u = 2^-24 the
//   FP32 rounding error is below about (bands + k) u * sum_j (|W_j| |x - mean|)^2 (Higham's gamma
//   bound), i.e. a relative error near 1e-5 for 224 bands in the worst case and ~1e-6 typically.
//   Centring is (x - mean_hi) - mean_lo: x - mean_hi is exact for x within a factor 2 of the mean
//   (Sterbenz), so such a centred value is x - mean rounded once, an error of u |x - mean| (farther
//   out, two roundings: below 2 u |x - mean|, measured 1.95 u). A float32 mean alone errs by up
//   to u |mean| in every pixel alike: offset 5000 and condition 1e9 (224 bands, random basis)
//   made that 4.7e-4 of the largest score, against 1e-4 for the rest.
//
// Covariance accumulation  (rx_cov_{f32,f16}_acc{64,32})
//   For the n pixels (rows of X) with valid[i] != 0 (valid may be NULL: all pixels), and a shift
//   vector (bands, float64):  s1[a] += sum_i c_ia  and  s2[a * bands + b] += sum_i c_ia c_ib for
//   a <= b (the upper triangle, row-major bands x bands; entries below the diagonal are never
//   touched), where c_i = x_i - shift. Results are ADDED to s1 and s2 (float64, device memory), so
//   per-line sums can stay on the device; the host keeps n (the number of valid pixels).
//   Grid: (T (T + 1) / 2, ceil(n / chunk)) with T = ceil(bands / 64): blockIdx.x enumerates the
//   64 x 64 band tiles of the upper triangle, blockIdx.y a chunk of `chunk` consecutive pixels
//   (any chunk >= 1; multiples of 16 waste nothing). Each block sums its chunk in registers and
//   adds the result with one float64 atomicAdd per matrix entry.
//   acc64 (the default; use it): centring, products and sums in FP64. s1, s2 are then the float64
//   sums of the exact data to ~n 2^-53 relative, as good as the host's float64 `c.T @ c`. Needed
//   because real covariances have condition numbers near 1e9 (DESIGN.md): an FP32 sum perturbs
//   each entry by ~1e-7..1e-5 of its scale, which swamps the smallest eigenvalues. Costs FP64 FMAs:
//   fast on H100 (half the FP32 rate), slow on Jetson (Orin's FP64 rate is a small fraction of its
//   FP32 rate): ~n bands^2 / 2 of them per call.
//   acc32 (the fast option): centring on float(shift) and products in FP32; each block sums its
//   <= chunk pixels per entry sequentially in FP32, then adds that partial into the float64 result.
//   Error per entry <= gamma_chunk * sum_i |c_ia c_ib| + 2^-24 |c| per element from the centring,
//   gamma_m = m 2^-24 / (1 - m 2^-24) (~1.5e-5 for chunk 256; typically sqrt(chunk) 2^-24); the
//   sums are relative to float(shift), so the host corrects them to the float64 shift exactly
//   (edge_had.cuda.rx_kernels does). Use it where the covariance is regularised well above that
//   (e.g. K <= 32 reduced bands with loading 1e-6 trace / K is borderline: measure first).

//
// Local RX of one stream line  (lrx_put_f64, lrx_window_f64, lrx_score_f64)
//   The algorithm of edge_had.detectors.lrx / edge_had.stream.causal_local, in float64 like it:
//   the stream's hybrid detector keeps its last `slots` lines, projected on dims <= EH_LRX_MAX_DIMS
//   principal components, in a ring on the device (the line at absolute position p in slot
//   p % slots, p >= 0): y (slots x dims x width) and valid (slots x width, uint8).
//   Per pixel the features are F = 1 + dims + dims (dims + 1) / 2 values: [valid, y_a, y_a y_b for
//   a <= b] (row-major upper triangle), and a window's sums of them give its count, mean and
//   covariance (cov = sum(y y^T) / n - m m^T, exact enough in FP64).
//   lrx_put_f64      after lines are uploaded to consecutive slots: each line's features summed
//                    along it over the outer (c-outer..c+outer) and the guard (c-inner..c+inner)
//                    columns, clipped to the line, into box (slots x 2 x F x width). Grid
//                    (ceil(width/256), F, lines): blockIdx.z is the line, from the pointers given.
//   lrx_window_f64   the window sums of the line at `centre`: outer boxes of lines top..bottom
//                    (absolute positions the caller clipped to the lines that exist) minus guard
//                    boxes of lines max(top, centre-inner)..min(bottom, centre+inner), into sums
//                    (F x width). Grid (ceil(width/256), F).
//   lrx_score_f64    per pixel: windows with fewer than dims + 1 pixels use mean 0 and covariance
//                    diag(fallback) (the causal statistics in this basis); `load` is added to the
//                    diagonal; score = (y_c - m)^T C^-1 (y_c - m) by symmetric elimination without
//                    square roots (LDL^T on the packed upper triangle, d eliminated alongside). A
//                    pivot that numpy's test calls zero (edge_had.detectors.lrx: SINGULAR_PIVOT and
//                    PIVOT_ROUNDING against the largest diagonal entry), or a non-finite score,
//                    gives -1: the caller scores that line with numpy's pseudo-inverse, as
//                    edge_had.detectors.lrx does. Grid ceil(width/32)
//                    blocks of EH_LRX_THREADS (32): the per-pixel matrix lives in shared memory,
//                    one column per thread (no local memory: the build uses -warn-lmem-usage).
//   Error: the float64 sums and elimination of numpy in another order (~1e-12 relative).

#define EH_THREADS 256
#define EH_TILE 64
#define EH_SLICE 16
#define EH_PAD 4
#define EH_LRX_THREADS 32
#define EH_LRX_MAX_DIMS 16
#define EH_LRX_PAIRS (EH_LRX_MAX_DIMS * (EH_LRX_MAX_DIMS + 1) / 2)
#define EH_LRX_SINGULAR 1e-12                     // edge_had.detectors.lrx.SINGULAR_PIVOT
#define EH_LRX_PIVOT_ROUNDING (64 * 2.220446049250313e-16)  // ... PIVOT_ROUNDING

namespace edge_had_rx {

// ---- input conversion -------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float value) { return value; }

// IEEE binary16 bit pattern -> float32 (exact). No cuda_fp16.h, so NVRTC needs no include path.
__device__ __forceinline__ float to_float(unsigned short bits) {
#ifdef EDGE_HAD_HOST_EMULATION
    return eh_host_half_to_float(bits);
#else
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
    return value;
#endif
}

__device__ __forceinline__ int min_int(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ long long min_ll(long long a, long long b) { return a < b ? a : b; }

// ---- scoring ----------------------------------------------------------------------------------

// Element (row, band) of the pixels minus the mean, 0 outside them: (x - mean_hi) - mean_lo,
// rounded once where x is near the mean (see above).
template <typename In>
__device__ __forceinline__ float centred_element(const In* __restrict__ x, long long ldx,
                                                 long long row, int n, int band, int bands,
                                                 const float* __restrict__ mean_hi,
                                                 const float* __restrict__ mean_lo) {
    if (row >= n || band >= bands) return 0.f;
    const float difference = to_float(x[row * ldx + band]) - mean_hi[band];
    return mean_lo ? difference - mean_lo[band] : difference;
}

template <typename In>
__device__ __forceinline__ void score_block(const In* __restrict__ x, long long ldx,
                                            const float* __restrict__ mean_hi,
                                            const float* __restrict__ mean_lo,
                                            const float* __restrict__ w, int ldw,
                                            float* __restrict__ scores, int n, int bands, int k,
                                            int lower) {
    // xs[band][pixel]: centred pixels of this block, one 16-band slice, transposed;
    // ws[band][output]: the matching slice of 64 whitener rows, transposed.
    __shared__ __align__(16) float xs[EH_SLICE][EH_TILE + EH_PAD];
    __shared__ __align__(16) float ws[EH_SLICE][EH_TILE + EH_PAD];

    const int tid = threadIdx.x;
    const int tx = tid & 15;  // output columns tx*4 .. tx*4+3 of the tile
    const int ty = tid >> 4;  // pixels ty*4 .. ty*4+3 of the tile
    const long long row0 = (long long)blockIdx.x * EH_TILE;

    float norm[4] = {0.f, 0.f, 0.f, 0.f};

    for (int col0 = blockIdx.y * EH_TILE; col0 < k; col0 += gridDim.y * EH_TILE) {
        // Lower-triangular W: rows col0..col0+63 are zero beyond band col0+63.
        const int band_end = lower ? min_int(bands, col0 + EH_TILE) : bands;

        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

        // Each thread moves 4 elements of each tile per slice: element e = tid + 256 q is
        // (tile row e / 16, band e % 16), so 16 consecutive threads read 16 consecutive bands.
        float xr[4], wr[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int e = tid + q * EH_THREADS;
            const long long row = row0 + (e >> 4);
            const int col = col0 + (e >> 4);
            const int band = e & 15;
            xr[q] = centred_element(x, ldx, row, n, band, bands, mean_hi, mean_lo);
            wr[q] = (col < k && band < band_end) ? w[(long long)col * ldw + band] : 0.f;
        }

        for (int b0 = 0; b0 < band_end; b0 += EH_SLICE) {
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int e = tid + q * EH_THREADS;
                xs[e & 15][e >> 4] = xr[q];
                ws[e & 15][e >> 4] = wr[q];
            }
            __syncthreads();

            const int next = b0 + EH_SLICE;
            if (next < band_end) {  // prefetch the next slice while this one is used
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const int e = tid + q * EH_THREADS;
                    const long long row = row0 + (e >> 4);
                    const int col = col0 + (e >> 4);
                    const int band = next + (e & 15);
                    xr[q] = centred_element(x, ldx, row, n, band, bands, mean_hi, mean_lo);
                    wr[q] = (col < k && band < band_end) ? w[(long long)col * ldw + band] : 0.f;
                }
            }

#pragma unroll
            for (int s = 0; s < EH_SLICE; ++s) {
                float a[4], b[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) a[i] = xs[s][ty * 4 + i];
#pragma unroll
                for (int j = 0; j < 4; ++j) b[j] = ws[s][tx * 4 + j];
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
            __syncthreads();
        }

#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) norm[i] = fmaf(acc[i][j], acc[i][j], norm[i]);
    }

    // The 16 threads of one pixel row are 16 consecutive lanes (tid = ty * 16 + tx).
#pragma unroll
    for (int offset = 8; offset > 0; offset >>= 1)
#pragma unroll
        for (int i = 0; i < 4; ++i) norm[i] += __shfl_xor_sync(0xffffffffu, norm[i], offset);

    if (tx == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const long long row = row0 + ty * 4 + i;
            if (row < n) {
                if (gridDim.y == 1)
                    scores[row] = norm[i];
                else
                    atomicAdd(&scores[row], norm[i]);
            }
        }
    }
}

// ---- covariance accumulation ------------------------------------------------------------------

template <typename Acc>
__device__ __forceinline__ Acc shift_value(const double* shift, int band, int bands) {
    return band < bands ? (Acc)shift[band] : (Acc)0;
}

template <typename In, typename Acc>
__device__ __forceinline__ Acc centred(const In* __restrict__ x, long long ldx,
                                       const unsigned char* __restrict__ valid, long long pixel,
                                       long long pixel_end, int band, int bands, Acc shift) {
    if (pixel >= pixel_end || band >= bands) return (Acc)0;
    if (valid != 0 && valid[pixel] == 0) return (Acc)0;
    return (Acc)to_float(x[pixel * ldx + band]) - shift;
}

template <typename In, typename Acc>
__device__ __forceinline__ void cov_block(const In* __restrict__ x, long long ldx,
                                          const unsigned char* __restrict__ valid,
                                          const double* __restrict__ shift, int n, int bands,
                                          int chunk, double* __restrict__ s1,
                                          double* __restrict__ s2) {
    // as[pixel][band], bs[pixel][band]: one 16-pixel slice of the two 64-band tiles.
    __shared__ __align__(16) Acc as[EH_SLICE][EH_TILE];
    __shared__ __align__(16) Acc bs[EH_SLICE][EH_TILE];

    // blockIdx.x -> (ti, tj), ti <= tj, enumerating the upper triangle of band tiles row by row.
    const int tiles = (bands + EH_TILE - 1) / EH_TILE;
    int pair = blockIdx.x, ti = 0;
    while (pair >= tiles - ti) {
        pair -= tiles - ti;
        ++ti;
    }
    const int tj = ti + pair;
    const int a0 = ti * EH_TILE, b0 = tj * EH_TILE;

    const long long pixel0 = (long long)blockIdx.y * chunk;
    const long long pixel_end = min_ll((long long)n, pixel0 + chunk);

    const int tid = threadIdx.x;
    const int tx = tid & 15;  // tile columns (bands b0 + tx*4 ..)
    const int ty = tid >> 4;  // tile rows (bands a0 + ty*4 ..)
    // Loads: element e = tid + 256 q is (pixel e / 64, band e % 64): a thread always loads band
    // tid % 64 (coalesced: 64 consecutive bands of one pixel per 64 threads), pixels tid/64 + 4q.
    const int load_band = tid & 63;
    const int load_pixel = tid >> 6;
    const Acc shift_a = shift_value<Acc>(shift, a0 + load_band, bands);
    const Acc shift_b = shift_value<Acc>(shift, b0 + load_band, bands);

    Acc acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = (Acc)0;
    Acc sum_a = (Acc)0;  // s1 of band a0 + load_band over this thread's pixels (diagonal tiles)

    Acc ar[4], br[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const long long pixel = pixel0 + load_pixel + 4 * q;
        ar[q] = centred<In, Acc>(x, ldx, valid, pixel, pixel_end, a0 + load_band, bands, shift_a);
        br[q] = centred<In, Acc>(x, ldx, valid, pixel, pixel_end, b0 + load_band, bands, shift_b);
    }

    for (long long p = pixel0; p < pixel_end; p += EH_SLICE) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            as[load_pixel + 4 * q][load_band] = ar[q];
            bs[load_pixel + 4 * q][load_band] = br[q];
            sum_a += ar[q];
        }
        __syncthreads();

        const long long next = p + EH_SLICE;
        if (next < pixel_end) {  // prefetch the next slice while this one is used
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const long long pixel = next + load_pixel + 4 * q;
                ar[q] = centred<In, Acc>(x, ldx, valid, pixel, pixel_end, a0 + load_band, bands,
                                         shift_a);
                br[q] = centred<In, Acc>(x, ldx, valid, pixel, pixel_end, b0 + load_band, bands,
                                         shift_b);
            }
        }

#pragma unroll
        for (int s = 0; s < EH_SLICE; ++s) {
            Acc a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = as[s][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = bs[s][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];  // contracted to FMA
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int a = a0 + ty * 4 + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int b = b0 + tx * 4 + j;
            if (a < bands && b < bands && a <= b)
                atomicAdd(&s2[(long long)a * bands + b], (double)acc[i][j]);
        }
    }
    if (ti == tj && a0 + load_band < bands) atomicAdd(&s1[a0 + load_band], (double)sum_a);
}


// ---- local RX of one line ---------------------------------------------------------------------

// Index of entry (a, b), a <= b, of a dims x dims symmetric matrix packed row by row (upper).
__device__ __forceinline__ int packed(int a, int b, int dims) { return a * dims - a * (a - 1) / 2 + (b - a); }

// Feature f of pixel col: 0 -> valid, 1..dims -> y_{f-1}, then the pairs y_a y_b (a <= b).
__device__ __forceinline__ double lrx_feature(const double* __restrict__ y,
                                              const unsigned char* __restrict__ valid, int width,
                                              int dims, int f, int col) {
    if (valid[col] == 0) return 0.0;  // the caller zeroes y there too; an invalid pixel adds nothing
    if (f == 0) return 1.0;
    if (f <= dims) return y[(long long)(f - 1) * width + col];
    int pair = f - 1 - dims, a = 0;
    while (pair >= dims - a) {
        pair -= dims - a;
        ++a;
    }
    return y[(long long)a * width + col] * y[(long long)(a + pair) * width + col];
}

__device__ __forceinline__ void lrx_put_block(const double* __restrict__ y,
                                              const unsigned char* __restrict__ valid, int width,
                                              int dims, int inner, int outer,
                                              double* __restrict__ box) {
    const int c = blockIdx.x * EH_THREADS + threadIdx.x;
    const int f = blockIdx.y;
    if (c >= width) return;
    const int features = 1 + dims + dims * (dims + 1) / 2;
    y += (long long)blockIdx.z * dims * width;  // line z of this launch
    valid += (long long)blockIdx.z * width;
    box += (long long)blockIdx.z * 2 * features * width;
    double outer_sum = 0.0, inner_sum = 0.0;
    const int c0 = c - outer < 0 ? 0 : c - outer;
    const int c1 = c + outer >= width ? width - 1 : c + outer;
    for (int col = c0; col <= c1; ++col) {
        const double value = lrx_feature(y, valid, width, dims, f, col);
        outer_sum += value;
        if (col >= c - inner && col <= c + inner) inner_sum += value;
    }
    box[(long long)f * width + c] = outer_sum;
    box[((long long)features + f) * width + c] = inner_sum;
}

__device__ __forceinline__ void lrx_window_block(const double* __restrict__ box, int slots,
                                                 int width, int features, long long centre,
                                                 long long top, long long bottom, int inner,
                                                 double* __restrict__ sums) {
    const int c = blockIdx.x * EH_THREADS + threadIdx.x;
    const int f = blockIdx.y;
    if (c >= width) return;
    const long long line = 2LL * features * width;  // one slot of box
    double total = 0.0;
    for (long long p = top; p <= bottom; ++p)
        total += box[(p % slots) * line + (long long)f * width + c];
    const long long g0 = centre - inner > top ? centre - inner : top;
    const long long g1 = centre + inner < bottom ? centre + inner : bottom;
    for (long long p = g0; p <= g1; ++p)
        total -= box[(p % slots) * line + ((long long)features + f) * width + c];
    sums[(long long)f * width + c] = total;
}

__device__ __forceinline__ void lrx_score_block(const double* __restrict__ sums,
                                                const double* __restrict__ y, int width, int dims,
                                                const double* __restrict__ fallback, double load,
                                                double* __restrict__ scores) {
    __shared__ double cov[EH_LRX_PAIRS][EH_LRX_THREADS];  // C, then its elimination
    __shared__ double d[EH_LRX_MAX_DIMS][EH_LRX_THREADS];
    __shared__ double means[EH_LRX_MAX_DIMS][EH_LRX_THREADS];

    const int t = threadIdx.x;
    const int c = blockIdx.x * EH_LRX_THREADS + t;
    if (c >= width) return;  // no barrier below: each thread owns its column of the shared arrays
    if (dims < 1 || dims > EH_LRX_MAX_DIMS) {  // beyond the shared arrays: hand the line back
        scores[c] = -1.0;
        return;
    }
    const double count = sums[c];
    const bool enough = count >= dims + 1;
    const double n = enough ? count : 1.0;
    for (int a = 0; a < dims; ++a) {
        const double mean = enough ? sums[(long long)(1 + a) * width + c] / n : 0.0;
        d[a][t] = y[(long long)a * width + c] - mean;
        means[a][t] = mean;
    }
    int e = 0;
    for (int a = 0; a < dims; ++a)
        for (int b = a; b < dims; ++b, ++e)
            cov[e][t] = enough ? sums[(long long)(1 + dims + e) * width + c] / n - means[a][t] * means[b][t]
                               : (a == b ? fallback[a] : 0.0);
    double largest = 0.0;  // diagonal entry (numpy's max; a NaN pivot is caught below either way)
    for (int a = 0; a < dims; ++a) {
        const int k = packed(a, a, dims);
        cov[k][t] += load;
        largest = a == 0 ? cov[k][t] : fmax(largest, cov[k][t]);
    }
    double score = 0.0;
    double smallest = 1.0;  // of the pivots so far over `largest`
    bool singular = false;
    for (int k = 0; k < dims; ++k) {
        const double pivot = cov[packed(k, k, dims)][t];
        const double relative = pivot / largest;
        if (!(relative > EH_LRX_SINGULAR && relative * smallest > EH_LRX_PIVOT_ROUNDING)) {  // also NaN
            singular = true;
            break;
        }
        smallest = fmin(smallest, relative);
        const double dk = d[k][t];
        score += dk * (dk / pivot);
        for (int i = k + 1; i < dims; ++i) {
            const double factor = cov[packed(k, i, dims)][t] / pivot;
            d[i][t] -= factor * dk;
            for (int j = i; j < dims; ++j) cov[packed(i, j, dims)][t] -= factor * cov[packed(k, j, dims)][t];
        }
    }
    scores[c] = singular || !(score - score == 0.0) ? -1.0 : score;  // -1: singular or not finite
}

}  // namespace edge_had_rx

// ---- entry points -----------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(EH_THREADS)
    rx_score_f32(const float* __restrict__ x, long long ldx, const float* __restrict__ mean_hi,
                 const float* __restrict__ mean_lo, const float* __restrict__ w, int ldw,
                 float* __restrict__ scores, int n, int bands, int k, int lower) {
    edge_had_rx::score_block<float>(x, ldx, mean_hi, mean_lo, w, ldw, scores, n, bands, k, lower);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS)
    rx_score_f16(const unsigned short* __restrict__ x, long long ldx,
                 const float* __restrict__ mean_hi, const float* __restrict__ mean_lo,
                 const float* __restrict__ w, int ldw, float* __restrict__ scores, int n, int bands,
                 int k, int lower) {
    edge_had_rx::score_block<unsigned short>(x, ldx, mean_hi, mean_lo, w, ldw, scores, n, bands, k,
                                             lower);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS, 2)
    rx_cov_f32_acc64(const float* __restrict__ x, long long ldx,
                     const unsigned char* __restrict__ valid, const double* __restrict__ shift,
                     int n, int bands, int chunk, double* __restrict__ s1,
                     double* __restrict__ s2) {
    edge_had_rx::cov_block<float, double>(x, ldx, valid, shift, n, bands, chunk, s1, s2);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS, 2)
    rx_cov_f16_acc64(const unsigned short* __restrict__ x, long long ldx,
                     const unsigned char* __restrict__ valid, const double* __restrict__ shift,
                     int n, int bands, int chunk, double* __restrict__ s1,
                     double* __restrict__ s2) {
    edge_had_rx::cov_block<unsigned short, double>(x, ldx, valid, shift, n, bands, chunk, s1, s2);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS, 2)
    rx_cov_f32_acc32(const float* __restrict__ x, long long ldx,
                     const unsigned char* __restrict__ valid, const double* __restrict__ shift,
                     int n, int bands, int chunk, double* __restrict__ s1,
                     double* __restrict__ s2) {
    edge_had_rx::cov_block<float, float>(x, ldx, valid, shift, n, bands, chunk, s1, s2);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS, 2)
    rx_cov_f16_acc32(const unsigned short* __restrict__ x, long long ldx,
                     const unsigned char* __restrict__ valid, const double* __restrict__ shift,
                     int n, int bands, int chunk, double* __restrict__ s1,
                     double* __restrict__ s2) {
    edge_had_rx::cov_block<unsigned short, float>(x, ldx, valid, shift, n, bands, chunk, s1, s2);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS)
    lrx_put_f64(const double* __restrict__ y, const unsigned char* __restrict__ valid, int width,
                int dims, int inner, int outer, double* __restrict__ box) {
    edge_had_rx::lrx_put_block(y, valid, width, dims, inner, outer, box);
}

extern "C" __global__ void __launch_bounds__(EH_THREADS)
    lrx_window_f64(const double* __restrict__ box, int slots, int width, int features,
                   long long centre, long long top, long long bottom, int inner,
                   double* __restrict__ sums) {
    edge_had_rx::lrx_window_block(box, slots, width, features, centre, top, bottom, inner, sums);
}

extern "C" __global__ void __launch_bounds__(EH_LRX_THREADS)
    lrx_score_f64(const double* __restrict__ sums, const double* __restrict__ y, int width,
                  int dims, const double* __restrict__ fallback, double load,
                  double* __restrict__ scores) {
    edge_had_rx::lrx_score_block(sums, y, width, dims, fallback, load, scores);
}
