//! Our own single-threaded f32 GEMM for AVX-512 (the `gemm` crate keeps its AVX-512
//! kernels behind a nightly-only feature, so on stable it runs 256-bit FMA kernels).
//!
//! BLIS structure: for each block of `KC` along the reduction, pack the B panel into
//! `NR`-wide column strips and the A block into `MR`-tall row strips, then run a 12×32
//! register-tile microkernel (24 zmm accumulators; per step 2 vector loads of B, 12
//! broadcasts of A, 24 FMAs) over every (row strip, column strip) pair.
//!
//! Determinism: each output element is one FMA chain over a `KC` block, in order, added
//! to the output block after block in order. Nothing depends on threads or alignment.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;
const KC: usize = 192;

/// `C[m×n] (+)= beta · A·B` with `A(i,p) = a[i*a_rs + p*a_cs]`, `B(p,j) = b[p*b_rs + j*b_cs]`,
/// `C(i,j) = c[i*c_rs + j]`.
///
/// # Safety
/// The CPU must support AVX-512F, and every element the strides reach must be valid.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sgemm(
	m: usize,
	n: usize,
	k: usize,
	c: *mut f32,
	c_rs: usize,
	a: *const f32,
	(a_rs, a_cs): (usize, usize),
	b: *const f32,
	(b_rs, b_cs): (usize, usize),
	beta: f32,
	accumulate: bool,
) {
	let n_strips = n.div_ceil(NR);
	let kc_max = KC.min(k);
	PACK.with_borrow_mut(|(bp_buf, ap_buf)| {
		// Reused per thread (fresh buffers would cost a page fault per 4 KiB on every call),
		// 64-byte aligned so no vector load of a packed strip straddles two cache lines.
		let bp = aligned(bp_buf, n_strips * NR * kc_max);
		for (block, p0) in (0..k).step_by(KC).enumerate() {
			let kc = KC.min(k - p0);
			pack_b(&mut bp[..n_strips * NR * kc], b, (b_rs, b_cs), p0, kc, n);
			block_product(m, n, kc, c, c_rs, a, (a_rs, a_cs), p0, bp, ap_buf, beta, accumulate || block > 0);
		}
	});
}

/// The same product with `B` already packed ([`PackedB`]): columns `j0..j0+n` of it.
///
/// # Safety
/// As [`sgemm`]; `j0` must be a multiple of `NR` and `j0 + n` at most the panel's width.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sgemm_packed(
	m: usize,
	n: usize,
	c: *mut f32,
	c_rs: usize,
	a: *const f32,
	a_rs: usize,
	b: &PackedB,
	j0: usize,
	accumulate: bool,
) {
	assert!(j0.is_multiple_of(NR) && j0 + n <= b.n, "columns {j0}..{} of a packed {}-wide operand", j0 + n, b.n);
	PACK.with_borrow_mut(|(_, ap_buf)| {
		for (block, p0) in (0..b.k).step_by(KC).enumerate() {
			let kc = KC.min(b.k - p0);
			let panel = &b.data()[b.block_offset(p0) + (j0 / NR) * NR * kc..];
			block_product(m, n, kc, c, c_rs, a, (a_rs, 1), p0, panel, ap_buf, 1.0, accumulate || block > 0);
		}
	});
}

/// `B` (`[k × n]`) packed once for [`sgemm_packed`]: for each block of `KC` rows, every
/// `NR`-wide column strip as `kc` rows of `NR` (zero-padded), strips side by side.
pub(crate) struct PackedB {
	pub k: usize,
	pub n: usize,
	buf: Vec<f32>,
	/// Where the 64-byte-aligned data starts in `buf`.
	start: usize,
}

