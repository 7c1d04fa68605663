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
use sp_runtime::{DispatchError, Perbill};

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

/// A claimed job whose result `MINER` has submitted, in the last block of submissions (so
/// they close on time, not early).
fn delivered_job() -> JobId {
	let job = claimed_job();
	run_to_block(SUBMIT_BY);
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
			Jobs::register_miner(RuntimeOrigin::signed(MINER), worker(9).public(), proof(MINER, &worker(9)), caps()),
			Error::<Test>::AlreadyRegistered
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), worker(MINER).public(), proof(MINER2, &worker(MINER)), caps()),
			Error::<Test>::WorkerKeyInUse
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), sp_core::sr25519::Public::from_raw([0; 32]), proof(MINER2, &worker(MINER2)), caps()),
			Error::<Test>::InvalidWorkerKey
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), sp_core::sr25519::Public::from_raw([0xff; 32]), proof(MINER2, &worker(MINER2)), caps()),
			Error::<Test>::InvalidWorkerKey
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(POOR), worker(POOR).public(), proof(POOR, &worker(POOR)), caps()),
			Error::<Test>::InsufficientBalance
		);
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::none(), worker(7).public(), proof(7, &worker(7)), caps()),
			DispatchError::BadOrigin
		);
	});
}

#[test]
fn a_stranger_cannot_register_someone_elses_worker_key_first() {
	test(|| {
		// MINER's registration, seen in the pool: its key and its proof (made for MINER).
		let (key, seen) = (worker(MINER).public(), proof(MINER, &worker(MINER)));
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), key, seen, caps()),
			Error::<Test>::BadKeyProof
		);
		// A proof signed by the stranger's own key is not the key's.
		assert_noop!(
			Jobs::register_miner(RuntimeOrigin::signed(MINER2), key, proof(MINER2, &worker(MINER2)), caps()),
			Error::<Test>::BadKeyProof
		);
		// The key's holder registers it.
		assert_ok!(Jobs::register_miner(RuntimeOrigin::signed(MINER), key, seen, caps()));
		assert_eq!(WorkerKeys::<Test>::get(key.0), Some(MINER));
	});
}

