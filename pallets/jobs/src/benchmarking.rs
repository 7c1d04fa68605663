//! Benchmarks of every call, each at the worst case its bounds allow, and of closing a
//! job's submissions (the `on_idle` step that hands the results to the judge). The setup
//! helpers are public: the judge's benchmarks build their cases with them.

use super::*;
use crate::pallet::{BalanceOf, DueJobs, Jobs as JobsMap, Miners, NextJobId};
use alloc::vec;
use frame_benchmarking::v2::*;
use frame_support::{
	traits::{fungible::Mutate, Get},
	BoundedVec,
};
use frame_system::{pallet_prelude::BlockNumberFor, RawOrigin};
use sp_core::{crypto::KeyTypeId, sr25519};
use sp_runtime::traits::{Bounded, One, Saturating};

/// Key type of the benchmark's worker keys in the host keystore.
pub const WORKER: KeyTypeId = KeyTypeId(*b"mwrk");

/// Account `name`/`index`, with more than any benchmark spends.
pub fn funded<T: Config>(name: &'static str, index: u32) -> T::AccountId {
	let who: T::AccountId = account(name, index, 0);
	let plenty = BalanceOf::<T>::max_value() / 1_000u32.into();
	T::Currency::set_balance(&who, plenty);
	who
}

/// A URI of `len` bytes.
pub fn uri(len: u32) -> Uri {
	BoundedVec::try_from(vec![b'u'; len as usize]).expect("within MAX_URI_LEN")
}

/// The largest capabilities record.
pub fn worst_caps() -> Capabilities {
	Capabilities {
		backend: BoundedVec::try_from(vec![b'b'; MAX_BACKEND_LEN as usize]).unwrap(),
		memory_mib: u32::MAX,
	}
}

/// The costliest job: the longest URIs, ranked payouts, the widest replication.
pub fn worst_spec<T: Config>() -> JobSpec {
	let content = |tag| ContentRef { sha256: [tag; 32], uri: uri(MAX_URI_LEN) };
	JobSpec {
		work: Work::Compute { recipe: content(1), steps: 1_000, checkpoint_interval: 100 },
		eval_commitment: [4; 32],
		min_improvement: sp_runtime::Perbill::from_percent(1),
		payout: PayoutRule::Ranked,
		requirements: Requirements {
			backend: Some(worst_caps().backend),
			min_memory_mib: 1,
			min_completed_jobs: 0,
		},
		replication: T::MaxReplication::get().min(u8::MAX as u32) as u8,
	}
}

/// `key`'s proof of possession for `who`, signed in the host keystore.
pub fn key_proof<T: Config>(who: &T::AccountId, key: &sr25519::Public) -> sr25519::Signature {
	sp_io::crypto::sr25519_sign(WORKER, key, &key_proof_message(WORKER_KEY_CONTEXT, who)).expect("the key is in the keystore")
}

/// A registered miner with a worker key in the host keystore.
pub fn miner<T: Config>(index: u32) -> (T::AccountId, sr25519::Public) {
	let who = funded::<T>("miner", index);
	let key = sp_io::crypto::sr25519_generate(WORKER, None);
	Pallet::<T>::do_register_miner(who.clone(), key.0, key_proof::<T>(&who, &key).0, worst_caps()).expect("registers");
	(who, key)
}

/// Deadlines from now that leave the judge its shortest judging period.
pub fn deadlines<T: Config>() -> Deadlines<BlockNumberFor<T>> {
	let now = frame_system::Pallet::<T>::block_number();
	let judge_by = now + 30u32.into() + T::Judge::min_judging_period();
	Deadlines { claim_by: now + 10u32.into(), submit_by: now + 20u32.into(), reveal_by: now + 30u32.into(), judge_by }
}

/// A job of the widest replication, posted by a fresh owner.
pub fn job<T: Config>() -> (T::AccountId, JobId) {
	job_with::<T>(worst_spec::<T>())
}

/// A job of `spec`, posted by a fresh owner.
pub fn job_with<T: Config>(spec: JobSpec) -> (T::AccountId, JobId) {
	let owner = funded::<T>("owner", 0);
	let budget = T::MinReward::get().saturating_mul(1_000u32.into());
	let id = Pallet::<T>::do_post_job(owner.clone(), spec, budget, deadlines::<T>()).expect("posts");
	(owner, id)
}