impl PackedB {
	/// Packs `B(p,j) = b[p*b_rs + j*b_cs]`.
	pub fn new(b: &[f32], k: usize, n: usize, (b_rs, b_cs): (usize, usize)) -> Self {
		assert!(k > 0 && n > 0 && (k - 1) * b_rs + (n - 1) * b_cs < b.len(), "packed operand out of bounds");
		let strips = n.div_ceil(NR);
		let len = strips * NR * k;
		let mut buf = vec![0f32; len + 16];
		let start = buf.as_ptr().align_offset(64).min(16);
		let data = &mut buf[start..start + len];
		for p0 in (0..k).step_by(KC) {
			let kc = KC.min(k - p0);
			let at = p0 * strips * NR;
			// SAFETY: bounds of `b` checked above; the destination is this block's part.
			unsafe { pack_b_scalar(&mut data[at..at + strips * NR * kc], b.as_ptr(), (b_rs, b_cs), p0, kc, n) };
		}
		PackedB { k, n, buf, start }
	}

	fn data(&self) -> &[f32] {
		&self.buf[self.start..]
	}

	fn block_offset(&self, p0: usize) -> usize {
		p0 * self.n.div_ceil(NR) * NR
	}
}

/// Packs rows `p0..p0+kc` of `B` into `dst` as strips of `NR` columns (see [`PackedB`]).
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(dst: &mut [f32], b: *const f32, (b_rs, b_cs): (usize, usize), p0: usize, kc: usize, n: usize) {
	for s in 0..n.div_ceil(NR) {
		let dst = &mut dst[s * NR * kc..(s + 1) * NR * kc];
		let cols = NR.min(n - s * NR);
		if b_cs == 1 && cols == NR {
			for p in 0..kc {
				let src = b.add((p0 + p) * b_rs + s * NR);
				_mm512_storeu_ps(dst.as_mut_ptr().add(p * NR), _mm512_loadu_ps(src));
				_mm512_storeu_ps(dst.as_mut_ptr().add(p * NR + 16), _mm512_loadu_ps(src.add(16)));
			}
		} else {
			pack_strip(dst, b, (b_rs, b_cs), p0, kc, s * NR, cols);
		}
	}
}

/// The same without vector instructions (packing is a copy: the same result).
unsafe fn pack_b_scalar(dst: &mut [f32], b: *const f32, strides: (usize, usize), p0: usize, kc: usize, n: usize) {
	for s in 0..n.div_ceil(NR) {
		let cols = NR.min(n - s * NR);
		pack_strip(&mut dst[s * NR * kc..(s + 1) * NR * kc], b, strides, p0, kc, s * NR, cols);
	}
}

/// One strip: columns `j0..j0+cols` of rows `p0..p0+kc`, zero-padded to `NR`.
unsafe fn pack_strip(
	dst: &mut [f32],
	b: *const f32,
	(b_rs, b_cs): (usize, usize),
	p0: usize,
	kc: usize,
	j0: usize,
	cols: usize,
) {
	if b_cs == 1 {
		for p in 0..kc {
			let row = &mut dst[p * NR..(p + 1) * NR];
			std::ptr::copy_nonoverlapping(b.add((p0 + p) * b_rs + j0), row.as_mut_ptr(), cols);
			row[cols..].fill(0.0);
		}
		return;
	}
	// Bᵀ stored row-major (a weight used as `x Wᵀ`): read each of its rows contiguously;
	// the strided writes stay within this strip.
	for p in 0..kc {
		dst[p * NR + cols..(p + 1) * NR].fill(0.0);
	}
	for j in 0..cols {
		let src = b.add(p0 * b_rs + (j0 + j) * b_cs);
		for p in 0..kc {
			dst[p * NR + j] = *src.add(p * b_rs);
		}
	}
}