#[test]
fn update_miner_swaps_key_and_capabilities() {
	test(|| {
		register(MINER);
		let new_key = worker(50).public();
		let mut new_caps = caps();
		new_caps.memory_mib = 80_000;
		assert_noop!(
			Jobs::update_miner(RuntimeOrigin::signed(MINER), Some((new_key, proof(MINER2, &worker(50)))), None),
			Error::<Test>::BadKeyProof
		);
		assert_ok!(Jobs::update_miner(RuntimeOrigin::signed(MINER), Some((new_key, proof(MINER, &worker(50)))), Some(new_caps.clone())));
		let m = Miners::<Test>::get(MINER).unwrap();
		assert_eq!(m.worker_key, new_key.0);
		assert_eq!(m.capabilities, new_caps);
		assert!(WorkerKeys::<Test>::get(worker(MINER).public().0).is_none(), "old key freed");
		assert_eq!(WorkerKeys::<Test>::get(new_key.0), Some(MINER));
		// The freed key can be registered by someone else.
		assert_ok!(Jobs::register_miner(RuntimeOrigin::signed(MINER2), worker(MINER).public(), proof(MINER2, &worker(MINER)), caps()));
		// Keeping the same key is fine.
		assert_ok!(Jobs::update_miner(RuntimeOrigin::signed(MINER), Some((new_key, proof(MINER, &worker(50)))), None));
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
			Jobs::update_miner(RuntimeOrigin::signed(MINER), Some((worker(MINER2).public(), proof(MINER, &worker(MINER2)))), None),
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
		assert_eq!((j.reward_per_result, j.escrow, j.released, j.status), (BUDGET / 2, BUDGET, 0, JobStatus::Open));
		assert!(DueJobs::<Test>::contains_key(SUBMIT_BY + 1, job), "looked at after submit_by");
		assert_eq!(j.next_due, SUBMIT_BY + 1);
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
		let compute = |steps, checkpoint_interval| {
			move |s: &mut JobSpec| s.work = Work::Compute { recipe: content(1), steps, checkpoint_interval }
		};
		let contest = |max_steps, max_checkpoint_interval| {
			move |s: &mut JobSpec| {
				s.work = Work::Contest { bounds: content(2), max_steps, max_checkpoint_interval }
			}
		};
		let bad_steps: [&dyn Fn(&mut JobSpec); 8] = [
			&compute(0, 1),
			&compute(MAX_STEPS + 1, 10),
			&compute(100, 0),
			&compute(100, 101),
			&contest(0, 1),
			&contest(MAX_STEPS + 1, 10),
			&contest(100, 0),
			&contest(100, 101),
		];
		for f in bad_steps {
			assert_noop!(post_with(f), Error::<Test>::InvalidHyperParameters);
		}
		assert_noop!(post_with(&|s| s.replication = 0), Error::<Test>::InvalidReplication);
		assert_noop!(post_with(&|s| s.replication = 4), Error::<Test>::InvalidReplication);
		let no_uri = ContentRef { sha256: [1; 32], uri: Default::default() };
		assert_noop!(
			post_with(&|s| s.work = Work::Compute { recipe: no_uri.clone(), steps: 100, checkpoint_interval: 10 }),
			Error::<Test>::EmptyUri
		);
		assert_noop!(
			post_with(&|s| s.work = Work::Contest { bounds: no_uri.clone(), max_steps: 100, max_checkpoint_interval: 10 }),
			Error::<Test>::EmptyUri
		);
		assert_ok!(post_with(&contest(100, 100)));
		assert_noop!(
			post_with(&|s| s.min_improvement = Perbill::from_parts(500_000_001)),
			Error::<Test>::InvalidQualityBar
		);
		assert_ok!(post_with(&|s| s.min_improvement = MAX_MIN_IMPROVEMENT));
	});
}

#[test]
fn post_job_rejects_bad_deadlines_budgets_and_balances() {
	test(|| {
		run_to_block(10);
		let post_at = |claim_by, submit_by, reveal_by, judge_by| {
			let d = Deadlines { claim_by, submit_by, reveal_by, judge_by };
			Jobs::post_job(RuntimeOrigin::signed(OWNER), spec(1), BUDGET, d)
		};
		assert_noop!(post_at(10, 50, 60, 80), Error::<Test>::InvalidDeadlines); // claim_by not in the future
		assert_noop!(post_at(60, 50, 60, 80), Error::<Test>::InvalidDeadlines); // claim after submit
		assert_noop!(post_at(20, 50, 50, 80), Error::<Test>::InvalidDeadlines); // reveal not after submit
		assert_noop!(post_at(20, 50, 51, 80), Error::<Test>::InvalidDeadlines); // no block to reveal in after the close
		assert_noop!(post_at(20, 50, 80, 80), Error::<Test>::InvalidDeadlines); // judge not after reveal
		assert_noop!(post_at(20, 50, 71, 80), Error::<Test>::InvalidDeadlines); // judging too short for the judge
		assert_noop!(post_at(20, 50, 60, 1_011), Error::<Test>::InvalidDeadlines); // too long
		assert_ok!(post_at(11, 11, 13, 1_010)); // the bounds themselves are fine
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
fn no_number_of_jobs_due_in_one_block_keeps_a_job_out() {
	test(|| {
		// Posting and cancelling jobs costs nothing but fees; it must not fill anything
		// another owner needs (the old queue had 4 slots per block).
		for _ in 0..200 {
			let id = post(OWNER, 1, 100);
			assert_ok!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), id));
			post(OWNER, 1, 100);
		}
		let job = post(MINER2, 1, BUDGET);
		assert!(DueJobs::<Test>::contains_key(SUBMIT_BY + 1, job));
		assert_eq!(DueJobs::<Test>::iter_prefix(SUBMIT_BY + 1).count(), 201);
		register(MINER);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		run_to_block(SUBMIT_BY);
		deliver(job, MINER);
		run_to_block(SUBMIT_BY + 1);
		assert!(matches!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Judging { .. }));
	});
}

