// Shared by every kernel of the CUDA backend (worker/cuda). Compiled by NVRTC with
// --fmad=false: a multiply and an add are never fused into one rounding, so the bits do
// not depend on what the PTX assembler would contract (the class is NVRTC's version and
// the GPU's architecture, not ptxas's choices).
#pragma once

// -infinity without <math.h> (NVRTC compiles without the host's headers).
#define NEG_INF __int_as_float(0xff800000)

// Every block reduction here runs on a power-of-two block (the host's launch plan
// guarantees it, worker/cuda/src/launch.rs) in one fixed tree: thread t adds t + w for
// w = blockDim/2, /4, ..., 1. The result depends only on the inputs and the block size.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
	const unsigned t = threadIdx.x;
	sh[t] = v;
	__syncthreads();
	for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
		if (t < w) sh[t] += sh[t + w];
		__syncthreads();
	}
	const T r = sh[0];
	__syncthreads();
	return r;
}

__device__ __forceinline__ float block_max(float v, float* sh) {
	const unsigned t = threadIdx.x;
	sh[t] = v;
	__syncthreads();
	for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
		if (t < w) sh[t] = fmaxf(sh[t], sh[t + w]);
		__syncthreads();
	}
	const float r = sh[0];
	__syncthreads();
	return r;
}

// SplitMix64's finaliser, bit for bit the engine's `rng::mix64`.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

// The 24 random bits of the engine's `rng::uniform_at(key, index)` (which is this times
// 2^-24): an element is dropped iff they are below ceil(p * 2^24).
__device__ __forceinline__ unsigned long long uniform_bits(unsigned long long key, unsigned long long index) {
	return mix64(key ^ mix64(index)) >> 40;
}
