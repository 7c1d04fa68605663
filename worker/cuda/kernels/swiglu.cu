// SwiGLU's gate: h = silu(g) * u, silu(g) = g * sigmoid(g). One thread per element.
#include "common.cuh"

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

extern "C" __global__ void swiglu_forward(float* __restrict__ out, const float* __restrict__ gate,
	const float* __restrict__ up, long long n) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	const float g = gate[i];
	out[i] = g * sigmoid(g) * up[i];
}

// du = dh * silu(g); dg = dh * u * s * (1 + g * (1 - s)), s = sigmoid(g). Overwrites both.
extern "C" __global__ void swiglu_backward(float* __restrict__ dgate, float* __restrict__ dup,
	const float* __restrict__ dout, const float* __restrict__ gate, const float* __restrict__ up, long long n) {
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	const float g = gate[i], u = up[i], dh = dout[i];
	const float s = sigmoid(g);
	dup[i] = dh * g * s;
	dgate[i] = dh * u * s * (1.0f + g * (1.0f - s));
}
