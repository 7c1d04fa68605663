//! Unit tests: every call, every error, every settlement path. Each test ends with the
//! pallet's invariants checked (`mock::test`).

use crate::{mock::*, Error, Event, Jobs as JobRecords, *};
// The pallet, not its `Jobs` storage map (both are glob-imported).
use crate::mock::Jobs;
use frame_support::{
	assert_noop, assert_ok,
	traits::{fungible::Inspect, Get, Hooks},
	weights::Weight,
};
use sp_core::Pair;
use sp_runtime::DispatchError;

const OWNER: u64 = 1;
const MINER: u64 = 2;
const MINER2: u64 = 3;
const BUDGET: u128 = 10_000;

fn issuance() -> u128 {
	<Balances as Inspect<u64>>::total_issuance()
}

// --- miners ---------------------------------------------------------------------------

/// `MINER` registered and holding the only claim on a job `OWNER` posted.
fn claimed_job() -> JobId {
	register(MINER);
	let job = post(OWNER, 1, BUDGET);
	assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
	job
}

/// A claimed job whose result `MINER` has submitted.
fn delivered_job() -> JobId {
	let job = claimed_job();
	deliver(job, MINER);
	job
}

#[test]
fn register_miner_holds_the_deposit() {
	test(|| {
		register(MINER);
		assert_eq!(held(HoldReason::MinerDeposit, MINER), 100);
		assert_eq!(free(MINER), START - 100);
		let m = Miners::<Test>::get(MINER).unwrap();
		assert_eq!(m.worker_key, worker(MINER).public().0);
		assert_eq!(WorkerKeys::<Test>::get(worker(MINER).public().0), Some(MINER));
		assert_eq!(
			events(),
			vec![Event::MinerRegistered { miner: MINER, worker_key: worker(MINER).public().0, deposit: 100 }]
		);
	});
}

#[test]
fn register_miner_errors() {
	test(|| {
		register(MINER);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER), worker(9).public(), caps()),
			Error::<Test>::AlreadyRegistered
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), worker(MINER).public(), caps()),
			Error::<Test>::WorkerKeyInUse
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), sp_core::sr25519::Public::from_raw([0; 32]), caps()),
			Error::<Test>::InvalidWorkerKey
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), sp_core::sr25519::Public::from_raw([0xff; 32]), caps()),
			Error::<Test>::InvalidWorkerKey
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(POOR), worker(POOR).public(), caps()),
			Error::<Test>::InsufficientBalance
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::none(), worker(7).public(), caps()),
			DispatchError::BadOrigin
		);
	});
}

#[test]
fn update_miner_swaps_key_and_capabilities() {
	test(|| {
		register(MINER);
		let new_key = worker(50).public();
		let mut new_caps = caps();
		new_caps.memory_mib = 80_000;
		assert_ok!(Jobs::update_miner(RuntimeOrigin::signed(MINER), Some(new_key), Some(new_caps.clone())));
		let m = Miners::<Test>::get(MINER).unwrap();
		assert_eq!(m.worker_key, new_key.0);
		assert_eq!(m.capabilities, new_caps);
		assert!(WorkerKeys::<Test>::get(worker(MINER).public().0).is_none(), "old key freed");
		assert_eq!(WorkerKeys::<Test>::get(new_key.0), Some(MINER));
		// The freed key can be registered by someone else.
		assert_ok!(Jobs::register_miner(RuntimeOrigin::signed(MINER2), worker(MINER).public(), caps()));
		// Keeping the same key is fine.
		assert_ok!(Jobs::update_miner(RuntimeOrigin::signed(MINER), Some(new_key), None));
	});
}

#[test]
fn update_miner_errors() {
	test(|| {
		assert_noop!(
			Jobs::update_miner(RuntimeOrigin::signed(MINER), None, Some(caps())),
			Error::<Test>::NotAMiner
		);
		register(MINER);
		register(MINER2);
		assert_noop!(
			Jobs::update_miner(RuntimeOrigin::signed(MINER), Some(worker(MINER2).public()), None),
			Error::<Test>::WorkerKeyInUse
		);
	});
}