#[test]
fn cancel_job_refunds_everything() {
	test(|| {
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), job));
		assert_eq!(free(OWNER), START);
		assert_eq!(held(HoldReason::JobEscrow, OWNER), 0);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Cancelled { at: 1 });
		assert!(events().contains(&Event::JobCancelled { job_id: job }));
		assert_noop!(Jobs::cancel_job(RuntimeOrigin::signed(OWNER), job), Error::<Test>::JobNotOpen);
		// Its one due entry is now its pruning, after the retention period.
		assert!(!DueJobs::<Test>::contains_key(SUBMIT_BY + 1, job));
		run_to_block(RETAIN);
		assert!(JobRecords::<Test>::get(job).is_some());
		run_to_block(RETAIN + 1);
		assert!(JobRecords::<Test>::get(job).is_none(), "pruned");
		assert!(events().contains(&Event::JobPruned { job_id: job }));
		assert_eq!(FORGOTTEN.with(|f| f.borrow().clone()), vec![job]);
		assert_eq!(DueJobs::<Test>::iter().count(), 0);
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
		let ClaimState::Submitted { delivery } = &claim.state else {
			panic!("not submitted: {:?}", claim.state)
		};
		let result = [100 + MINER as u8; 32];
		assert_eq!(delivery.result.sha256, result);
		assert_eq!(delivery.checkpoint_root, [50 + MINER as u8; 32]);
		assert_eq!((delivery.steps, delivery.checkpoint_interval, delivery.segments()), (100, 10, 10));
		assert_eq!(delivery.final_train_loss_ppm, 1_234_567);
		assert_eq!(delivery.submitted_at, 5);
		assert!(events().contains(&Event::ResultSubmitted { job_id: job, miner: MINER, result_sha256: result }));
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
		// Fewer steps than the job asks for, or another checkpoint interval.
		let mut short = good.clone();
		short.steps = 99;
		assert_noop!(submit(MINER, job, short, &worker(MINER)), Error::<Test>::WrongSteps);
		let mut sparse = good.clone();
		sparse.checkpoint_interval = 20;
		assert_noop!(submit(MINER, job, sparse, &worker(MINER)), Error::<Test>::WrongSteps);
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
		System::set_block_number(SUBMIT_BY + 1); // past submit_by, before on_idle settles it
		let att = attestation(job, MINER);
		let sig = sign(&att, &worker(MINER));
		assert_noop!(
			Jobs::submit_result(RuntimeOrigin::signed(MINER), job, att, sig),
			Error::<Test>::SubmissionPeriodOver
		);
	});
}

// --- settlement ---------------------------------------------------------------------------

// --- judging and settlement ----------------------------------------------------------

/// `MINER` and `MINER2` each deliver a result to a 2-replica job of `OWNER`'s; the judge
/// will rule `grades`. Returns the job once judged.
fn judged_pair(grades: Vec<Grade>) -> JobId {
	register(MINER);
	register(MINER2);
	let job = post(OWNER, 2, BUDGET);
	for m in [MINER, MINER2] {
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(m), job));
	}
	run_to_block(SUBMIT_BY);
	for m in [MINER, MINER2] {
		deliver(job, m);
	}
	rule(job, Ruling::Grades(grades));
	run_to_block(SUBMIT_BY + 1);
	assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Judging { until: JUDGE_BY });
	assert!(events().contains(&Event::JudgingOpened { job_id: job, results: 2, until: JUDGE_BY }));
	assert_eq!(CASES.with(|c| c.borrow().clone()), vec![(job, vec![MINER, MINER2])]);
	run_to_block(JUDGE_BY);
	assert!(matches!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Judging { .. }), "not before the deadline");
	run_to_block(JUDGE_BY + 1);
	job
}

