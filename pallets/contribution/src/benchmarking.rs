//! Benchmarks of every call and of the judging deadline, each at the worst path its
//! bounds allow: a full active set, a full committee, the widest case the market can
//! open, the last reveal ruling the case, slashes that drop validators out of the set.
//! Cases are built with the market's own benchmark helpers, through its real calls.

use super::*;
use crate::pallet::{ActiveSet, Cases, Validators};
use alloc::vec::Vec;
use codec::Encode;
use frame_benchmarking::v2::*;
use frame_support::{traits::Get, BoundedVec};
use frame_system::{pallet_prelude::BlockNumberFor, RawOrigin};
use pallet_jobs::{
	benchmarking::{close_submissions_of, delivered_job_with, funded, uri, worst_spec},
	ContentRef, JobId, JobStatus, ResultJudge, MAX_URI_LEN,
};
use sp_core::{crypto::KeyTypeId, sr25519};
use sp_runtime::traits::{One, Saturating};

/// Key type of the benchmark's report keys in the host keystore.
pub const REPORTER: KeyTypeId = KeyTypeId(*b"mrep");
/// The eval set and salt of the benchmark's jobs.
const EVAL_SET: [u8; 32] = [0xE0; 32];
const EVAL_SALT: [u8; 32] = [0x5A; 32];

/// Registers validator `index` with `bond` and a report key in the host keystore.
pub fn validator<T: Config>(index: u32, bond: BalanceOf<T>) -> T::AccountId {
	let who = funded::<T>("validator", index);
	let key = sp_io::crypto::sr25519_generate(REPORTER, None);
	let message = pallet_jobs::key_proof_message(REPORT_KEY_CONTEXT, &who);
	let proof = sp_io::crypto::sr25519_sign(REPORTER, &key, &message).expect("the key is in the keystore");
	Pallet::<T>::do_register_validator(who.clone(), key.0, proof.0, bond).expect("registers");
	who
}

/// Fills the active set with validators of the smallest bond: every draw and every
/// search of the set goes through [`Config::MaxValidators`] entries.
pub fn fill_active_set<T: Config>() {
	let mut index = 0;
	while !ActiveSet::<T>::get().is_full() {
		validator::<T>(index, T::MinValidatorBond::get());
		index += 1;
	}
}

/// A job of the widest replication with `results` delivered results under judgement, its
/// committee drawn from a full active set. Returns the owner, the job and the seats.
fn case<T: Config>(results: u32) -> (T::AccountId, JobId, Vec<T::AccountId>) {
	fill_active_set::<T>();
	let mut spec = worst_spec::<T>();
	spec.eval_commitment = crate::impls::eval_commitment(&EVAL_SET, &EVAL_SALT);
	let (owner, id, _) = delivered_job_with::<T>(spec, results);
	close_submissions_of::<T>(id);
	let seats = Cases::<T>::get(id).expect("the case is open").seats.iter().map(|s| s.validator.clone()).collect();
	(owner, id, seats)
}

fn eval_set() -> ContentRef {
	ContentRef { sha256: EVAL_SET, uri: uri(MAX_URI_LEN) }
}

fn reveal_eval_set<T: Config>(owner: &T::AccountId, id: JobId) {
	Pallet::<T>::do_reveal_eval(owner.clone(), id, eval_set(), EVAL_SALT).expect("reveals");
}

/// A report on `results` results: every replay passes (or every one fails), each loss
/// clears the quality bar.
fn report(results: u32, fail: bool) -> Report {
	let entry = |i: u32| ResultReport {
		replay: if fail { Replay::Fail(Fault::Segment) } else { Replay::Pass },
		loss_ppm: Some(1_000_000 + i),
		bits_per_byte_ppm: Some(500_000 + i),
	};
	Report { base_loss_ppm: Some(2_000_000), results: BoundedVec::truncate_from((0..results).map(entry).collect()) }
}