#[test]
fn unregister_miner_releases_the_deposit() {
	test(|| {
		register(MINER);
		assert_ok!(Jobs::unregister_miner(RuntimeOrigin::signed(MINER)));
		assert_eq!(free(MINER), START);
		assert_eq!(held(HoldReason::MinerDeposit, MINER), 0);
		assert!(Miners::<Test>::get(MINER).is_none());
		assert!(WorkerKeys::<Test>::get(worker(MINER).public().0).is_none());
		assert_noop!(Jobs::unregister_miner(RuntimeOrigin::signed(MINER)), Error::<Test>::NotAMiner);
	});
}

#[test]
fn unregister_miner_refused_with_active_claims() {
	test(|| {
		claimed_job();
		assert_noop!(Jobs::unregister_miner(RuntimeOrigin::signed(MINER)), Error::<Test>::HasActiveClaims);
	});
}

// --- posting and cancelling ----------------------------------------------------------------

#[test]
fn post_job_escrows_the_budget() {
	test(|| {
		let before = issuance();
		let job = post(OWNER, 2, BUDGET);
		assert_eq!(job, 0);
		assert_eq!(NextJobId::<Test>::get(), 1);
		assert_eq!(held(HoldReason::JobEscrow, OWNER), BUDGET);
		assert_eq!(free(OWNER), START - BUDGET);
		assert_eq!(issuance(), before, "escrow is a hold, not a transfer");
		let j = JobRecords::<Test>::get(job).unwrap();
		assert_eq!((j.reward_per_result, j.escrow, j.status), (BUDGET / 2, BUDGET, JobStatus::Open));
		assert_eq!(DueAt::<Test>::get(51).into_inner(), vec![job], "looked at after submit_by");
		assert_eq!(events(), vec![Event::JobPosted { job_id: 0, owner: OWNER, budget: BUDGET }]);
	});
}

#[test]
fn post_job_rejects_bad_specs() {
	test(|| {
		let post_with = |f: &dyn Fn(&mut JobSpec)| {
			let mut s = spec(1);
			f(&mut s);
			Jobs::post_job(RuntimeOrigin::signed(OWNER), s, BUDGET, deadlines())
		};
		let bad_steps: [&dyn Fn(&mut JobSpec); 4] = [
			&|s| s.steps = 0,
			&|s| s.steps = MAX_STEPS + 1,
			&|s| s.checkpoint_interval = 0,
			&|s| s.checkpoint_interval = 101,
		];
		for f in bad_steps {
			assert_noop!(post_with(f), Error::<Test>::InvalidHyperParameters);
		}
		assert_noop!(post_with(&|s| s.replication = 0), Error::<Test>::InvalidReplication);
		assert_noop!(post_with(&|s| s.replication = 4), Error::<Test>::InvalidReplication);
		assert_noop!(post_with(&|s| s.recipe.uri = Default::default()), Error::<Test>::EmptyUri);
	});
}

#[test]
fn post_job_rejects_bad_deadlines_budgets_and_balances() {
	test(|| {
		run_to_block(10);
		let post_at = |claim_by, submit_by| {
			Jobs::post_job(RuntimeOrigin::signed(OWNER), spec(1), BUDGET, Deadlines { claim_by, submit_by })
		};
		assert_noop!(post_at(10, 50), Error::<Test>::InvalidDeadlines); // claim_by not in the future
		assert_noop!(post_at(60, 50), Error::<Test>::InvalidDeadlines); // claim after submit
		assert_noop!(post_at(20, 1_011), Error::<Test>::InvalidDeadlines); // too long
		assert_ok!(post_at(11, 1_010)); // the bounds themselves are fine
		assert_noop!(
			Jobs::post_job(RuntimeOrigin::signed(OWNER), spec(3), 299, deadlines()),
			Error::<Test>::BudgetTooLow
		);
		assert_noop!(
			Jobs::post_job(RuntimeOrigin::signed(POOR), spec(1), BUDGET, deadlines()),
			Error::<Test>::InsufficientBalance
		);
	});
}

