// LoRA's input dropout from the engine's counter-based stream: element i of stream `key`
// is dropped iff uniform_at(key, i) < p, i.e. its 24 random bits are below `threshold`
// (= ceil(p * 2^24), computed on the host as the engine does). The mask is never stored:
// forward and backward draw the same bits from (key, i).
#include "common.cuh"

// out = dropped ? 0 : x * keep  (keep = 1/(1-p)).
extern "C" __global__ void dropout_forward(float* __restrict__ out, const float* __restrict__ x, long long n,
	unsigned long long key, unsigned long long threshold, float keep) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	out[i] = uniform_bits(key, (unsigned long long)i) >= threshold ? x[i] * keep : 0.0f;
}

// dx += kept ? t * keep : +0 (a dropped element adds +0, as the CPU's masked add does:
// a -0 in dx becomes +0 there too).
extern "C" __global__ void dropout_backward(float* __restrict__ dx, const float* __restrict__ t, long long n,
	unsigned long long key, unsigned long long threshold, float keep) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	dx[i] += uniform_bits(key, (unsigned long long)i) >= threshold ? t[i] * keep : 0.0f;
}
