// Grouped-query attention, causal within each document and blind across documents
// (block-diagonal-causal, as the engine's packing defines): the token at row i, position
// positions[i], sees rows i - positions[i] ..= i. Flash-style state: the forward keeps
// only each query row's log-sum-exp (`lse`, [batch x heads x seq]), never the softmax;
// the backward recomputes the probabilities from q, k and lse.
//
// No atomics and no reduction across blocks: the forward and dQ are one block per
// (query row, head, batch row), dK and dV one block per (key row, key/value head, batch
// row) that walks its query heads and rows in a fixed order. Every sum runs in the order
// fixed by the block size, so the bits depend on the inputs and the launch plan only.
// Scores live in dynamic shared memory: `seq` floats per block (the host's launch plan
// checks it fits). The positions are trusted: the launcher passes only a batch whose
// positions start every row at 0 and count up by one within a document (the engine's
// `Batch::check`), as the RoPE tables cover every position. Layouts as the engine's: q/out [batch*seq x heads*head_dim], k/v
// [batch*seq x kv_heads*head_dim].
#include "common.cuh"

// Sequential dot product of `d` elements (one thread).
__device__ __forceinline__ float dot_seq(const float* a, const float* b, int d) {
	float s = 0.0f;
	for (int c = 0; c < d; ++c) s += a[c] * b[c];
	return s;
}

// One query row's softmax attention over `n` keys and values (rows `kvw` apart), by the
// whole block: scores into `score` (shared, n floats), the fixed-order max and sum over the
// block (`red`), then `o[c] = sum_j p_j v_j[c] / sum` in key order. Returns the row's
// log-sum-exp. Shared by the training forward and generation, so both compute alike.
__device__ __forceinline__ float attend_row(float* __restrict__ o, const float* qi, const float* kb,
	const float* vb, int n, long long kvw, int head_dim, float scale, float* score, float* red) {
	float m = NEG_INF;
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		const float s = dot_seq(qi, kb + j * kvw, head_dim) * scale;
		score[j] = s;
		m = fmaxf(m, s);
	}
	m = block_max(m, red);
	float sum = 0.0f;
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		const float p = expf(score[j] - m);
		score[j] = p;
		sum += p;
	}
	sum = block_sum(sum, red);
	const float inv = 1.0f / sum;
	for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
		float acc = 0.0f;
		for (int j = 0; j < n; ++j) acc += score[j] * vb[j * kvw + c];
		o[c] = acc * inv;
	}
	return m + logf(sum);
}

extern "C" __global__ void attention_forward(float* __restrict__ out, float* __restrict__ lse,
	const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
	const unsigned* __restrict__ positions, int seq, int heads, int kv_heads, int head_dim, float scale) {
	extern __shared__ float sh[]; // [seq] scores, then [blockDim] for the reductions
	float* score = sh;
	float* red = sh + seq;
	const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
	const int group = heads / kv_heads, kvh = h / group;
	const long long qw = (long long)heads * head_dim, kvw = (long long)kv_heads * head_dim;
	const long long row = (long long)b * seq + i;
	const int first = i - (int)positions[row];
	const int n = i - first + 1;
	const float* qi = q + row * qw + (long long)h * head_dim;
	const float* kb = k + ((long long)b * seq + first) * kvw + (long long)kvh * head_dim;
	const float* vb = v + ((long long)b * seq + first) * kvw + (long long)kvh * head_dim;
	float* o = out + row * qw + (long long)h * head_dim;
	const float l = attend_row(o, qi, kb, vb, n, kvw, head_dim, scale, score, red);
	if (threadIdx.x == 0) lse[((long long)b * heads + h) * seq + i] = l;
}

// Generation: n new queries (rows of q, at positions past .. past + n - 1) over a KV cache
// of at least past + n positions; query i sees cache positions 0 ..= past + i. One block
// per (new query, head), the same order of operations as the forward. Shared memory:
// past + n scores, then [blockDim] for the reductions.
extern "C" __global__ void attention_cached(float* __restrict__ out, const float* __restrict__ q,
	const float* __restrict__ k_cache, const float* __restrict__ v_cache, int past, int heads, int kv_heads,
	int head_dim, float scale) {
	extern __shared__ float sh[];
	const int i = blockIdx.x, h = blockIdx.y;
	float* score = sh;
	float* red = sh + past + gridDim.x;
	const int group = heads / kv_heads, kvh = h / group;
	const long long qw = (long long)heads * head_dim, kvw = (long long)kv_heads * head_dim;
	const int n = past + i + 1;
	const float* qi = q + (long long)i * qw + (long long)h * head_dim;
	const float* kb = k_cache + (long long)kvh * head_dim;
	const float* vb = v_cache + (long long)kvh * head_dim;
	float* o = out + (long long)i * qw + (long long)h * head_dim;
	attend_row(o, qi, kb, vb, n, kvw, head_dim, scale, score, red);
}