#[test]
fn post_job_moves_a_deadline_past_full_blocks_then_refuses() {
	test(|| {
		// 4 jobs per block, 16 blocks searched: 64 jobs fit around one deadline.
		for _ in 0..64 {
			post(OWNER, 1, 100);
		}
		assert_eq!(DueAt::<Test>::get(51).len(), 4);
		assert_eq!(DueAt::<Test>::get(66).len(), 4);
		assert_noop!(
			Jobs::post_job(RuntimeOrigin::signed(OWNER), spec(1), 100, deadlines()),
			Error::<Test>::TooManyDeadlinesInBlock
		);
	});
}

#[test]
fn cancel_job_refunds_everything() {
	test(|| {
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), job));
		assert_eq!(free(OWNER), START);
		assert_eq!(held(HoldReason::JobEscrow, OWNER), 0);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Cancelled);
		assert!(events().contains(&Event::JobCancelled { job_id: job }));
		assert_noop!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), job), Error::<Test>::JobNotOpen);
		// The due entry of a cancelled job is skipped harmlessly.
		run_to_block(60);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Cancelled);
	});
}

#[test]
fn cancel_job_errors() {
	test(|| {
		assert_noop!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), 7), Error::<Test>::UnknownJob);
		let job = post(OWNER, 2, BUDGET);
		assert_noop!(Jobs::cancel_job(RuntimeOrigin::signed(MINER), job), Error::<Test>::NotJobOwner);
		register(MINER);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		assert_noop!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), job), Error::<Test>::JobHasClaims);
	});
}

// --- claiming ----------------------------------------------------------------------------

#[test]
fn claim_job_holds_collateral() {
	test(|| {
		register(MINER);
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		// 10% of the 5_000 reward.
		assert_eq!(held(HoldReason::ClaimCollateral, MINER), 500);
		assert_eq!(Miners::<Test>::get(MINER).unwrap().active_claims, 1);
		let claim = &JobRecords::<Test>::get(job).unwrap().claims[0];
		assert_eq!((claim.miner, claim.collateral, claim.state.clone()), (MINER, 500, ClaimState::Working));
		assert!(events().contains(&Event::JobClaimed { job_id: job, miner: MINER, collateral: 500 }));
	});
}

#[test]
fn collateral_has_a_floor() {
	test(|| {
		assert_eq!(Jobs::collateral_for(100), 10);
		assert_eq!(Jobs::collateral_for(1_000), 100);
	});
}

#[test]
fn claim_job_errors() {
	test(|| {
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER), 0), Error::<Test>::UnknownJob);
		let job = post(OWNER, 1, BUDGET);
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job), Error::<Test>::NotAMiner);
		register(MINER);
		register(MINER2);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job), Error::<Test>::JobFull);

		let job2 = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job2));
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job2), Error::<Test>::AlreadyClaimed);

		let job3 = post(OWNER, 1, BUDGET);
		assert_ok!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), job3));
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER2), job3), Error::<Test>::JobNotOpen);

		let job4 = post(OWNER, 1, BUDGET);
		run_to_block(21);
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER2), job4), Error::<Test>::ClaimPeriodOver);
	});
}

#[test]
fn claim_job_checks_requirements() {
	test(|| {
		register(MINER);
		let post_req = |req: Requirements| {
			let mut s = spec(1);
			s.requirements = req;
			let id = NextJobId::<Test>::get();
			Jobs::post_job(RuntimeOrigin::signed(OWNER), s, BUDGET, deadlines()).unwrap();
			id
		};
		let other_backend = post_req(Requirements {
			backend: Some(b"cuda-sm90".to_vec().try_into().unwrap()),
			min_memory_mib: 0,
			min_completed_jobs: 0,
		});
		let more_memory =
			post_req(Requirements { backend: None, min_memory_mib: 80_000, min_completed_jobs: 0 });
		let veterans = post_req(Requirements { backend: None, min_memory_mib: 0, min_completed_jobs: 1 });
		let same_backend = post_req(Requirements {
			backend: Some(caps().backend),
			min_memory_mib: 16_384,
			min_completed_jobs: 0,
		});
		for job in [other_backend, more_memory, veterans] {
			assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job), Error::<Test>::RequirementsNotMet);
		}
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), same_backend));
		// The claimable-jobs view agrees.
		let open: Vec<_> = Jobs::claimable_jobs(Some(MINER), 0, 10).into_iter().map(|(id, _)| id).collect();
		assert!(open.is_empty(), "{open:?}");
		let all: Vec<_> = Jobs::claimable_jobs(None, 0, 10).into_iter().map(|(id, _)| id).collect();
		assert_eq!(all, vec![other_backend, more_memory, veterans]);
		assert_eq!(Jobs::claimable_jobs(None, 1, 1).len(), 1, "paged");
	});
}