fn settled(job_id: JobId, miner: u64) -> Event<Test> {
	events()
		.into_iter()
		.find(|e| matches!(e, Event::ResultSettled { job_id: j, miner: m, .. } if *j == job_id && *m == miner))
		.expect("a ResultSettled event")
}

#[test]
fn passing_results_pay_miner_treasury_and_validators_exactly() {
	test(|| {
		let before = issuance();
		let job = judged_pair(vec![Grade::Pass { loss_ppm: Some(900_000) }, Grade::Pass { loss_ppm: Some(800_000) }]);
		// Reward 5_000 each: validators' fee 10% = 500, payout 4_500, protocol fee 5% = 225.
		for (m, loss) in [(MINER, 900_000), (MINER2, 800_000)] {
			assert_eq!(free(m), START - 100 + 4_275, "paid, collateral released");
			assert_eq!(held(HoldReason::ClaimCollateral, m), 0);
			assert_eq!(Miners::<Test>::get(m).unwrap().completed, 1);
			let grade = Grade::Pass { loss_ppm: Some(loss) };
			assert_eq!(
				settled(job, m),
				Event::ResultSettled {
					job_id: job,
					miner: m,
					grade,
					paid: 4_275,
					fee: 225,
					validator_fee: 500,
					refunded: 0,
					slashed: 0,
				}
			);
		}
		assert_eq!(free(OWNER), START - BUDGET);
		assert_eq!(free(TREASURY), START + 450);
		assert_eq!(free(VALIDATORS), START + 1_000);
		assert_eq!(issuance(), before, "every planck moved, none minted or burned");
		let j = JobRecords::<Test>::get(job).unwrap();
		assert_eq!((j.status, j.escrow, j.released), (JobStatus::Finished { at: JUDGE_BY + 1 }, 0, BUDGET));
		assert!(events().contains(&Event::JobFinished { job_id: job, refunded: 0 }));
	});
}

#[test]
fn a_result_below_the_bar_is_not_paid_and_the_owner_pays_only_the_validators() {
	test(|| {
		let job = judged_pair(vec![Grade::BelowBar, Grade::Pass { loss_ppm: Some(1) }]);
		assert_eq!(free(MINER), START - 100, "collateral released, nothing paid");
		assert_eq!(Miners::<Test>::get(MINER).unwrap().failed, 1);
		assert_eq!(free(OWNER), START - 500 - 5_000, "refunded its share less the validators' fee");
		assert_eq!(free(VALIDATORS), START + 1_000);
		assert!(matches!(settled(job, MINER), Event::ResultSettled { paid: 0, fee: 0, validator_fee: 500, refunded: 4_500, slashed: 0, .. }));
	});
}

#[test]
fn fraud_slashes_the_collateral_and_refunds_the_owner_in_full() {
	test(|| {
		let before = issuance();
		let job = judged_pair(vec![Grade::Fraud, Grade::Fraud]);
		for m in [MINER, MINER2] {
			assert_eq!(free(m), START - 100 - 500, "collateral (10% of 5_000) slashed");
			assert_eq!(held(HoldReason::ClaimCollateral, m), 0);
			assert!(matches!(settled(job, m), Event::ResultSettled { paid: 0, validator_fee: 0, refunded: 5_000, slashed: 500, .. }));
		}
		assert_eq!(free(OWNER), START);
		assert_eq!(free(VALIDATORS), START, "no fee: the judge's share is the slash");
		assert_eq!(BURNED.with(|b| *b.borrow()), 1_000);
		assert_eq!(issuance(), before - 1_000, "the slashes, burned by the judge");
	});
}

#[test]
fn a_silent_judge_leaves_every_result_unjudged_and_refunded() {
	test(|| {
		let before = issuance();
		let job = judged_pair(vec![]);
		rule(job, Ruling::Silent);
		for m in [MINER, MINER2] {
			assert_eq!(free(m), START - 100);
			assert!(matches!(settled(job, m), Event::ResultSettled { grade: Grade::Unjudged, refunded: 5_000, slashed: 0, .. }));
		}
		assert_eq!(free(OWNER), START);
		assert_eq!(issuance(), before);
	});
}

