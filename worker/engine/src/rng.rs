//! Randomness that is part of the protocol: everything random in training (LoRA init, data
//! order, dropout) comes from here and is a pure function of the job's seed and a counter,
//! so a replay from any checkpoint draws the same numbers.
//!
//! The generator is SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and well mixed;
//! cryptographic strength is not needed, only that everyone computes the same stream.

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
	z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
	z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
	z ^ (z >> 31)
}

/// A key for an independent stream: the seed and a path of labels (step, layer, ...).
pub fn stream_key(seed: u64, labels: &[u64]) -> u64 {
	labels
		.iter()
		.fold(mix64(seed ^ 0x6d6f_6c74_696e_6721), |k, &l| mix64(k ^ mix64(l.wrapping_add(0x9e37_79b9_7f4a_7c15))))
}

/// A uniform `[0, 1)` float for element `index` of stream `key`, with no state: the
/// dropout mask of any element can be drawn independently, on any thread.
pub fn uniform_at(key: u64, index: u64) -> f32 {
	// 24 random bits: exactly representable in f32.
	(mix64(key ^ mix64(index)) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A sequential SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
	state: u64,
}

impl Rng {
	pub fn new(seed: u64) -> Self {
		Rng { state: seed }
	}

	pub fn next_u64(&mut self) -> u64 {
		self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
		mix64(self.state)
	}

	/// Uniform in `[0, 1)`.
	pub fn uniform(&mut self) -> f32 {
		(self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
	}

	/// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is irrelevant here and the
	/// same for everyone).
	pub fn below(&mut self, n: usize) -> usize {
		((self.next_u64() as u128 * n as u128) >> 64) as usize
	}

	/// A Fisher–Yates shuffle.
	pub fn shuffle<T>(&mut self, items: &mut [T]) {
		for i in (1..items.len()).rev() {
			items.swap(i, self.below(i + 1));
		}
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn streams_are_fixed_and_distinct() {
		// Pinned values: changing the generator changes every hash in the protocol.
		assert_eq!(mix64(0), 0);
		assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
		assert_ne!(stream_key(1, &[2, 3]), stream_key(1, &[3, 2]));
		let u: Vec<f32> = (0..1000).map(|i| uniform_at(stream_key(7, &[1]), i)).collect();
		assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
		let mean = u.iter().sum::<f32>() / 1000.0;
		assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
		let mut v: Vec<u32> = (0..10).collect();
		Rng::new(3).shuffle(&mut v);
		let mut sorted = v.clone();
		sorted.sort();
		assert_eq!(sorted, (0..10).collect::<Vec<_>>());
		assert_ne!(v, sorted);
	}
}