#[test]
fn claim_job_limits_active_claims_and_checks_balance() {
	test(|| {
		register(MINER);
		for _ in 0..4 {
			let job = post(OWNER, 1, BUDGET);
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		}
		let fifth = post(OWNER, 1, BUDGET);
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(MINER), fifth), Error::<Test>::TooManyActiveClaims);

		// A miner that can pay the deposit but not the collateral.
		let broke = 600;
		assert_ok!(Balances::force_set_balance(RuntimeOrigin::root(), broke, 200));
		register(broke);
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(broke), fifth), Error::<Test>::InsufficientBalance);
	});
}

// --- delivering ---------------------------------------------------------------------------

#[test]
fn submit_result_records_the_delivery() {
	test(|| {
		let job = claimed_job();
		run_to_block(5);
		deliver(job, MINER);
		let claim = &JobRecords::<Test>::get(job).unwrap().claims[0];
		let ClaimState::Submitted { delivery, review_until, on_silence } = &claim.state else {
			panic!("not submitted: {:?}", claim.state)
		};
		assert_eq!((*review_until, *on_silence), (5 + REVIEW, Verdict::Accept));
		assert_eq!(delivery.result.sha256, [9; 32]);
		assert_eq!(delivery.checkpoint_root, [8; 32]);
		assert_eq!(delivery.final_train_loss_ppm, 1_234_567);
		assert!(DueAt::<Test>::get(5 + REVIEW + 1).contains(&job));
		assert!(events().contains(&Event::ResultSubmitted { job_id: job, miner: MINER, result_sha256: [9; 32] }));
	});
}

#[test]
fn submit_result_rejects_forged_and_misdirected_attestations() {
	test(|| {
		register(MINER);
		register(MINER2);
		let job = post(OWNER, 2, BUDGET);
		let other_job = post(OWNER, 2, BUDGET);
		for j in [job, other_job] {
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), j));
		}
		let submit = |who: u64, job_id: JobId, att: Attestation<u64, sp_core::H256>, key: &sp_core::sr25519::Pair| {
			let sig = sign(&att, key);
			Jobs::submit_result(RuntimeOrigin::signed(who), job_id, att, sig)
		};
		let good = attestation(job, MINER);

		// Signed by a key that is not the miner's worker key.
		assert_noop!(submit(MINER, job, good.clone(), &worker(77)), Error::<Test>::BadSignature);
		// A valid signature over one job's attestation, replayed with another job's id.
		let sig = sign(&good, &worker(MINER));
		let mut replayed = good.clone();
		replayed.job_id = other_job;
		assert_noop!(
			Jobs::submit_result(RuntimeOrigin::signed(MINER), other_job, replayed, sig),
			Error::<Test>::BadSignature
		);
		// Attestation for another job than the call names.
		assert_noop!(submit(MINER, other_job, good.clone(), &worker(MINER)), Error::<Test>::WrongJob);
		// Another chain's attestation.
		let mut other_chain = good.clone();
		other_chain.genesis_hash = sp_core::H256::repeat_byte(1);
		assert_noop!(submit(MINER, job, other_chain, &worker(MINER)), Error::<Test>::WrongChain);
		// Naming another miner (to be paid in its place).
		let mut other_miner = good.clone();
		other_miner.miner = MINER2;
		assert_noop!(submit(MINER, job, other_miner, &worker(MINER)), Error::<Test>::WrongMiner);
		// Another recipe than the job's (trained something else).
		let mut other_recipe = good.clone();
		other_recipe.recipe_sha256 = [2; 32];
		assert_noop!(submit(MINER, job, other_recipe, &worker(MINER)), Error::<Test>::WrongRecipe);
		// Fewer steps than the job asks for.
		let mut short = good.clone();
		short.steps = 99;
		assert_noop!(submit(MINER, job, short, &worker(MINER)), Error::<Test>::WrongSteps);
		// A registered miner without a claim.
		assert_noop!(submit(MINER2, job, attestation(job, MINER2), &worker(MINER2)), Error::<Test>::NoClaim);
		// Not a miner at all.
		assert_noop!(submit(OWNER, job, attestation(job, OWNER), &worker(OWNER)), Error::<Test>::NotAMiner);
		assert_noop!(submit(MINER, 42, attestation(42, MINER), &worker(MINER)), Error::<Test>::UnknownJob);

		// The real one goes through, once.
		assert_ok!(submit(MINER, job, good.clone(), &worker(MINER)));
		assert_noop!(submit(MINER, job, good, &worker(MINER)), Error::<Test>::NotWorking);
	});
}