// delta[b,h,i] = sum_c dout[i,h,c] * out[i,h,c]: the softmax backward's row term. One
// block per (row, head, batch row).
extern "C" __global__ void attention_delta(float* __restrict__ delta, const float* __restrict__ dout,
	const float* __restrict__ out, int seq, int heads, int head_dim) {
	extern __shared__ float red[];
	const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
	const long long off = ((long long)b * seq + i) * heads * head_dim + (long long)h * head_dim;
	float s = 0.0f;
	for (int c = threadIdx.x; c < head_dim; c += blockDim.x) s += dout[off + c] * out[off + c];
	s = block_sum(s, red);
	if (threadIdx.x == 0) delta[((long long)b * heads + h) * seq + i] = s;
}

// dq[i] = scale * sum_j p_ij (dout_i . v_j - delta_i) k_j (overwritten).
extern "C" __global__ void attention_backward_dq(float* __restrict__ dq, const float* __restrict__ dout,
	const float* __restrict__ lse, const float* __restrict__ delta, const float* __restrict__ q,
	const float* __restrict__ k, const float* __restrict__ v, const unsigned* __restrict__ positions, int seq,
	int heads, int kv_heads, int head_dim, float scale) {
	extern __shared__ float ds[]; // [seq]
	const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
	const int group = heads / kv_heads, kvh = h / group;
	const long long qw = (long long)heads * head_dim, kvw = (long long)kv_heads * head_dim;
	const long long row = (long long)b * seq + i;
	const long long stat = ((long long)b * heads + h) * seq + i;
	const int first = i - (int)positions[row];
	const int n = i - first + 1;
	const float* qi = q + row * qw + (long long)h * head_dim;
	const float* doi = dout + row * qw + (long long)h * head_dim;
	const float* kb = k + ((long long)b * seq + first) * kvw + (long long)kvh * head_dim;
	const float* vb = v + ((long long)b * seq + first) * kvw + (long long)kvh * head_dim;
	const float l = lse[stat], di = delta[stat];
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		const float p = expf(dot_seq(qi, kb + j * kvw, head_dim) * scale - l);
		ds[j] = p * (dot_seq(doi, vb + j * kvw, head_dim) - di);
	}
	__syncthreads();
	float* out = dq + row * qw + (long long)h * head_dim;
	for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
		float acc = 0.0f;
		for (int j = 0; j < n; ++j) acc += ds[j] * kb[j * kvw + c];
		out[c] = acc * scale;
	}
}

// For key row j of key/value head kvh: dv_j = sum_{h in group, i} p_ij dout_i and
// dk_j = scale * sum_{h, i} ds_ij q_i, over the query rows i >= j of j's document
// (overwritten). The heads of the group, then the rows, in increasing order.
extern "C" __global__ void attention_backward_dkdv(float* __restrict__ dk, float* __restrict__ dv,
	const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
	const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
	const unsigned* __restrict__ positions, int seq, int heads, int kv_heads, int head_dim, float scale) {
	extern __shared__ float sh[]; // [seq] probabilities, then [seq] score gradients
	float* p = sh;
	float* ds = sh + seq;
	const int j = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
	const int group = heads / kv_heads;
	const long long qw = (long long)heads * head_dim, kvw = (long long)kv_heads * head_dim;
	const long long krow = (long long)b * seq + j;
	// The document's rows after j: positions keep counting up until the next document
	// (a 0) or the end of the row.
	int last = j;
	while (last + 1 < seq && positions[(long long)b * seq + last + 1] != 0) ++last;
	const int n = last - j + 1;
	const float* kj = k + krow * kvw + (long long)kvh * head_dim;
	const float* vj = v + krow * kvw + (long long)kvh * head_dim;
	float acc_k[4] = {0, 0, 0, 0}, acc_v[4] = {0, 0, 0, 0}; // head_dim <= 4 * blockDim (host-checked)
	for (int g = 0; g < group; ++g) {
		const int h = kvh * group + g;
		for (int r = threadIdx.x; r < n; r += blockDim.x) {
			const long long qrow = (long long)b * seq + j + r;
			const long long stat = ((long long)b * heads + h) * seq + j + r;
			const float* qi = q + qrow * qw + (long long)h * head_dim;
			const float* doi = dout + qrow * qw + (long long)h * head_dim;
			const float pr = expf(dot_seq(qi, kj, head_dim) * scale - lse[stat]);
			p[r] = pr;
			ds[r] = pr * (dot_seq(doi, vj, head_dim) - delta[stat]);
		}
		__syncthreads();
		for (int s = 0; s < 4; ++s) {
			const int c = threadIdx.x + s * blockDim.x;
			if (c >= head_dim) break;
			for (int r = 0; r < n; ++r) {
				const long long qrow = (long long)b * seq + j + r;
				acc_v[s] += p[r] * dout[qrow * qw + (long long)h * head_dim + c];
				acc_k[s] += ds[r] * q[qrow * qw + (long long)h * head_dim + c];
			}
		}
		__syncthreads();
	}
	for (int s = 0; s < 4; ++s) {
		const int c = threadIdx.x + s * blockDim.x;
		if (c >= head_dim) break;
		dv[krow * kvw + (long long)kvh * head_dim + c] = acc_v[s];
		dk[krow * kvw + (long long)kvh * head_dim + c] = acc_k[s] * scale;
	}
}