/// One `KC` block: `C (+)= beta · A[:, p0..p0+kc] · Bblock` over all (row strip, column
/// strip) pairs, `bp` the block's packed strips.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn block_product(
	m: usize,
	n: usize,
	kc: usize,
	c: *mut f32,
	c_rs: usize,
	a: *const f32,
	(a_rs, a_cs): (usize, usize),
	p0: usize,
	bp: &[f32],
	ap_buf: &mut Vec<f32>,
	beta: f32,
	add: bool,
) {
	let (n_strips, m_strips) = (n.div_ceil(NR), m.div_ceil(MR));
	// Pack A only when its rows are not contiguous (a transposed operand); contiguous rows
	// are read in place by the kernel.
	let packed_a = a_cs != 1;
	let ap = aligned(ap_buf, if packed_a { m_strips * MR * kc } else { 0 });
	if packed_a {
		for s in 0..m_strips {
			let dst = &mut ap[s * MR * kc..(s + 1) * MR * kc];
			let rows = MR.min(m - s * MR);
			for i in 0..MR {
				let src = a.add((s * MR + i.min(rows - 1)) * a_rs + p0 * a_cs);
				for p in 0..kc {
					dst[p * MR + i] = *src.add(p * a_cs);
				}
			}
		}
	}
	let mut tile = [0f32; MR * NR];
	for sj in 0..n_strips {
		let cols = NR.min(n - sj * NR);
		let bs = bp.as_ptr().add(sj * NR * kc);
		for si in 0..m_strips {
			let rows = MR.min(m - si * MR);
			let cp = c.add(si * MR * c_rs + sj * NR);
			let full = rows == MR && cols == NR;
			let (dst, dst_rs, dst_add) = if full { (cp, c_rs, add) } else { (tile.as_mut_ptr(), NR, false) };
			if packed_a {
				kernel::<true>(kc, ap.as_ptr().add(si * MR * kc), 0, rows, bs, dst, dst_rs, dst_add, beta);
			} else {
				kernel::<false>(kc, a.add(si * MR * a_rs + p0), a_rs, rows, bs, dst, dst_rs, dst_add, beta);
			}
			if !full {
				// Edge tile: computed into the scratch tile; copy the valid part.
				for i in 0..rows {
					for j in 0..cols {
						let d = cp.add(i * c_rs + j);
						*d = if add { *d + tile[i * NR + j] } else { tile[i * NR + j] };
					}
				}
			}
		}
	}
}

thread_local! {
	/// Packing buffers for B and A.
	static PACK: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
	if buf.len() < len + 16 {
		buf.resize(len + 16, 0.0);
	}
	let skip = buf.as_ptr().align_offset(64).min(16);
	&mut buf[skip..skip + len]
}

/// The 12×32 register tile: `C = (C +) beta · Σₚ A(i,p) · B(p,j)`. `A` is a packed strip
/// (`PACKED`: element (i,p) at `a[p*MR + i]`) or `rows` contiguous rows `lda` apart
/// (element (i,p) at `a[i*lda + p]`; missing rows repeat the last, their results unused).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const PACKED: bool>(
	kc: usize,
	a: *const f32,
	lda: usize,
	rows: usize,
	b: *const f32,
	c: *mut f32,
	c_rs: usize,
	add: bool,
	beta: f32,
) {
	let mut row_ptr = [a; MR];
	if !PACKED {
		for (i, r) in row_ptr.iter_mut().enumerate() {
			*r = a.add(i.min(rows - 1) * lda);
		}
	}
	let mut acc = [[_mm512_setzero_ps(); 2]; MR];
	for p in 0..kc {
		let b0 = _mm512_loadu_ps(b.add(p * NR));
		let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
		for i in 0..MR {
			let x = if PACKED { *a.add(p * MR + i) } else { *row_ptr[i].add(p) };
			let ai = _mm512_set1_ps(x);
			acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
			acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
		}
	}
	let scale = _mm512_set1_ps(beta);
	for (i, row) in acc.iter().enumerate() {
		let (r0, r1) =
			if beta == 1.0 { (row[0], row[1]) } else { (_mm512_mul_ps(row[0], scale), _mm512_mul_ps(row[1], scale)) };
		let cr = c.add(i * c_rs);
		if add {
			_mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), r0));
			_mm512_storeu_ps(cr.add(16), _mm512_add_ps(_mm512_loadu_ps(cr.add(16)), r1));
		} else {
			_mm512_storeu_ps(cr, r0);
			_mm512_storeu_ps(cr.add(16), r1);
		}
	}
}