#[test]
fn submit_result_after_the_deadline_is_refused() {
	test(|| {
		register(MINER);
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		System::set_block_number(51); // past submit_by, before on_idle settles it
		let att = attestation(job, MINER);
		let sig = sign(&att, &worker(MINER));
		assert_noop!(
			Jobs::submit_result(RuntimeOrigin::signed(MINER), job, att, sig),
			Error::<Test>::SubmissionPeriodOver
		);
	});
}

// --- settlement ---------------------------------------------------------------------------

#[test]
fn accepted_result_pays_miner_and_treasury_exactly() {
	test(|| {
		let job = delivered_job();
		let before = issuance();
		assert_ok!(Jobs::accept_result(RuntimeOrigin::signed(OWNER), job, MINER));
		// 5% fee of the 10_000 reward.
		assert_eq!(free(MINER), START - 100 + 9_500, "paid, collateral released, deposit held");
		assert_eq!(free(TREASURY), START + 500);
		assert_eq!(free(OWNER), START - BUDGET);
		assert_eq!(held(HoldReason::JobEscrow, OWNER), 0);
		assert_eq!(held(HoldReason::ClaimCollateral, MINER), 0);
		assert_eq!(issuance(), before);
		let j = JobRecords::<Test>::get(job).unwrap();
		assert_eq!(j.status, JobStatus::Finished, "single replica claimed and settled");
		assert!(matches!(j.claims[0].state, ClaimState::Paid { .. }));
		let m = Miners::<Test>::get(MINER).unwrap();
		assert_eq!((m.active_claims, m.completed, m.failed), (0, 1, 0));
		assert!(events().contains(&Event::ResultAccepted { job_id: job, miner: MINER, paid: 9_500, fee: 500 }));
		assert!(events().contains(&Event::JobFinished { job_id: job, refunded: 0 }));
	});
}

#[test]
fn silence_accepts_after_the_review_period() {
	test(|| {
		let job = claimed_job();
		run_to_block(5);
		deliver(job, MINER);
		run_to_block(5 + REVIEW);
		assert!(matches!(JobRecords::<Test>::get(job).unwrap().claims[0].state, ClaimState::Submitted { .. }));
		assert_noop!(
			Jobs::settle_expired(RuntimeOrigin::signed(MINER2), job),
			Error::<Test>::NothingDue
		);
		run_to_block(5 + REVIEW + 1);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished);
		assert_eq!(free(MINER), START - 100 + 9_500);
		assert_noop!(
			Jobs::accept_result(RuntimeOrigin::signed(OWNER), job, MINER),
			Error::<Test>::NotUnderReview
		);
	});
}

#[test]
fn owner_review_errors() {
	test(|| {
		register(MINER);
		register(MINER2);
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER2), job));
		assert_noop!(Jobs::accept_result(RuntimeOrigin::signed(OWNER), 9, MINER), Error::<Test>::UnknownJob);
		assert_noop!(
			Jobs::accept_result(RuntimeOrigin::signed(OWNER), job, MINER),
			Error::<Test>::NotUnderReview
		);
		assert_noop!(Jobs::accept_result(RuntimeOrigin::signed(OWNER), job, 4), Error::<Test>::NoClaim);
		deliver(job, MINER);
		assert_noop!(
			Jobs::accept_result(RuntimeOrigin::signed(MINER2), job, MINER),
			Error::<Test>::NotJobOwner
		);
		System::set_block_number(1 + REVIEW + 1);
		assert_noop!(
			Jobs::reject_result(RuntimeOrigin::signed(OWNER), job, MINER),
			Error::<Test>::ReviewPeriodOver
		);
		System::set_block_number(2);
		OwnerMayReview::set(false);
		assert_noop!(
			Jobs::accept_result(RuntimeOrigin::signed(OWNER), job, MINER),
			Error::<Test>::OwnerMayNotReview
		);
		OwnerMayReview::set(true);
	});
}

