//! Weights of `pallet-jobs`' calls.
//!
//! PLACEHOLDER until `scripts/bench-weights.sh` generates this file from the
//! `frame-benchmarking` benchmarks in `benchmarking.rs`: conservative estimates (the
//! execution of a few balance transfers, plus the storage each call touches), so blocks
//! are never overfilled meanwhile.

#![allow(unused_parens, unused_imports, missing_docs)]

use core::marker::PhantomData;
use frame_support::{
	traits::Get,
	weights::{constants::RocksDbWeight, RuntimeDbWeight, Weight},
};

/// Weight functions needed for `pallet-jobs`. `r` is the job's replication bound.
pub trait WeightInfo {
	fn register_miner() -> Weight;
	fn update_miner() -> Weight;
	fn unregister_miner() -> Weight;
	fn post_job() -> Weight;
	fn cancel_job() -> Weight;
	fn claim_job(r: u32) -> Weight;
	fn submit_result(r: u32) -> Weight;
	fn accept_result(r: u32) -> Weight;
	fn reject_result(r: u32) -> Weight;
	fn resolve_dispute(r: u32) -> Weight;
	fn settle_expired(r: u32) -> Weight;
}

const BASE: u64 = 200_000_000;
const PER_CLAIM: u64 = 40_000_000;
const PROOF: u64 = 80_000;

fn estimate(exec: u64, db: RuntimeDbWeight, reads: u64, writes: u64) -> Weight {
	Weight::from_parts(exec, PROOF).saturating_add(db.reads_writes(reads, writes))
}

macro_rules! weights {
	($db:expr) => {
		fn register_miner() -> Weight { estimate(BASE, $db, 3, 4) }
		fn update_miner() -> Weight { estimate(BASE, $db, 2, 3) }
		fn unregister_miner() -> Weight { estimate(BASE, $db, 2, 4) }
		fn post_job() -> Weight { estimate(BASE, $db, 5, 6) }
		fn cancel_job() -> Weight { estimate(BASE, $db, 2, 3) }
		fn claim_job(r: u32) -> Weight { estimate(BASE + PER_CLAIM * r as u64, $db, 4, 4) }
		// sr25519 verification dominates.
		fn submit_result(r: u32) -> Weight { estimate(4 * BASE + PER_CLAIM * r as u64, $db, 5, 3) }
		fn accept_result(r: u32) -> Weight { estimate(2 * BASE + PER_CLAIM * r as u64, $db, 7, 7) }
		fn reject_result(r: u32) -> Weight { estimate(BASE + PER_CLAIM * r as u64, $db, 2, 1) }
		fn resolve_dispute(r: u32) -> Weight { estimate(2 * BASE + PER_CLAIM * r as u64, $db, 7, 7) }
		fn settle_expired(r: u32) -> Weight {
			estimate(BASE + 2 * BASE * r as u64, $db, 3 + 4 * r as u64, 2 + 4 * r as u64)
		}
	};
}

/// Weights for `pallet-jobs` using the runtime's database weights.
pub struct SubstrateWeight<T>(PhantomData<T>);
impl<T: frame_system::Config> WeightInfo for SubstrateWeight<T> {
	weights!(T::DbWeight::get());
}

/// For tests: the reference database weights.
impl WeightInfo for () {
	weights!(RocksDbWeight::get());
}
