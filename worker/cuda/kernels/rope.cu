// Rotary position embedding, Hugging Face's rotate-half layout: within a head, element i
// pairs with i + d/2 and the pair turns by pos * inv_freq[i]; `inverse` turns back (the
// backward). One thread per pair.
#include "common.cuh"

extern "C" __global__ void rope(float* __restrict__ x, int rows, int width, const float* __restrict__ cos_t,
	const float* __restrict__ sin_t, const unsigned* __restrict__ positions, int head_dim, int inverse) {
	const int half = head_dim / 2;
	const long long pairs_per_row = width / 2;
	const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (p >= (long long)rows * pairs_per_row) return;
	const long long row = p / pairs_per_row;
	const int in_row = (int)(p % pairs_per_row);
	const int head = in_row / half, i = in_row % half;
	const long long pos = positions[row];
	float* h = x + row * width + (long long)head * head_dim;
	const float c = cos_t[pos * half + i];
	const float s = inverse ? -sin_t[pos * half + i] : sin_t[pos * half + i];
	const float a = h[i], b = h[i + half];
	h[i] = a * c - b * s;
	h[i + half] = b * c + a * s;
}