#[test]
fn rejection_upheld_refunds_owner_and_slashes_collateral() {
	test(|| {
		let job = delivered_job();
		assert_ok!(Jobs::reject_result(RuntimeOrigin::signed(OWNER), job, MINER));
		assert!(matches!(JobRecords::<Test>::get(job).unwrap().claims[0].state, ClaimState::Disputed { .. }));
		assert!(events().contains(&Event::ResultDisputed { job_id: job, miner: MINER }));
		// A dispute is not settled by silence.
		run_to_block(200);
		assert!(matches!(JobRecords::<Test>::get(job).unwrap().claims[0].state, ClaimState::Disputed { .. }));

		let before = issuance();
		assert_noop!(
			Jobs::resolve_dispute(RuntimeOrigin::signed(OWNER), job, MINER, Verdict::Reject),
			DispatchError::BadOrigin
		);
		assert_ok!(Jobs::resolve_dispute(RuntimeOrigin::root(), job, MINER, Verdict::Reject));
		assert_eq!(free(OWNER), START, "owner refunded in full");
		assert_eq!(free(MINER), START - 100 - 1_000, "collateral (10% of 10_000) slashed");
		assert_eq!(held(HoldReason::ClaimCollateral, MINER), 0);
		assert_eq!(issuance(), before - 1_000, "the slash is burned");
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished);
		let m = Miners::<Test>::get(MINER).unwrap();
		assert_eq!((m.active_claims, m.completed, m.failed), (0, 0, 1));
		assert!(events().contains(&Event::ResultRejected {
			job_id: job,
			miner: MINER,
			refunded: BUDGET,
			slashed: 1_000
		}));
		assert_noop!(
			Jobs::resolve_dispute(RuntimeOrigin::root(), job, MINER, Verdict::Reject),
			Error::<Test>::NotDisputed
		);
	});
}

#[test]
fn rejection_overturned_pays_the_miner() {
	test(|| {
		let job = delivered_job();
		assert_ok!(Jobs::reject_result(RuntimeOrigin::signed(OWNER), job, MINER));
		assert_noop!(
			Jobs::resolve_dispute(RuntimeOrigin::root(), job, OWNER, Verdict::Accept),
			Error::<Test>::NoClaim
		);
		assert_noop!(
			Jobs::resolve_dispute(RuntimeOrigin::root(), 5, MINER, Verdict::Accept),
			Error::<Test>::UnknownJob
		);
		assert_ok!(Jobs::resolve_dispute(RuntimeOrigin::root(), job, MINER, Verdict::Accept));
		assert_eq!(free(MINER), START - 100 + 9_500);
		assert_eq!(free(TREASURY), START + 500);
	});
}

#[test]
fn no_show_loses_part_of_its_collateral_and_the_owner_is_refunded() {
	test(|| {
		register(MINER);
		register(MINER2);
		// Three replicas at 3_333 each (one planck of rounding stays in escrow).
		let job = post(OWNER, 3, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER2), job));
		deliver(job, MINER2);
		assert_ok!(Jobs::accept_result(RuntimeOrigin::signed(OWNER), job, MINER2));
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Open, "MINER still working");

		let before = issuance();
		run_to_block(51);
		let j = JobRecords::<Test>::get(job).unwrap();
		assert_eq!(j.status, JobStatus::Finished);
		assert_eq!(j.claims[0].state, ClaimState::Expired);
		// Collateral 333 (10% of 3_333); half slashed (166), the rest released.
		assert_eq!(free(MINER), START - 100 - 166);
		assert_eq!(issuance(), before - 166);
		// The owner paid exactly one reward.
		assert_eq!(free(OWNER), START - 3_333);
		assert_eq!(held(HoldReason::JobEscrow, OWNER), 0);
		assert!(events().contains(&Event::ClaimExpired { job_id: job, miner: MINER, refunded: 3_333, slashed: 166 }));
		// Unclaimed replica + rounding.
		assert!(events().contains(&Event::JobFinished { job_id: job, refunded: 3_334 }));
	});
}

