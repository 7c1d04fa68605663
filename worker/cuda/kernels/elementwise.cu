// The small operations between the layers: residual adds, biases, scaling (LoRA's
// alpha/r, clipping), the embedding gather. One thread per element.
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

// out[r] = table[tokens[r]] for each of `rows` tokens (dim wide). Tokens are checked
// against the vocabulary on the host before any launch.
extern "C" __global__ void embedding_gather(float* __restrict__ out, const float* __restrict__ table,
	const unsigned* __restrict__ tokens, long long rows, int dim) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= rows * dim) return;
	const long long r = i / dim;
	out[i] = table[(long long)tokens[r] * dim + i % dim];
}
