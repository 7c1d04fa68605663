// Softmax cross-entropy over the vocabulary, forward and backward in one kernel: one block
// per row, each pass walking the vocabulary in chunks of the block's width. Overwrites the
// logits with scale * (softmax - onehot(target)) and writes -log softmax[target] (in
// double, as the CPU backend does) to `losses`; a negative target is ignored (zeros, loss
// 0). The losses stay on the device until the step ends.
#include "common.cuh"

extern "C" __global__ void cross_entropy(float* __restrict__ logits, const int* __restrict__ targets,
	double* __restrict__ losses, int vocab, float scale) {
	extern __shared__ float sh[];
	const long long row = blockIdx.x;
	float* x = logits + row * vocab;
	const int t = targets[row];
	if (t < 0 || t >= vocab) {
		// Out of range cannot come from a checked batch; treated as ignored, never read.
		for (int i = threadIdx.x; i < vocab; i += blockDim.x) x[i] = 0.0f;
		if (threadIdx.x == 0) losses[row] = 0.0;
		return;
	}
	float m = NEG_INF;
	for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, x[i]);
	m = block_max(m, sh);
	float s = 0.0f;
	for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += expf(x[i] - m);
	s = block_sum(s, sh);
	const float target_logit = x[t] - m;
	__syncthreads(); // every thread has read x[t] before anyone overwrites it
	if (threadIdx.x == 0) losses[row] = log((double)s) - (double)target_logit;
	const float k = scale / s;
	for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
		const float g = expf(x[i] - m) * k;
		x[i] = i == t ? g - scale : g;
	}
}
