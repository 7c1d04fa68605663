// The small operations between the layers: residual adds, biases, scaling (LoRA's
// alpha/r, clipping), row gathers and scatters. One thread per element.
#include "common.cuh"

// y += x.
extern "C" __global__ void add_assign(float* __restrict__ y, const float* __restrict__ x, long long n) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) y[i] += x[i];
}

// y += a * x.
extern "C" __global__ void axpy(float* __restrict__ y, const float* __restrict__ x, float a, long long n) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) y[i] += a * x[i];
}

// x *= a.
extern "C" __global__ void scale(float* __restrict__ x, float a, long long n) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) x[i] *= a;
}

// Each row of y (rows x dim) += bias.
extern "C" __global__ void add_bias(float* __restrict__ y, const float* __restrict__ bias, long long rows, int dim) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < rows * dim) y[i] += bias[i % dim];
}

// out[j] = x[index[j]] for each of `rows` rows (dim wide): the embedding lookup, the LM
// head's counted rows. The indices are checked on the host before any launch.
extern "C" __global__ void gather_rows(float* __restrict__ out, const float* __restrict__ x,
	const unsigned* __restrict__ index, long long rows, int dim) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= rows * dim) return;
	const long long r = i / dim;
	out[i] = x[(long long)index[r] * dim + i % dim];
}

// dst[index[j]] = src[j]; the other rows of dst untouched (the indices distinct).
extern "C" __global__ void scatter_rows(float* __restrict__ dst, const float* __restrict__ src,
	const unsigned* __restrict__ index, long long rows, int dim) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= rows * dim) return;
	const long long r = i / dim;
	dst[(long long)index[r] * dim + i % dim] = src[i];
}

// dst[o * rows + j] += src[j * cols + o]: src ([rows x cols]) added transposed (LoRA's dB
// from its transpose). One thread per element of src; one rounding each.
extern "C" __global__ void add_transposed(float* __restrict__ dst, const float* __restrict__ src, long long rows,
	long long cols) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= rows * cols) return;
	const long long j = i / cols, o = i % cols;
	dst[o * rows + j] += src[i];
}

// out[i] = x[i] rounded to bf16, to nearest even (a NaN becomes the quiet 0x7fc0), as the
// CPU's bf16 class rounds: the frozen weights once, a product's activations each time.
extern "C" __global__ void to_bf16(unsigned short* __restrict__ out, const float* __restrict__ x, long long n) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	const float v = x[i];
	if (v != v) {
		out[i] = 0x7fc0;
		return;
	}
	const unsigned b = __float_as_uint(v);
	out[i] = (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