#[test]
fn a_ruling_of_the_wrong_length_is_refused_and_the_job_still_ends() {
	test(|| {
		// The mock judge's settle_judged call fails (one grade for two results): the market
		// settles the job unjudged.
		let job = judged_pair(vec![Grade::Fraud]);
		assert!(matches!(settled(job, MINER), Event::ResultSettled { grade: Grade::Unjudged, .. }));
		assert_eq!(free(OWNER), START);
		assert_noop!(Jobs::settle_judged(job, &[]).map(|_| ()), Error::<Test>::NotJudging);
		assert_noop!(Jobs::settle_judged(7, &[]).map(|_| ()), Error::<Test>::UnknownJob);
	});
}

#[test]
fn settle_judged_is_for_a_job_under_judgement_only() {
	test(|| {
		let job = delivered_job();
		assert_noop!(Jobs::settle_judged(job, &[Grade::Fraud]).map(|_| ()), Error::<Test>::NotJudging);
		run_to_block(SUBMIT_BY + 1);
		assert_noop!(Jobs::settle_judged(job, &[]).map(|_| ()), Error::<Test>::WrongGradeCount);
		// The judge may rule before its deadline.
		let out = Jobs::settle_judged(job, &[Grade::Pass { loss_ppm: None }]).unwrap();
		MockJudge::distribute(out);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished { at: SUBMIT_BY + 1 });
		assert_eq!(free(MINER), START - 100 + 8_550);
	});
}

#[test]
fn ranked_contest_pays_by_hidden_eval_loss() {
	test(|| {
		const MINER3: u64 = 4;
		for m in [MINER, MINER2, MINER3] {
			register(m);
		}
		let job = NextJobId::<Test>::get();
		assert_ok!(Jobs::post_job(RuntimeOrigin::signed(OWNER), contest(3), 9_999, deadlines()));
		// Each miner brings its own recipe, within the bounds (200 steps, interval 20).
		for (m, steps, interval) in [(MINER, 200, 20), (MINER2, 50, 5), (MINER3, 120, 20)] {
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(m), job));
			let mut att = attestation(job, m);
			att.recipe_sha256 = [m as u8; 32];
			(att.steps, att.checkpoint_interval) = (steps, interval);
			for (bad_steps, bad_interval) in [(201, 20), (200, 21), (10, 11), (0, 1)] {
				let mut bad = att.clone();
				(bad.steps, bad.checkpoint_interval) = (bad_steps, bad_interval);
				let sig = sign(&bad, &worker(m));
				assert_noop!(Jobs::submit_result(RuntimeOrigin::signed(m), job, bad, sig), Error::<Test>::WrongSteps);
			}
			let sig = sign(&att, &worker(m));
			assert_ok!(Jobs::submit_result(RuntimeOrigin::signed(m), job, att, sig));
		}
		// MINER2 best, then MINER, then MINER3.
		rule(job, Ruling::Grades(vec![
			Grade::Pass { loss_ppm: Some(2_000_000) },
			Grade::Pass { loss_ppm: Some(1_000_000) },
			Grade::Pass { loss_ppm: Some(3_000_000) },
		]));
		run_to_block(JUDGE_BY + 1);
		// Reward 3_333 each, validators' fee 333, so a pool of 3 x 3_000 = 9_000 split
		// 4/7, 2/7, 1/7: 2_571.43 -> 2_571 and 1_285.71 -> 1_285 (floored), the winner the
		// rest, 5_144 (so a better rank never earns less than a worse one).
		let payout = |m| match settled(job, m) {
			Event::ResultSettled { paid, fee, .. } => {
				assert_eq!(fee, Perbill::from_percent(5) * (paid + fee), "protocol fee on the payout");
				paid + fee
			},
			_ => unreachable!(),
		};
		assert_eq!((payout(MINER2), payout(MINER), payout(MINER3)), (5_144, 2_571, 1_285));
		assert_eq!(free(OWNER), START - 9_999, "the whole budget is spent (9_999 = 3 x 3_333)");
		assert_eq!(free(VALIDATORS), START + 999);
	});
}