/// A registered miner, its worker key, for each claim.
pub type Claimers<T> = alloc::vec::Vec<(<T as frame_system::Config>::AccountId, sr25519::Public)>;

/// A job with `claims` miners on it; returns the owner, the job and the miners.
pub fn claimed_job<T: Config>(claims: u32) -> (T::AccountId, JobId, Claimers<T>) {
	claimed_job_with::<T>(worst_spec::<T>(), claims)
}

/// A job of `spec` with `claims` miners on it.
pub fn claimed_job_with<T: Config>(spec: JobSpec, claims: u32) -> (T::AccountId, JobId, Claimers<T>) {
	let (owner, id) = job_with::<T>(spec);
	let miners: alloc::vec::Vec<_> = (0..claims).map(miner::<T>).collect();
	for (who, _) in &miners {
		Pallet::<T>::do_claim_job(who.clone(), id).expect("claims");
	}
	(owner, id, miners)
}

/// Miner `index`'s attestation: its own result and root (no duplicate of another's).
pub fn signed_attestation<T: Config>(
	id: JobId,
	who: &T::AccountId,
	key: &sr25519::Public,
	index: u32,
) -> (AttestationOf<T>, sr25519::Signature) {
	let mut result = [9; 32];
	result[..4].copy_from_slice(&index.to_le_bytes());
	let mut root = [8; 32];
	root[..4].copy_from_slice(&index.to_le_bytes());
	let attestation = Attestation {
		job_id: id,
		genesis_hash: Pallet::<T>::genesis_hash(),
		miner: who.clone(),
		recipe_sha256: [1; 32],
		result_sha256: result,
		result_uri: uri(MAX_URI_LEN),
		checkpoint_root: root,
		steps: 1_000,
		checkpoint_interval: 100,
		final_train_loss_ppm: 1,
	};
	let message = Pallet::<T>::attestation_message(&attestation);
	let signature = sp_io::crypto::sr25519_sign(WORKER, key, &message).expect("key in keystore");
	(attestation, signature)
}

/// A job with `claims` miners that all delivered.
pub fn delivered_job<T: Config>(claims: u32) -> (T::AccountId, JobId, Claimers<T>) {
	delivered_job_with::<T>(worst_spec::<T>(), claims)
}

/// A job of `spec` with `claims` miners that all delivered.
pub fn delivered_job_with<T: Config>(spec: JobSpec, claims: u32) -> (T::AccountId, JobId, Claimers<T>) {
	let (owner, id, miners) = claimed_job_with::<T>(spec, claims);
	for (i, (who, key)) in miners.iter().enumerate() {
		let (att, sig) = signed_attestation::<T>(id, who, key, i as u32);
		Pallet::<T>::do_submit_result(who.clone(), id, att, sig).expect("delivers");
	}
	(owner, id, miners)
}

/// Moves to the first block after `id`'s submission deadline and closes its submissions
/// (the judge opens its case).
pub fn close_submissions_of<T: Config>(id: JobId) {
	let after = JobsMap::<T>::get(id).expect("the job exists").deadlines.submit_by.saturating_add(One::one());
	frame_system::Pallet::<T>::set_block_number(after);
	Pallet::<T>::process_job(id, after).expect("closes submissions");
}

#[benchmarks]
mod benches {
	use super::*;

	#[benchmark]
	fn register_miner() {
		let who = funded::<T>("miner", 0);
		let key = sp_io::crypto::sr25519_generate(WORKER, None);
		let proof = key_proof::<T>(&who, &key);
		#[extrinsic_call]
		_(RawOrigin::Signed(who.clone()), key, proof, worst_caps());
		assert!(Miners::<T>::contains_key(&who));
	}

	#[benchmark]
	fn update_miner() {
		let (who, _) = miner::<T>(0);
		let new_key = sp_io::crypto::sr25519_generate(WORKER, None);
		let proof = key_proof::<T>(&who, &new_key);
		#[extrinsic_call]
		_(RawOrigin::Signed(who.clone()), Some((new_key, proof)), Some(worst_caps()));
		assert_eq!(Miners::<T>::get(&who).unwrap().worker_key, new_key.0);
	}

