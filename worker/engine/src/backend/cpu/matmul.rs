//! Matrix products split into fixed tiles, each computed by our AVX-512 kernel where the
//! CPU has it and by the `gemm` crate otherwise.
//!
//! Each tile of the output is one single-threaded `gemm` call over the whole reduction
//! dimension, so an output element is computed by the same instructions in the same order
//! whatever the thread count; the tile grid depends only on the shape.

use rayon::prelude::*;

use super::SharedMut;

/// Output tile: at most rows × columns. Large enough that each packed panel of the right
/// operand is reused by many rows, small enough to share a layer among threads.
const TILE_M: usize = 512;
const TILE_N: usize = 1024;
const MIN_TILES: usize = 4;
/// Row tiles are multiples of the microkernel's row count, column tiles of its strip width
/// (so that a tile starts on a strip of a pre-packed operand).
const ROW_QUANTUM: usize = 12;
const STRIP: usize = 32;
// Column tiles start on strips of a pre-packed operand.
const _: () = assert!(TILE_N.is_multiple_of(STRIP));

/// `c[m×n] (+)= A·B` where `A(i,p) = a[i*a_rs + p*a_cs]`, `B(p,j) = b[p*b_rs + j*b_cs]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_tiled(
	c: &mut [f32],
	m: usize,
	n: usize,
	k: usize,
	a: &[f32],
	(a_rs, a_cs): (usize, usize),
	b: &[f32],
	(b_rs, b_cs): (usize, usize),
	accumulate: bool,
) {
	assert_eq!(c.len(), m * n, "matmul output is not m×n");
	if m == 0 || n == 0 {
		return;
	}
	if k == 0 {
		if !accumulate {
			c.fill(0.0);
		}
		return;
	}
	// The last element each operand's strides reach must be inside it.
	assert!((m - 1) * a_rs + (k - 1) * a_cs < a.len(), "matmul lhs too short");
	assert!((k - 1) * b_rs + (n - 1) * b_cs < b.len(), "matmul rhs too short");
	for_each_tile_of(c, m, n, |i0, j0, mi, nj, dst| {
		// SAFETY: tiles are disjoint blocks of `c`; the bounds of `a`, `b` and `c` were checked
		// above for the whole product, and a tile reads and writes a subset of it.
		unsafe {
			gemm_single(
				mi,
				nj,
				k,
				dst,
				n,
				a.as_ptr().add(i0 * a_rs),
				(a_rs, a_cs),
				b.as_ptr().add(j0 * b_cs),
				(b_rs, b_cs),
				1.0,
				accumulate,
			)
		}
	});
}

/// `c[m×n] (+)= A·B` with `B` pre-packed, `A(i,p) = a[i*k + p]`: the same tile grid and
/// the same arithmetic as [`gemm_tiled`] (packing only copies), so the same bits.
#[cfg(target_arch = "x86_64")]
pub(super) fn gemm_tiled_packed(
	c: &mut [f32],
	m: usize,
	a: &[f32],
	b: &super::sgemm_avx512::PackedB,
	accumulate: bool,
) {
	let (k, n) = (b.k, b.n);
	assert_eq!(c.len(), m * n, "matmul output is not m×n");
	assert!(a.len() >= m * k, "matmul lhs too short");
	assert!(std::arch::is_x86_feature_detected!("avx512f"), "packed operands need AVX-512F");
	if m == 0 {
		return;
	}
	for_each_tile_of(c, m, n, |i0, j0, mi, nj, dst| {
		// SAFETY: AVX-512F checked; tiles are disjoint blocks of `c`; `a` holds m rows of k;
		// column tiles start at multiples of TILE_N, a multiple of the kernel's strip width.
		unsafe { super::sgemm_avx512::sgemm_packed(mi, nj, dst, n, a.as_ptr().add(i0 * k), k, b, j0, accumulate) }
	});
}

/// `c[m×n] (+)= A·B` with `A` as bf16 rows (`lda` apart) and `B` packed in bf16: the
/// same tile grid as [`gemm_tiled`].
#[cfg(target_arch = "x86_64")]
pub(super) fn gemm_tiled_bf16(
	c: &mut [f32],
	m: usize,
	a: &[u16],
	lda: usize,
	b: &super::sgemm_bf16::PackedBf16,
	accumulate: bool,
) {
	let n = b.n;
	assert_eq!(c.len(), m * n, "matmul output is not m×n");
	assert!(lda.is_multiple_of(2) && lda >= b.k.next_multiple_of(2) && a.len() >= m * lda, "bf16 lhs rows too short");
	assert!(super::has_bf16(), "bf16 products need AVX-512F and AVX512_BF16");
	if m == 0 {
		return;
	}
	for_each_tile_of(c, m, n, |i0, j0, mi, nj, dst| {
		// SAFETY: the CPU features are checked; tiles are disjoint blocks of `c`; `a` holds
		// m rows; column tiles start at multiples of TILE_N, a multiple of the strip width.
		unsafe { super::sgemm_bf16::sgemm_bf16(mi, nj, dst, n, a.as_ptr().add(i0 * lda), lda, b, j0, accumulate) }
	});
}