#[test]
fn ranked_without_a_revealed_eval_pays_equally() {
	test(|| {
		register(MINER);
		register(MINER2);
		let job = NextJobId::<Test>::get();
		let mut s = contest(2);
		s.payout = PayoutRule::Ranked;
		assert_ok!(Jobs::post_job(RuntimeOrigin::signed(OWNER), s, BUDGET, deadlines()));
		for m in [MINER, MINER2] {
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(m), job));
			deliver(job, m);
		}
		rule(job, Ruling::Grades(vec![Grade::Pass { loss_ppm: None }, Grade::Pass { loss_ppm: None }]));
		run_to_block(JUDGE_BY + 1);
		assert_eq!(free(MINER), free(MINER2));
		assert_eq!(free(MINER), START - 100 + 4_275);
	});
}

#[test]
fn the_judge_may_extend_once_within_the_limit() {
	test(|| {
		let job = delivered_job();
		rule(job, Ruling::Extend(JUDGE_BY + 10));
		run_to_block(JUDGE_BY + 1);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Judging { until: JUDGE_BY + 10 });
		assert!(events().contains(&Event::JudgingExtended { job_id: job, until: JUDGE_BY + 10 }));
		for bad in [JUDGE_BY + 10, JUDGE_BY + 9, JUDGE_BY + 21] {
			assert_noop!(Jobs::extend_judging(job, bad), Error::<Test>::InvalidExtension);
		}
		assert_noop!(Jobs::extend_judging(77, JUDGE_BY + 12), Error::<Test>::UnknownJob);
		// Silent again at the new deadline (its Extend is now refused): unjudged.
		run_to_block(JUDGE_BY + 11);
		assert!(matches!(settled(job, MINER), Event::ResultSettled { grade: Grade::Unjudged, .. }));
		assert_eq!(free(OWNER), START);
		assert_noop!(Jobs::extend_judging(job, JUDGE_BY + 12), Error::<Test>::NotJudging);
	});
}

#[test]
fn a_case_the_judge_refuses_is_refunded_at_once() {
	test(|| {
		let job = delivered_job();
		REFUSE.with(|r| *r.borrow_mut() = true);
		run_to_block(SUBMIT_BY + 1);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished { at: SUBMIT_BY + 1 });
		assert!(matches!(settled(job, MINER), Event::ResultSettled { grade: Grade::Unjudged, .. }));
		assert!(!events().iter().any(|e| matches!(e, Event::JudgingOpened { .. })));
		assert_eq!(free(OWNER), START);
		assert_eq!(free(MINER), START - 100);
	});
}

#[test]
fn submissions_close_early_once_every_replica_delivered_and_the_later_deadlines_move_up() {
	test(|| {
		register(MINER);
		register(MINER2);
		let job = post(OWNER, 2, BUDGET);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER), job));
		run_to_block(5);
		deliver(job, MINER);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().next_due, SUBMIT_BY + 1, "a replica is still open");
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(MINER2), job));
		run_to_block(9);
		deliver(job, MINER2);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().next_due, 10);
		run_to_block(10);
		// Closed at 10 instead of 51: 41 blocks early, and so are the reveal and judging
		// deadlines (their periods keep their lengths).
		let j = JobRecords::<Test>::get(job).unwrap();
		assert_eq!(j.deadlines, Deadlines { claim_by: 9, submit_by: 9, reveal_by: 60 - 41, judge_by: JUDGE_BY - 41 });
		assert_eq!(j.status, JobStatus::Judging { until: JUDGE_BY - 41 });
		assert!(events().contains(&Event::JudgingOpened { job_id: job, results: 2, until: JUDGE_BY - 41 }));
	});
}

