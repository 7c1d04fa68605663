// RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), one block per row.
#include "common.cuh"

extern "C" __global__ void rmsnorm_forward(float* __restrict__ out, float* __restrict__ rstd,
	const float* __restrict__ x, const float* __restrict__ w, int dim, float eps) {
	extern __shared__ float sh[];
	const long long row = blockIdx.x;
	const float* xr = x + row * dim;
	float ss = 0.0f;
	for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
	ss = block_sum(ss, sh);
	const float r = 1.0f / sqrtf(ss / (float)dim + eps);
	if (threadIdx.x == 0) rstd[row] = r;
	float* o = out + row * dim;
	for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * r * w[i];
}

// dx += rstd * w * dy - x * rstd^3 * mean(w * dy * x)  (the weight is frozen).
extern "C" __global__ void rmsnorm_backward(float* __restrict__ dx, const float* __restrict__ dout,
	const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ rstd, int dim) {
	extern __shared__ float sh[];
	const long long row = blockIdx.x;
	const float* xr = x + row * dim;
	const float* dy = dout + row * dim;
	float dot = 0.0f;
	for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += dy[i] * w[i] * xr[i];
	dot = block_sum(dot, sh);
	const float r = rstd[row];
	const float c = dot * r * r * r / (float)dim;
	float* d = dx + row * dim;
	for (int i = threadIdx.x; i < dim; i += blockDim.x) d[i] += r * w[i] * dy[i] - xr[i] * c;
}
