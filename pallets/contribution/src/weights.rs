//! Weights of `pallet_contribution`.
//!
//! **Provisional**: estimated by hand from the storage each path touches (reads and
//! writes of the worst case: a full committee of [`MAX_COMMITTEE`] seats judging
//! [`MAX_RESULTS`] results), with a generous computation term, until
//! `benchmarking.rs` exists and `scripts/bench-weights.sh` replaces this file.

#![allow(missing_docs)]

use crate::types::{MAX_COMMITTEE, MAX_RESULTS};
use core::marker::PhantomData;
use frame_support::{
	traits::Get,
	weights::{constants::RocksDbWeight, RuntimeDbWeight, Weight},
};

/// Weight functions of `pallet_contribution`.
pub trait WeightInfo {
	fn register_validator() -> Weight;
	fn unregister_validator() -> Weight;
	fn withdraw_bond() -> Weight;
	fn reveal_eval() -> Weight;
	fn commit_report() -> Weight;
	fn reveal_report() -> Weight;
	/// Aggregating a full case and settling every result.
	fn rule() -> Weight;
	/// A judging deadline: penalties, then the ruling or a fresh draw.
	fn on_deadline() -> Weight;
}

/// The estimates, for a given database weight.
pub struct Estimated;
impl Estimated {
	const MS: u64 = 1_000_000_000;
	// A proof-size term per storage item read: its bounded encoded size, rounded up.
	const CASE_PROOF: u64 = 8_192;
	const REPORT_PROOF: u64 = 1_024;
	const SET_PROOF: u64 = 64 * 48 + 16;

	pub fn register_validator(db: RuntimeDbWeight) -> Weight {
		Weight::from_parts(Self::MS / 2, Self::SET_PROOF + 512).saturating_add(db.reads_writes(5, 5))
	}
	pub fn unregister_validator(db: RuntimeDbWeight) -> Weight {
		Weight::from_parts(Self::MS / 4, Self::SET_PROOF + 256).saturating_add(db.reads_writes(2, 2))
	}
	pub fn withdraw_bond(db: RuntimeDbWeight) -> Weight {
		Weight::from_parts(Self::MS / 4, 1_024).saturating_add(db.reads_writes(3, 4))
	}
	pub fn reveal_eval(db: RuntimeDbWeight) -> Weight {
		Weight::from_parts(Self::MS / 4, Self::CASE_PROOF).saturating_add(db.reads_writes(1, 1))
	}
	pub fn commit_report(db: RuntimeDbWeight) -> Weight {
		// A signature check dominates.
		Weight::from_parts(Self::MS, Self::CASE_PROOF + 512).saturating_add(db.reads_writes(3, 1))
	}
	pub fn reveal_report(db: RuntimeDbWeight) -> Weight {
		Weight::from_parts(Self::MS / 2, Self::CASE_PROOF + Self::REPORT_PROOF)
			.saturating_add(db.reads_writes(1, 2))
	}
	pub fn rule(db: RuntimeDbWeight) -> Weight {
		let seats = MAX_COMMITTEE as u64;
		let results = MAX_RESULTS as u64;
		Weight::from_parts(
			4 * Self::MS + results * Self::MS / 2 + seats * Self::MS / 4,
			Self::CASE_PROOF + seats * (Self::REPORT_PROOF + 512) + 16_384,
		)
		// Case, job, reports; per result: escrow and collateral holds, payees; per seat:
		// its record, its account, its bond.
		.saturating_add(db.reads_writes(2 + seats * 4 + results * 6, 2 + seats * 4 + results * 6))
	}
	pub fn on_deadline(db: RuntimeDbWeight) -> Weight {
		// Penalties for every seat, then the larger of a ruling and a fresh draw.
		let seats = MAX_COMMITTEE as u64;
		Self::rule(db)
			.saturating_add(Weight::from_parts(seats * Self::MS / 4, Self::SET_PROOF))
			.saturating_add(db.reads_writes(1 + seats * 4, 1 + seats * 4))
	}
}

/// For a runtime: its database weights.
pub struct SubstrateWeight<T>(PhantomData<T>);
impl<T: frame_system::Config> WeightInfo for SubstrateWeight<T> {
	fn register_validator() -> Weight {
		Estimated::register_validator(T::DbWeight::get())
	}
	fn unregister_validator() -> Weight {
		Estimated::unregister_validator(T::DbWeight::get())
	}
	fn withdraw_bond() -> Weight {
		Estimated::withdraw_bond(T::DbWeight::get())
	}
	fn reveal_eval() -> Weight {
		Estimated::reveal_eval(T::DbWeight::get())
	}
	fn commit_report() -> Weight {
		Estimated::commit_report(T::DbWeight::get())
	}
	fn reveal_report() -> Weight {
		Estimated::reveal_report(T::DbWeight::get())
	}
	fn rule() -> Weight {
		Estimated::rule(T::DbWeight::get())
	}
	fn on_deadline() -> Weight {
		Estimated::on_deadline(T::DbWeight::get())
	}
}

/// For tests: RocksDB weights.
impl WeightInfo for () {
	fn register_validator() -> Weight {
		Estimated::register_validator(RocksDbWeight::get())
	}
	fn unregister_validator() -> Weight {
		Estimated::unregister_validator(RocksDbWeight::get())
	}
	fn withdraw_bond() -> Weight {
		Estimated::withdraw_bond(RocksDbWeight::get())
	}
	fn reveal_eval() -> Weight {
		Estimated::reveal_eval(RocksDbWeight::get())
	}
	fn commit_report() -> Weight {
		Estimated::commit_report(RocksDbWeight::get())
	}
	fn reveal_report() -> Weight {
		Estimated::reveal_report(RocksDbWeight::get())
	}
	fn rule() -> Weight {
		Estimated::rule(RocksDbWeight::get())
	}
	fn on_deadline() -> Weight {
		Estimated::on_deadline(RocksDbWeight::get())
	}
}