fn salt<T: Config>(who: &T::AccountId) -> [u8; 32] {
	sp_io::hashing::blake2_256(&who.encode())
}

/// `who`'s commitment to `report`, and its report key's signature of it.
fn signed_commitment<T: Config>(id: JobId, who: &T::AccountId, report: &Report) -> ([u8; 32], sr25519::Signature) {
	let round = Cases::<T>::get(id).expect("the case is open").round;
	let commitment = Pallet::<T>::commitment(id, round, who, report, &salt::<T>(who));
	let key = sr25519::Public::from_raw(Validators::<T>::get(who).expect("a validator").report_key);
	let message = Pallet::<T>::commit_message(id, round, who, &commitment);
	let signature = sp_io::crypto::sr25519_sign(REPORTER, &key, &message).expect("the key is in the keystore");
	(commitment, signature)
}

fn commit<T: Config>(id: JobId, who: &T::AccountId, report: &Report) {
	let (commitment, signature) = signed_commitment::<T>(id, who, report);
	Pallet::<T>::do_commit_report(id, who.clone(), commitment, signature).expect("commits");
}

/// The most seats of a committee of `seats` that can dissent (or stay silent) and still
/// leave a strict majority (or a quorum): each is slashed, the costliest ruling.
fn minority(seats: usize) -> usize {
	seats.saturating_sub(1) / 2
}

/// The report seat `k` of a committee of `seats` makes: the first [`minority`] seats
/// dissent on every result (the majority outvotes them, and they are slashed).
fn report_of(k: usize, seats: usize, results: u32) -> Report {
	report(results, k < minority(seats))
}

fn judge_by<T: Config>(id: JobId) -> BlockNumberFor<T> {
	Cases::<T>::get(id).expect("the case is open").judge_by
}

#[benchmarks]
mod benches {
	use super::*;

	#[benchmark]
	fn register_validator() {
		// A full set of equal bonds: the newcomer's larger bond displaces the latest.
		fill_active_set::<T>();
		let who = funded::<T>("newcomer", 0);
		let key = sp_io::crypto::sr25519_generate(REPORTER, None);
		let message = pallet_jobs::key_proof_message(REPORT_KEY_CONTEXT, &who);
		let proof = sp_io::crypto::sr25519_sign(REPORTER, &key, &message).unwrap();
		let bond = T::MinValidatorBond::get().saturating_add(One::one());
		#[extrinsic_call]
		_(RawOrigin::Signed(who.clone()), key, proof, bond);
		let set = ActiveSet::<T>::get();
		assert!(set.is_full() && set.iter().any(|(v, _)| v == &who));
	}

	#[benchmark]
	fn unregister_validator() {
		fill_active_set::<T>();
		let (who, _) = ActiveSet::<T>::get().first().cloned().expect("a full set");
		#[extrinsic_call]
		_(RawOrigin::Signed(who.clone()));
		assert!(!ActiveSet::<T>::get().iter().any(|(v, _)| v == &who));
	}

	#[benchmark]
	fn withdraw_bond() {
		let who = validator::<T>(0, T::MinValidatorBond::get());
		Pallet::<T>::do_unregister_validator(who.clone()).expect("leaves");
		#[extrinsic_call]
		_(RawOrigin::Signed(who.clone()));
		assert!(!Validators::<T>::contains_key(&who));
	}

	#[benchmark]
	fn reveal_eval() {
		let (owner, id, _) = case::<T>(<T as pallet_jobs::Config>::MaxReplication::get());
		#[extrinsic_call]
		_(RawOrigin::Signed(owner), id, eval_set(), EVAL_SALT);
		assert!(Cases::<T>::get(id).unwrap().eval.is_some());
	}

