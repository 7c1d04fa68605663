// AdamW and gradient clipping. The scalars (bias corrections, step size, decay, the clip
// coefficient) are computed on the host exactly as the engine's optim.rs computes them;
// per element the same operations in the same order, with no fused multiply-add.
#include "common.cuh"

extern "C" __global__ void adamw(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
	float* __restrict__ v, long long n, float beta1, float beta2, float eps, float step_size, float bc2_sqrt,
	float decay) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float pi = p[i] * decay;
	const float gi = g[i];
	const float mi = m[i] + (gi - m[i]) * (1.0f - beta1);
	const float vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
	const float denom = sqrtf(vi) / bc2_sqrt + eps;
	pi -= step_size * mi / denom;
	p[i] = pi;
	m[i] = mi;
	v[i] = vi;
}

// Sum of squares in double, first pass: block b sums its contiguous `per_block` elements
// (each thread a strided part, then the fixed tree) into partials[b].
extern "C" __global__ void sumsq_partials(double* __restrict__ partials, const float* __restrict__ x, long long n,
	long long per_block) {
	extern __shared__ double shd[];
	const long long start = (long long)blockIdx.x * per_block;
	const long long end = start + per_block < n ? start + per_block : n;
	double acc = 0.0;
	for (long long i = start + threadIdx.x; i < end; i += blockDim.x) acc += (double)x[i] * (double)x[i];
	acc = block_sum(acc, shd);
	if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Second pass, one block: the partials in the same fixed order into out[0].
extern "C" __global__ void sum_partials(double* __restrict__ out, const double* __restrict__ partials, int count) {
	extern __shared__ double shd[];
	double acc = 0.0;
	for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
	acc = block_sum(acc, shd);
	if (threadIdx.x == 0) out[0] = acc;
}