#[test]
fn unclaimed_job_is_refunded_after_its_deadline() {
	test(|| {
		let job = post(OWNER, 2, BUDGET);
		run_to_block(51);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished);
		assert_eq!(free(OWNER), START);
		assert!(DueAt::<Test>::get(51).is_empty() && DueCursor::<Test>::get() == Some(52));
	});
}

#[test]
fn settle_expired_is_permissionless_and_needs_something_due() {
	test(|| {
		let job = claimed_job();
		assert_noop!(Jobs::settle_expired(RuntimeOrigin::signed(9), job), Error::<Test>::NothingDue);
		assert_noop!(Jobs::settle_expired(RuntimeOrigin::signed(9), 77), Error::<Test>::UnknownJob);
		// Past the deadline, before on_idle ran.
		System::set_block_number(51);
		assert_ok!(Jobs::settle_expired(RuntimeOrigin::signed(9), job));
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished);
		assert_noop!(Jobs::settle_expired(RuntimeOrigin::signed(9), job), Error::<Test>::JobNotOpen);
		// on_idle then finds nothing left to do for it.
		Jobs::on_idle(51, Weight::MAX);
		assert_eq!(free(OWNER), START);
	});
}

#[test]
fn on_idle_work_is_bounded_by_the_weight_it_is_given() {
	test(|| {
		for _ in 0..3 {
			post(OWNER, 1, 1_000);
		}
		System::set_block_number(51);
		let per_job = <() as WeightInfo>::settle_expired(3);
		// Enough for the cursor read, one block and one job.
		let db: frame_support::weights::RuntimeDbWeight = <Test as frame_system::Config>::DbWeight::get();
		let budget = db.reads(1) + db.reads_writes(1, 2) + per_job;
		let used = Jobs::on_idle(51, budget);
		assert!(used.all_lte(budget), "used {used:?} of {budget:?}");
		let finished = (0..3).filter(|id| JobRecords::<Test>::get(id).unwrap().status == JobStatus::Finished).count();
		assert_eq!(finished, 1);
		assert_eq!(DueAt::<Test>::get(51).len(), 2, "the rest waits");
		assert_eq!(Jobs::on_idle(51, Weight::zero()), Weight::zero());
		Jobs::on_idle(52, Weight::MAX);
		assert!((0..3).all(|id| JobRecords::<Test>::get(id).unwrap().status == JobStatus::Finished));
		assert_eq!(free(OWNER), START);
	});
}

#[test]
fn verdicts_from_another_judge_settle_results() {
	test(|| {
		register(MINER);
		register(MINER2);
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER2), job));
		assert_noop!(Jobs::apply_verdict(job, &MINER, Verdict::Accept), Error::<Test>::NotUnderReview);
		deliver(job, MINER);
		deliver(job, MINER2);
		assert_ok!(Jobs::apply_verdict(job, &MINER, Verdict::Accept));
		assert_ok!(Jobs::apply_verdict(job, &MINER2, Verdict::Reject));
		assert_eq!(free(MINER), START - 100 + 4_750);
		assert_eq!(free(MINER2), START - 100 - 500);
		assert_eq!(free(OWNER), START - 5_000);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished);
	});
}

#[test]
fn attestation_message_is_the_documented_encoding() {
	test(|| {
		let att = attestation(3, MINER);
		let msg = Jobs::attestation_message(&att);
		let mut expected = b"molting/attestation/v2".to_vec();
		expected.extend(3u64.to_le_bytes());
		expected.extend([0x42; 32]);
		expected.extend(MINER.to_le_bytes()); // u64 accounts in the mock; 32 bytes on chain
		expected.extend([1; 32]);
		expected.extend([9; 32]);
		expected.push(27 << 2); // compact length of the 27-byte URI
		expected.extend(b"https://example.org/adapter");
		expected.extend([8; 32]);
		expected.extend(100u32.to_le_bytes());
		expected.extend(1_234_567u32.to_le_bytes());
		assert_eq!(msg, expected);
	});
}