#[test]
fn a_finished_job_is_pruned_after_its_retention() {
	test(|| {
		let job = judged_pair(vec![Grade::Pass { loss_ppm: None }, Grade::BelowBar]);
		run_to_block(JUDGE_BY + RETAIN);
		assert!(JobRecords::<Test>::get(job).is_some());
		run_to_block(JUDGE_BY + 1 + RETAIN);
		assert!(JobRecords::<Test>::get(job).is_none());
		assert_eq!(FORGOTTEN.with(|f| f.borrow().clone()), vec![job]);
		// The miners' records keep what happened.
		assert_eq!(Miners::<Test>::get(MINER).unwrap().completed, 1);
		assert_eq!(Miners::<Test>::get(MINER2).unwrap().failed, 1);
	});
}

#[test]
fn a_copy_submitted_first_does_not_lock_the_original_out() {
	test(|| {
		register(MINER);
		register(MINER2);
		let job = post(OWNER, 2, BUDGET);
		for m in [MINER, MINER2] {
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(m), job));
		}
		// MINER2 saw MINER's attestation in the pool and front-runs it with a copy of its
		// result and training record, signed with its own key.
		let original = attestation(job, MINER);
		let mut copy = attestation(job, MINER2);
		(copy.result_sha256, copy.checkpoint_root) = (original.result_sha256, original.checkpoint_root);
		let sig = sign(&copy, &worker(MINER2));
		assert_ok!(Jobs::submit_result(RuntimeOrigin::signed(MINER2), job, copy, sig));
		// The original still goes in: the copy is for the judge to catch (it fails replay
		// under the copier's seed), not a lock on the original.
		deliver(job, MINER);
		let j = JobRecords::<Test>::get(job).unwrap();
		assert!(j.claims.iter().all(|c| matches!(c.state, ClaimState::Submitted { .. })));
	});
}

#[test]
fn an_owner_may_not_claim_its_own_job() {
	test(|| {
		register(OWNER);
		let job = post(OWNER, 1, BUDGET);
		assert_noop!(Jobs::claim_job(RuntimeOrigin::signed(OWNER), job), Error::<Test>::OwnJob);
		assert!(Jobs::claimable_jobs(Some(OWNER), 0, 10).is_empty());
		assert_eq!(Jobs::claimable_jobs(None, 0, 10).len(), 1);
	});
}

#[test]
fn a_sybil_claiming_every_replica_and_never_delivering_loses_collateral() {
	test(|| {
		let sybils = [5, 6, 7];
		for s in sybils {
			register(s);
		}
		let job = post(OWNER, 3, 9_000);
		for s in sybils {
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(s), job));
		}
		run_to_block(SUBMIT_BY + 1);
		for s in sybils {
			assert_eq!(free(s), START - 100 - 150, "half of its 300 collateral");
			assert_eq!(Miners::<Test>::get(s).unwrap().failed, 1);
		}
		assert_eq!(free(OWNER), START, "the owner loses nothing");
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
		rule(job, Ruling::Grades(vec![Grade::Pass { loss_ppm: None }]));

		let before = issuance();
		run_to_block(SUBMIT_BY + 1);
		let j = JobRecords::<Test>::get(job).unwrap();
		assert_eq!(j.status, JobStatus::Judging { until: JUDGE_BY });
		assert_eq!(j.claims[0].state, ClaimState::Expired);
		assert_eq!(CASES.with(|c| c.borrow().clone()), vec![(job, vec![MINER2])], "only the delivered result");
		// Collateral 333 (10% of 3_333); half slashed (166), the rest released.
		assert_eq!(free(MINER), START - 100 - 166);
		assert_eq!(issuance(), before - 166);
		assert!(events().contains(&Event::ClaimExpired { job_id: job, miner: MINER, refunded: 3_333, slashed: 166 }));
		run_to_block(JUDGE_BY + 1);
		// The owner paid exactly one reward.
		assert_eq!(free(OWNER), START - 3_333);
		assert_eq!(held(HoldReason::JobEscrow, OWNER), 0);
		// Unclaimed replica + rounding.
		assert!(events().contains(&Event::JobFinished { job_id: job, refunded: 3_334 }));
	});
}