	#[benchmark]
	fn unregister_miner() {
		let (who, _) = miner::<T>(0);
		#[extrinsic_call]
		_(RawOrigin::Signed(who.clone()));
		assert!(!Miners::<T>::contains_key(&who));
	}

	#[benchmark]
	fn post_job() {
		let owner = funded::<T>("owner", 0);
		let d = deadlines::<T>();
		// The due queue is a map: other jobs due in the same block cost nothing more.
		for other in 0..100u64 {
			DueJobs::<T>::insert(d.submit_by.saturating_add(One::one()), u64::MAX - other, ());
		}
		let budget = T::MinReward::get().saturating_mul(1_000u32.into());
		#[extrinsic_call]
		_(RawOrigin::Signed(owner), worst_spec::<T>(), budget, d);
		assert_eq!(NextJobId::<T>::get(), 1);
	}

	#[benchmark]
	fn cancel_job() {
		let (owner, id) = job::<T>();
		#[extrinsic_call]
		_(RawOrigin::Signed(owner), id);
		assert!(matches!(JobsMap::<T>::get(id).unwrap().status, JobStatus::Cancelled { .. }));
	}

	#[benchmark]
	fn claim_job(r: Linear<1, { T::MaxReplication::get() }>) {
		let (_, id, _) = claimed_job::<T>(r - 1);
		let (who, _) = miner::<T>(r);
		#[extrinsic_call]
		_(RawOrigin::Signed(who), id);
		assert_eq!(JobsMap::<T>::get(id).unwrap().claims.len() as u32, r);
	}

	#[benchmark]
	fn submit_result(r: Linear<1, { T::MaxReplication::get() }>) {
		// A job of `r` replicas: the last delivery also closes submissions early (moves
		// the job's due entry), at every `r`.
		let mut spec = worst_spec::<T>();
		spec.replication = r as u8;
		let (_, id, miners) = claimed_job_with::<T>(spec, r);
		// Every other claim delivered already: the duplicate check reads them all.
		for (i, (who, key)) in miners.iter().enumerate().take(r as usize - 1) {
			let (att, sig) = signed_attestation::<T>(id, who, key, i as u32);
			Pallet::<T>::do_submit_result(who.clone(), id, att, sig).expect("delivers");
		}
		let (who, key) = miners.last().cloned().unwrap();
		let (att, sig) = signed_attestation::<T>(id, &who, &key, r - 1);
		#[extrinsic_call]
		_(RawOrigin::Signed(who), id, att, sig);
		let job = JobsMap::<T>::get(id).unwrap();
		assert!(matches!(job.claims[r as usize - 1].state, ClaimState::Submitted { .. }));
	}

	#[benchmark]
	fn close_submissions(r: Linear<1, { T::MaxReplication::get() }>) {
		// Every claim delivered: the judge takes the widest case, from the fullest set of
		// judges it can have. (The ruling's settlement is part of the judge's weights.)
		T::Judge::prepare_for_cases();
		let (_, id, _) = delivered_job::<T>(r);
		let after = JobsMap::<T>::get(id).unwrap().deadlines.submit_by.saturating_add(One::one());
		frame_system::Pallet::<T>::set_block_number(after);
		#[block]
		{
			Pallet::<T>::process_job(id, after).expect("closes submissions");
		}
		assert!(matches!(JobsMap::<T>::get(id).unwrap().status, JobStatus::Judging { .. }));
	}

	#[benchmark]
	fn settle_expired(r: Linear<1, { T::MaxReplication::get() }>) {
		// Every claimer failed to deliver: each claim is expired (refund, slash, release),
		// then the job is finished.
		let (_, id, _) = claimed_job::<T>(r);
		let submit_by = JobsMap::<T>::get(id).unwrap().deadlines.submit_by;
		frame_system::Pallet::<T>::set_block_number(submit_by.saturating_add(One::one()));
		let caller = funded::<T>("caller", 0);
		#[extrinsic_call]
		_(RawOrigin::Signed(caller), id);
		assert!(matches!(JobsMap::<T>::get(id).unwrap().status, JobStatus::Finished { .. }));
	}

	impl_benchmark_test_suite!(Pallet, crate::mock::new_bench_ext(), crate::mock::Test);
}