/// Runs `f(row, column, rows, columns, tile)` for every tile of the `m × n` output `c`, in
/// parallel; `tile` points at the tile's first element (row stride `n`). Tiles are
/// disjoint, so each call may write its own.
fn for_each_tile_of(c: &mut [f32], m: usize, n: usize, f: impl Fn(usize, usize, usize, usize, *mut f32) + Sync) {
	debug_assert_eq!(c.len(), m * n);
	let cp = SharedMut(c.as_mut_ptr());
	for_each_tile(m, n, |i0, j0, mi, nj| {
		let cp = cp;
		// SAFETY: (i0, j0) lies inside the m × n output.
		f(i0, j0, mi, nj, unsafe { cp.0.add(i0 * n + j0) })
	});
}

/// Runs `f(row, column, rows, columns)` for every tile of an `m × n` output, in parallel
/// (the grid: [`tile_grid`]).
fn for_each_tile(m: usize, n: usize, f: impl Fn(usize, usize, usize, usize) + Sync) {
	match tile_grid(m, n).as_slice() {
		[(i0, j0, mi, nj)] => f(*i0, *j0, *mi, *nj),
		tiles => tiles.par_iter().for_each(|&(i0, j0, mi, nj)| f(i0, j0, mi, nj)),
	}
}

/// The tiles of an `m × n` output: `(row, column, rows, columns)`, a function of the
/// shape only: at most TILE_M × TILE_N per tile, and rows split further until there are
/// at least MIN_TILES tiles to share out.
fn tile_grid(m: usize, n: usize) -> Vec<(usize, usize, usize, usize)> {
	let col_tiles = n.div_ceil(TILE_N);
	// Few rows (a LoRA weight gradient, `r × in`): split the columns instead, so that each
	// tile packs only its own columns of the right operand (split by rows, every tile
	// would pack all of it). Column tiles stay multiples of the kernels' strip width.
	let (tile_m, tile_n) = if m <= 2 * ROW_QUANTUM && col_tiles < MIN_TILES {
		(m.max(1), n.div_ceil(MIN_TILES).next_multiple_of(STRIP).clamp(STRIP, TILE_N))
	} else {
		let row_tiles = MIN_TILES.div_ceil(col_tiles).max(m.div_ceil(TILE_M));
		(m.div_ceil(row_tiles).next_multiple_of(ROW_QUANTUM).clamp(1, TILE_M), TILE_N)
	};
	(0..m)
		.step_by(tile_m)
		.flat_map(|i| (0..n).step_by(tile_n).map(move |j| (i, j, tile_m.min(m - i), tile_n.min(n - j))))
		.collect()
}

/// One single-threaded strided product, `dst (+)= beta · lhs · rhs`: a matmul tile, or one
/// of the many small products of attention heads. Strides are (row, column).
///
/// # Safety
/// Every element the strides reach from each pointer must be valid, and `dst`'s must not
/// be written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_single(
	m: usize,
	n: usize,
	k: usize,
	dst: *mut f32,
	dst_rs: usize,
	lhs: *const f32,
	(lhs_rs, lhs_cs): (usize, usize),
	rhs: *const f32,
	(rhs_rs, rhs_cs): (usize, usize),
	beta: f32,
	accumulate: bool,
) {
	#[cfg(target_arch = "x86_64")]
	if std::arch::is_x86_feature_detected!("avx512f") {
		return super::sgemm_avx512::sgemm(
			m,
			n,
			k,
			dst,
			dst_rs,
			lhs,
			(lhs_rs, lhs_cs),
			rhs,
			(rhs_rs, rhs_cs),
			beta,
			accumulate,
		);
	}
	gemm::gemm(
		m,
		n,
		k,
		dst,
		1,
		dst_rs as isize,
		accumulate,
		lhs,
		lhs_cs as isize,
		lhs_rs as isize,
		rhs,
		rhs_cs as isize,
		rhs_rs as isize,
		1.0,
		beta,
		false,
		false,
		false,
		gemm::Parallelism::None,
	)
}