#[test]
fn unclaimed_job_is_refunded_after_its_deadline() {
	test(|| {
		let job = post(OWNER, 2, BUDGET);
		run_to_block(SUBMIT_BY + 1);
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished { at: SUBMIT_BY + 1 });
		assert_eq!(free(OWNER), START);
		assert!(CASES.with(|c| c.borrow().is_empty()), "no case without a result");
		assert_eq!(DueCursor::<Test>::get(), Some(SUBMIT_BY + 2));
		assert!(DueJobs::<Test>::contains_key(SUBMIT_BY + 1 + RETAIN, job));
	});
}

#[test]
fn settle_expired_is_permissionless_and_needs_something_due() {
	test(|| {
		let job = claimed_job();
		assert_noop!(Jobs::settle_expired(RuntimeOrigin::signed(9), job), Error::<Test>::NothingDue);
		assert_noop!(Jobs::settle_expired(RuntimeOrigin::signed(9), 77), Error::<Test>::UnknownJob);
		// Past the deadline, before on_idle ran.
		System::set_block_number(SUBMIT_BY + 1);
		assert_ok!(Jobs::settle_expired(RuntimeOrigin::signed(9), job));
		assert_eq!(JobRecords::<Test>::get(job).unwrap().status, JobStatus::Finished { at: SUBMIT_BY + 1 });
		assert_noop!(Jobs::settle_expired(RuntimeOrigin::signed(9), job), Error::<Test>::NothingDue);
		// on_idle then finds nothing left to do for it.
		Jobs::on_idle(SUBMIT_BY + 1, Weight::MAX);
		assert_eq!(free(OWNER), START);
	});
}

#[test]
fn on_idle_work_is_bounded_by_the_weight_it_is_given() {
	test(|| {
		for _ in 0..3 {
			post(OWNER, 1, 1_000);
		}
		let now = SUBMIT_BY + 1;
		System::set_block_number(now);
		let per_job = Jobs::process_job_weight();
		// Enough for the cursor, one queue entry and one job.
		let db: frame_support::weights::RuntimeDbWeight = <Test as frame_system::Config>::DbWeight::get();
		let budget = db.reads_writes(1, 1) + db.reads_writes(1, 1) + per_job;
		let used = Jobs::on_idle(now, budget);
		assert!(used.all_lte(budget), "used {used:?} of {budget:?}");
		let finished = |id| matches!(JobRecords::<Test>::get(id).unwrap().status, JobStatus::Finished { .. });
		assert_eq!((0..3).filter(|&id| finished(id)).count(), 1);
		assert_eq!(DueJobs::<Test>::iter_prefix(now).count(), 2, "the rest waits");
		assert_eq!(Jobs::on_idle(now, Weight::zero()), Weight::zero());
		Jobs::on_idle(now + 1, Weight::MAX);
		assert!((0..3).all(finished));
		assert_eq!(free(OWNER), START);
	});
}

#[test]
fn attestation_message_is_the_documented_encoding() {
	test(|| {
		let att = attestation(3, MINER);
		let msg = Jobs::attestation_message(&att);
		let mut expected = b"molting/attestation/v3".to_vec();
		expected.extend(3u64.to_le_bytes());
		expected.extend([0x42; 32]);
		expected.extend(MINER.to_le_bytes()); // u64 accounts in the mock; 32 bytes on chain
		expected.extend([1; 32]);
		expected.extend([102; 32]);
		expected.push(27 << 2); // compact length of the 27-byte URI
		expected.extend(b"https://example.org/adapter");
		expected.extend([52; 32]);
		expected.extend(100u32.to_le_bytes());
		expected.extend(10u32.to_le_bytes());
		expected.extend(1_234_567u32.to_le_bytes());
		assert_eq!(msg, expected);
	});
}