	#[benchmark]
	fn commit_report() {
		let results = <T as pallet_jobs::Config>::MaxReplication::get();
		let (owner, id, seats) = case::<T>(results);
		reveal_eval_set::<T>(&owner, id);
		let (last, others) = seats.split_last().expect("a committee");
		for (k, who) in others.iter().enumerate() {
			commit::<T>(id, who, &report_of(k, seats.len(), results));
		}
		let (commitment, signature) = signed_commitment::<T>(id, last, &report(results, false));
		let caller = funded::<T>("caller", 0);
		#[extrinsic_call]
		_(RawOrigin::Signed(caller), id, last.clone(), commitment, signature);
		assert!(Cases::<T>::get(id).unwrap().seats.iter().all(|s| s.commitment.is_some()));
	}

	/// The last reveal of a committee: the case is ruled in the same call (every result
	/// passes a ranked job, a dissenting seat is slashed).
	#[benchmark]
	fn reveal_report(r: Linear<1, { <T as pallet_jobs::Config>::MaxReplication::get() }>) {
		let (owner, id, seats) = case::<T>(r);
		reveal_eval_set::<T>(&owner, id);
		for (k, who) in seats.iter().enumerate() {
			commit::<T>(id, who, &report_of(k, seats.len(), r));
		}
		let (last, others) = seats.split_last().expect("a committee");
		for (k, who) in others.iter().enumerate() {
			Pallet::<T>::do_reveal_report(id, who.clone(), report_of(k, seats.len(), r), salt::<T>(who))
				.expect("reveals");
		}
		let last_report = report_of(seats.len() - 1, seats.len(), r);
		let caller = funded::<T>("caller", 0);
		#[extrinsic_call]
		_(RawOrigin::Signed(caller), id, last.clone(), last_report, salt::<T>(last));
		assert!(!Cases::<T>::contains_key(id));
		assert!(matches!(pallet_jobs::Jobs::<T>::get(id).unwrap().status, JobStatus::Finished { .. }));
	}

	/// The judging deadline with a quorum: the seats that did not reveal (as many as leave
	/// a quorum) are slashed, then the widest case is ruled.
	#[benchmark]
	fn on_deadline_ruling() {
		// The revealing seats agree (a dissent among them could tie the verdict). A
		// committee of fewer than three has no seat to leave silent with a quorum left: its
		// deadline rules nothing (every reveal in rules at once) or extends.
		let results = <T as pallet_jobs::Config>::MaxReplication::get();
		let (owner, id, seats) = case::<T>(results);
		assert!(seats.len() >= 3, "on_deadline_ruling needs a committee of three or more");
		reveal_eval_set::<T>(&owner, id);
		for who in &seats {
			commit::<T>(id, who, &report(results, false));
		}
		let revealing = seats.get(minority(seats.len())..).unwrap_or_default();
		for who in revealing {
			Pallet::<T>::do_reveal_report(id, who.clone(), report(results, false), salt::<T>(who))
				.expect("reveals");
		}
		frame_system::Pallet::<T>::set_block_number(judge_by::<T>(id).saturating_add(One::one()));
		#[block]
		{
			<Pallet<T> as ResultJudge<_, _>>::on_deadline(id);
		}
		assert!(!Cases::<T>::contains_key(id), "a quorum of the committee revealed: the case is ruled");
	}

	/// The judging deadline without a quorum: every seat is slashed (and drops out of the
	/// set), and a fresh committee is drawn from what is left of a full set.
	#[benchmark]
	fn on_deadline_extending() {
		let (_, id, _) = case::<T>(<T as pallet_jobs::Config>::MaxReplication::get());
		assert!(
			T::MaxValidators::get() > T::CommitteeSize::get(),
			"on_deadline_extending needs validators left to draw once the first committee is out"
		);
		frame_system::Pallet::<T>::set_block_number(judge_by::<T>(id).saturating_add(One::one()));
		#[block]
		{
			<Pallet<T> as ResultJudge<_, _>>::on_deadline(id);
		}
		assert_eq!(Cases::<T>::get(id).expect("extended").round, 1);
	}

	impl_benchmark_test_suite!(Pallet, crate::mock::new_bench_ext(), crate::mock::Test);
}
