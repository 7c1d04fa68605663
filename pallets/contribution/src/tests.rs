//! Unit tests: every call and error, every ruling path, and the exploits the field has
//! met, each shown to gain nothing. Each test ends with both pallets' invariants checked.

use crate::{mock::*, Error, Event, *};
use frame_support::{assert_noop, assert_ok, traits::fungible::Inspect};
use pallet_jobs::{ClaimState, Grade, JobId, JobStatus};
use sp_core::Pair;
use sp_runtime::Perbill;

const PASS: Replay = Replay::Pass;
const SEGMENT: Replay = Replay::Fail(Fault::Segment);
const BASE: u32 = 2_000_000;

fn issuance() -> u128 {
	<Balances as Inspect<u64>>::total_issuance()
}

/// Validators with bonds, miners delivering (their own results) to one job of `spec`
/// with `budget`; returns the job once its case is open.
fn opened(validators: &[(u64, u128)], miners: &[u64], spec: pallet_jobs::JobSpec, budget: u128) -> JobId {
	for &(v, b) in validators {
		register_validator(v, b);
	}
	for &m in miners {
		register_miner(m);
	}
	let job = post(spec, budget);
	// Delivered in the last block of submissions: they close on time (not early), so the
	// mock's deadlines hold.
	for &m in miners {
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(m), job));
	}
	run_to_block(SUBMIT_BY);
	for &m in miners {
		submit(job, m, attestation(job, m));
	}
	run_to_block(SUBMIT_BY + 1);
	job
}

/// Every seat commits `reports[seat]` once the eval set is revealed, and reveals it.
fn commit_all(job: JobId, reports: &[(u64, Report)]) {
	for (v, r) in reports {
		assert_ok!(commit(job, *v, r));
	}
}
fn reveal_all(job: JobId, reports: &[(u64, Report)]) {
	run_to_block(COMMIT_BY + 1);
	for (v, r) in reports {
		assert_ok!(reveal(job, *v, r.clone()));
	}
}

fn paid(job: JobId, v: u64) -> u128 {
	events()
		.into_iter()
		.filter_map(|e| match e {
			Event::ValidatorPaid { job_id, validator, amount } if job_id == job && validator == v => Some(amount),
			_ => None,
		})
		.sum()
}

fn grade_of(job: JobId, miner: u64) -> Grade {
	let j = pallet_jobs::Jobs::<Test>::get(job).unwrap();
	match &j.claims.iter().find(|c| c.miner == miner).unwrap().state {
		ClaimState::Judged { grade, .. } => *grade,
		other => panic!("not judged: {other:?}"),
	}
}

// --- validators ---------------------------------------------------------------------

#[test]
fn register_validator_holds_the_bond() {
	test(|| {
		register_validator(11, 1_500);
		assert_eq!(bond(11), 1_500);
		assert_eq!(free(11), START - 1_500);
		assert_eq!(ActiveSet::<Test>::get().into_inner(), vec![(11, 1_500)]);
		assert_eq!(ReportKeys::<Test>::get(key(11).public().0), Some(11));
		assert_eq!(
			events(),
			vec![Event::ValidatorRegistered { validator: 11, report_key: key(11).public().0, bond: 1_500 }]
		);
	});
}

#[test]
fn register_validator_errors() {
	test(|| {
		let reg = |who: u64, k: sp_core::sr25519::Public, b| {
			// The proof by the key's holder (the test key whose public key it is), for `who`.
			let holder = (0..=255u8).map(|s| key(s as u64)).find(|p| p.public() == k);
			let proof = holder.map_or(sp_core::sr25519::Signature::from_raw([0; 64]), |p| proof(REPORT_KEY_CONTEXT, who, &p));
			Contribution::register_validator(RuntimeOrigin::signed(who), k, proof, b)
		};
		assert_noop!(reg(11, key(11).public(), MIN_BOND - 1), Error::<Test>::BondTooLow);
		assert_noop!(reg(POOR, key(POOR).public(), MIN_BOND), Error::<Test>::InsufficientBalance);
		assert_noop!(reg(11, sp_core::sr25519::Public::from_raw([0; 32]), MIN_BOND), Error::<Test>::InvalidReportKey);
		register_validator(11, MIN_BOND);
		assert_noop!(reg(11, key(12).public(), MIN_BOND), Error::<Test>::AlreadyValidator);
		assert_noop!(reg(12, key(11).public(), MIN_BOND), Error::<Test>::ReportKeyInUse);
		// Squatting: 13's key, with the proof 13 made (seen in the pool), or one signed by
		// another key, cannot register it for 12; a worker key's proof is not a report key's.
		let squat = |p| Contribution::register_validator(RuntimeOrigin::signed(12), key(13).public(), p, MIN_BOND);
		assert_noop!(squat(proof(REPORT_KEY_CONTEXT, 13, &key(13))), Error::<Test>::BadKeyProof);
		assert_noop!(squat(proof(REPORT_KEY_CONTEXT, 12, &key(12))), Error::<Test>::BadKeyProof);
		assert_noop!(squat(proof(pallet_jobs::WORKER_KEY_CONTEXT, 12, &key(13))), Error::<Test>::BadKeyProof);
		assert_ok!(squat(proof(REPORT_KEY_CONTEXT, 12, &key(13))));
	});
}

#[test]
fn a_full_set_takes_a_larger_bond_in_place_of_the_smallest() {
	test(|| {
		for v in 11..=15 {
			register_validator(v, MIN_BOND + v as u128);
		}
		// Full (5): an equal-or-smaller bond is refused, a larger one displaces 11.
		assert_noop!(
			Contribution::register_validator(RuntimeOrigin::signed(16), key(16).public(), proof(REPORT_KEY_CONTEXT, 16, &key(16)), MIN_BOND + 11),
			Error::<Test>::ValidatorSetFull
		);
		register_validator(16, MIN_BOND + 12);
		let set: Vec<u64> = ActiveSet::<Test>::get().iter().map(|(v, _)| *v).collect();
		assert_eq!(set, vec![12, 13, 14, 15, 16]);
		assert!(!Validators::<Test>::get(11).unwrap().active);
		assert!(events().contains(&Event::ValidatorLeft { validator: 11 }));
		// The displaced one keeps its bond until it withdraws.
		assert_ok!(Contribution::withdraw_bond(RuntimeOrigin::signed(11)));
		assert_eq!(free(11), START);
	});
}

#[test]
fn leaving_and_withdrawing() {
	test(|| {
		register_validator(11, MIN_BOND);
		assert_noop!(Contribution::withdraw_bond(RuntimeOrigin::signed(11)), Error::<Test>::StillActive);
		assert_ok!(Contribution::unregister_validator(RuntimeOrigin::signed(11)));
		assert!(ActiveSet::<Test>::get().is_empty());
		assert_noop!(Contribution::unregister_validator(RuntimeOrigin::signed(11)), Error::<Test>::NotActive);
		assert_noop!(Contribution::unregister_validator(RuntimeOrigin::signed(12)), Error::<Test>::NotAValidator);
		assert_ok!(Contribution::withdraw_bond(RuntimeOrigin::signed(11)));
		assert_eq!(free(11), START);
		assert!(events().contains(&Event::BondWithdrawn { validator: 11, amount: MIN_BOND }));
		assert_noop!(Contribution::withdraw_bond(RuntimeOrigin::signed(11)), Error::<Test>::NotAValidator);
	});
}

#[test]
fn a_seated_validator_keeps_its_bond_until_the_case_is_ruled() {
	test(|| {
		let job = opened(&[(11, MIN_BOND)], &[2], spec(1), 10_000);
		assert_eq!(seats(job), vec![11]);
		assert_eq!(Validators::<Test>::get(11).unwrap().duties, 1);
		assert_ok!(Contribution::unregister_validator(RuntimeOrigin::signed(11)));
		assert_noop!(Contribution::withdraw_bond(RuntimeOrigin::signed(11)), Error::<Test>::HasDuties);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		commit_all(job, &[(11, r.clone())]);
		reveal_all(job, &[(11, r)]);
		assert_eq!(Validators::<Test>::get(11).unwrap().duties, 0);
		assert_ok!(Contribution::withdraw_bond(RuntimeOrigin::signed(11)));
	});
}

// --- the draw -------------------------------------------------------------------------

#[test]
fn the_committee_and_segments_are_drawn_when_submissions_close() {
	test(|| {
		let job = opened(&[(11, 1_000), (12, 2_000), (13, 3_000), (14, 4_000)], &[2, 3], spec(2), 10_000);
		let case = Cases::<Test>::get(job).unwrap();
		assert_eq!(case.seats.len(), 3);
		let mut seated = seats(job);
		seated.sort();
		seated.dedup();
		assert_eq!(seated.len(), 3, "distinct validators");
		for s in &case.seats {
			assert_eq!(s.stake, bond(s.validator), "stake is the bond when drawn");
			assert_eq!(Validators::<Test>::get(s.validator).unwrap().duties, 1);
		}
		// Two distinct segments of the ten, per result, in order.
		assert_eq!(case.segments.len(), 2);
		for segs in &case.segments {
			assert_eq!(segs.len(), 2);
			assert!(segs[0] < segs[1] && segs[1] < 10, "{segs:?}");
		}
		assert_eq!((case.round, case.reveal_by, case.commit_by, case.judge_by), (0, REVEAL_BY, COMMIT_BY, JUDGE_BY));
		assert!(events().iter().any(|e| matches!(e, Event::CommitteeDrawn { job_id, round: 0, .. } if *job_id == job)));
		assert_eq!(pallet_jobs::Jobs::<Test>::get(job).unwrap().status, JobStatus::Judging { until: JUDGE_BY });
	});
}

#[test]
fn the_draw_favours_stake() {
	// Over many jobs, a validator with 9x the bond of each other sits on nearly every
	// committee of 1, and the small ones rarely.
	test(|| {
		CommitteeSize::set(1);
		NoRevealSlash::set(Perbill::zero()); // bonds stay as drawn
		for (v, b) in [(11, 9_000), (12, 1_000), (13, 1_000), (14, 1_000)] {
			register_validator(v, b);
		}
		let mut big = 0;
		for round in 0..120u64 {
			let job = pallet_jobs::NextJobId::<Test>::get();
			let now = System::block_number();
			let d = pallet_jobs::Deadlines { claim_by: now + 1, submit_by: now + 1, reveal_by: now + 3, judge_by: now + 13 };
			assert_ok!(Jobs::post_job(RuntimeOrigin::signed(OWNER), spec(1), 1_000, d));
			let miner = 20 + (round % 15);
			if pallet_jobs::Miners::<Test>::get(miner).is_none() {
				register_miner(miner);
			}
			let mut att = attestation(job, miner);
			att.checkpoint_root = [round as u8; 32];
			att.result_sha256[0] = round as u8;
			claim_and_submit(job, miner, att);
			run_to_block(now + 2);
			if seats(job) == vec![11] {
				big += 1;
			}
			run_to_block(now + 30); // unjudged (after its extension), seats freed
		}
		// Expected 120 x 9/12 = 90.
		assert!((75..=105).contains(&big), "the large bond sat {big} of 120 times");
	});
}

#[test]
fn without_validators_a_case_is_refunded_at_once() {
	test(|| {
		let before = issuance();
		let job = opened(&[], &[2], spec(1), 10_000);
		assert!(Cases::<Test>::get(job).is_none());
		assert_eq!(grade_of(job, 2), Grade::Unjudged);
		assert_eq!(free(OWNER), START);
		assert_eq!(free(2), START - 100);
		assert_eq!(issuance(), before);
	});
}

// --- the eval set ---------------------------------------------------------------------

#[test]
fn reveal_eval_checks_owner_commitment_and_period() {
	test(|| {
		register_validator(11, MIN_BOND);
		register_miner(2);
		let job = post(spec(1), 10_000);
		assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(2), job));
		run_to_block(SUBMIT_BY);
		submit(job, 2, attestation(job, 2));
		assert_noop!(reveal_eval(job), Error::<Test>::NoCase); // before submissions close
		run_to_block(SUBMIT_BY + 1);
		assert_noop!(
			Contribution::reveal_eval(RuntimeOrigin::signed(3), job, content(0xE0), EVAL_SALT),
			Error::<Test>::NotJobOwner
		);
		assert_noop!(
			Contribution::reveal_eval(RuntimeOrigin::signed(OWNER), job, content(0xE1), EVAL_SALT),
			Error::<Test>::EvalMismatch
		);
		assert_noop!(
			Contribution::reveal_eval(RuntimeOrigin::signed(OWNER), job, content(0xE0), [0; 32]),
			Error::<Test>::EvalMismatch
		);
		assert_ok!(reveal_eval(job));
		assert!(events().contains(&Event::EvalRevealed { job_id: job, set: content(0xE0) }));
		assert_noop!(reveal_eval(job), Error::<Test>::EvalAlreadyRevealed);
	});
}

#[test]
fn the_eval_set_cannot_be_revealed_late() {
	test(|| {
		let job = opened(&[(11, MIN_BOND)], &[2], spec(1), 10_000);
		run_to_block(REVEAL_BY + 1);
		assert_noop!(reveal_eval(job), Error::<Test>::EvalRevealPeriodOver);
	});
}

// --- commit-reveal --------------------------------------------------------------------

#[test]
fn commit_report_errors() {
	test(|| {
		let job = opened(&[(11, MIN_BOND)], &[2], spec(1), 10_000);
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		// Not before the eval set is out (or its reveal period over).
		assert_noop!(commit(job, 11, &r), Error::<Test>::NotCommitPeriod);
		assert_ok!(reveal_eval(job));
		assert_noop!(commit(job, 12, &r), Error::<Test>::NotOnCommittee);
		assert_noop!(commit(77, 11, &r), Error::<Test>::NoCase);
		// Signed by another key than the validator's report key.
		let c = Contribution::commitment(job, 0, &11, &r, &salt(11));
		let forged = key(12).sign(&Contribution::commit_message(job, 0, &11, &c));
		assert_noop!(
			Contribution::commit_report(RuntimeOrigin::signed(12), job, 11, c, forged),
			Error::<Test>::BadSignature
		);
		// A signature for another job's commitment.
		let other = key(11).sign(&Contribution::commit_message(job + 1, 0, &11, &c));
		assert_noop!(
			Contribution::commit_report(RuntimeOrigin::signed(11), job, 11, c, other),
			Error::<Test>::BadSignature
		);
		assert_ok!(commit(job, 11, &r));
		assert!(events().contains(&Event::ReportCommitted { job_id: job, validator: 11 }));
		assert_noop!(commit(job, 11, &r), Error::<Test>::AlreadyCommitted);
	});
}

#[test]
fn commits_open_at_the_reveal_deadline_and_close_at_commit_by() {
	test(|| {
		let job = opened(&[(11, MIN_BOND), (12, MIN_BOND)], &[2], spec(1), 10_000);
		let r = report(None, &[(PASS, None)]);
		run_to_block(REVEAL_BY);
		assert_noop!(commit(job, 11, &r), Error::<Test>::NotCommitPeriod);
		run_to_block(REVEAL_BY + 1);
		assert_ok!(commit(job, 11, &r));
		run_to_block(COMMIT_BY + 1);
		assert_noop!(commit(job, 12, &r), Error::<Test>::NotCommitPeriod);
	});
}

#[test]
fn reveal_report_errors() {
	test(|| {
		let job = opened(&[(11, MIN_BOND), (12, MIN_BOND)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		assert_ok!(commit(job, 11, &r));
		assert_noop!(reveal(job, 11, r.clone()), Error::<Test>::NotRevealPeriod);
		run_to_block(COMMIT_BY + 1);
		assert_noop!(reveal(job, 12, r.clone()), Error::<Test>::NotCommitted);
		assert_noop!(reveal(job, 13, r.clone()), Error::<Test>::NotOnCommittee);
		// Another report than the one committed.
		let changed = report(Some(BASE), &[(SEGMENT, None)]);
		assert_noop!(reveal(job, 11, changed), Error::<Test>::CommitmentMismatch);
		let short = report(Some(BASE), &[]);
		assert_noop!(reveal(job, 11, short), Error::<Test>::WrongResultCount);
		assert_noop!(
			Contribution::reveal_report(RuntimeOrigin::signed(11), job, 11, r.clone(), [0; 32]),
			Error::<Test>::CommitmentMismatch
		);
		assert_ok!(reveal(job, 11, r.clone()));
		assert_noop!(reveal(job, 11, r.clone()), Error::<Test>::AlreadyRevealed);
		run_to_block(JUDGE_BY + 1);
		assert_noop!(reveal(job, 12, r), Error::<Test>::NoCase);
	});
}

#[test]
fn a_tie_is_no_verdict_and_nobody_is_penalised() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let reports = vec![
			(11, report(Some(BASE), &[(PASS, Some(1_500_000))])),
			(12, report(Some(BASE), &[(SEGMENT, None)])),
		];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::Unjudged);
		assert_eq!((bond(11), bond(12)), (2_000, 2_000));
		assert_eq!(free(OWNER), START, "refunded");
		assert_eq!(free(2), START - 100, "collateral released");
	});
}

#[test]
fn no_party_to_a_job_sits_on_its_committee() {
	test(|| {
		// The owner and the miner are validators too; only 11 may judge.
		register_validator(OWNER, 5_000);
		register_validator(2, 5_000);
		let job = opened(&[(11, MIN_BOND)], &[2], spec(1), 10_000);
		assert_eq!(seats(job), vec![11]);
	});
}

#[test]
fn reveals_open_early_once_every_seat_has_committed() {
	test(|| {
		let job = opened(&[(11, MIN_BOND), (12, MIN_BOND)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		assert_ok!(commit(job, 11, &r));
		assert_noop!(reveal(job, 11, r.clone()), Error::<Test>::NotRevealPeriod);
		assert_ok!(commit(job, 12, &r));
		assert!(System::block_number() <= COMMIT_BY);
		assert_ok!(reveal(job, 11, r.clone()));
		assert_ok!(reveal(job, 12, r));
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_000_000) });
	});
}

#[test]
fn a_copied_commitment_cannot_be_revealed_and_costs_the_copier() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000), (13, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let honest = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		assert_ok!(commit(job, 11, &honest));
		assert_ok!(commit(job, 12, &honest));
		// 13 copies 11's commitment (its own report key signs it).
		let copied = Cases::<Test>::get(job).unwrap().seats.iter().find(|s| s.validator == 11).unwrap().commitment.unwrap();
		let sig = key(13).sign(&Contribution::commit_message(job, 0, &13, &copied));
		assert_ok!(Contribution::commit_report(RuntimeOrigin::signed(13), job, 13, copied, sig));
		run_to_block(COMMIT_BY + 1);
		assert_ok!(reveal(job, 11, honest.clone()));
		assert_ok!(reveal(job, 12, honest.clone()));
		// Even with 11's report and salt in hand, the hash binds 11, not 13.
		assert_noop!(
			Contribution::reveal_report(RuntimeOrigin::signed(13), job, 13, honest, salt(11)),
			Error::<Test>::CommitmentMismatch
		);
		run_to_block(JUDGE_BY + 1);
		assert_eq!(bond(13), 2_000 - 40, "2% for not revealing");
		assert_eq!(paid(job, 13), 0);
		assert!(paid(job, 11) > 0 && paid(job, 12) > 0);
	});
}

// --- rulings ----------------------------------------------------------------------------

#[test]
fn an_honest_miner_is_paid_and_the_committee_shares_the_fee_by_stake() {
	test(|| {
		let before = issuance();
		let job = opened(&[(11, 1_000), (12, 1_000), (13, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_500_000))]);
		let reports: Vec<(u64, Report)> = [11, 12, 13].iter().map(|v| (*v, r.clone())).collect();
		commit_all(job, &reports);
		reveal_all(job, &reports);
		// Every seat revealed: ruled at once, before judge_by.
		assert!(Cases::<Test>::get(job).is_none());
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_500_000) });
		// Reward 10_000: validators' fee 1_000, payout 9_000, protocol fee 450.
		assert_eq!(free(2), START - 100 + 8_550);
		assert_eq!(free(OWNER), START - 10_000);
		assert_eq!(free(TREASURY), START + 450);
		assert_eq!((paid(job, 11), paid(job, 12), paid(job, 13)), (250, 250, 500));
		assert_eq!(free(13), START - 2_000 + 500);
		assert_eq!(issuance(), before);
		assert!(events().iter().any(|e| matches!(e, Event::CaseRuled { burned: 0, .. })));
		for v in [11, 12, 13] {
			assert_eq!(Validators::<Test>::get(v).unwrap().duties, 0);
		}
		assert_eq!(Reports::<Test>::iter_prefix(job).count(), 0);
	});
}

#[test]
fn a_lazy_miner_is_caught_slashed_and_its_reporters_paid() {
	test(|| {
		let before = issuance();
		let job = opened(&[(11, 2_000), (12, 1_000), (13, 3_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		// 12 and 13 find a drawn segment that does not replay; 11 says it passes.
		let reports = vec![
			(11, report(Some(BASE), &[(PASS, Some(1_500_000))])),
			(12, report(Some(BASE), &[(SEGMENT, None)])),
			(13, report(Some(BASE), &[(SEGMENT, None)])),
		];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::Fraud);
		// Collateral 1_000 slashed: half to the reporters by stake (1:3), half burned.
		assert_eq!(free(2), START - 100 - 1_000);
		assert_eq!(free(OWNER), START, "refunded in full");
		assert_eq!((paid(job, 12), paid(job, 13)), (125, 375));
		assert_eq!(paid(job, 11), 0);
		// 11's verdict was against the majority: 10% of its bond.
		assert_eq!(bond(11), 1_800);
		assert!(events().contains(&Event::ValidatorPenalised { job_id: job, validator: 11, offence: Offence::WrongVerdict, slashed: 200 }));
		assert!(events().iter().any(|e| matches!(e, Event::CaseRuled { burned: 500, .. })));
		assert_eq!(issuance(), before - 500 - 200);
	});
}

#[test]
fn a_validator_that_reveals_a_false_verdict_is_outvoted_and_penalised() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000), (13, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let good = report(Some(BASE), &[(PASS, Some(1_500_000))]);
		let reports = vec![(11, good.clone()), (12, good), (13, report(Some(BASE), &[(SEGMENT, None)]))];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_500_000) });
		assert_eq!(free(2), START - 100 + 8_550, "the honest miner is paid");
		assert_eq!(bond(13), 1_800);
		assert_eq!(paid(job, 13), 0);
		assert_eq!((paid(job, 11), paid(job, 12)), (500, 500));
	});
}

#[test]
fn an_owner_that_does_not_reveal_pays_for_work_that_replays() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000)], &[2], spec(1), 10_000);
		run_to_block(REVEAL_BY + 1);
		let r = report(None, &[(PASS, None)]);
		let reports = vec![(11, r.clone()), (12, r)];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: None });
		assert_eq!(free(OWNER), START - 10_000, "withholding the eval set wins nothing back");
		assert_eq!(free(2), START - 100 + 8_550);
	});
}

#[test]
fn the_owner_cannot_reject_good_work() {
	test(|| {
		// There is no call for it: the market has no review, and the only thing an owner
		// can do after submission is reveal its eval set (or not).
		let job = opened(&[(11, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		commit_all(job, &[(11, r.clone())]);
		reveal_all(job, &[(11, r)]);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_000_000) });
	});
}

#[test]
fn an_unchanged_base_model_fails_the_quality_bar() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		// It replays (training happened), but its loss is the base model's: not 1% better.
		let r = report(Some(BASE), &[(PASS, Some(BASE))]);
		let reports = vec![(11, r.clone()), (12, r)];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::BelowBar);
		assert_eq!(free(2), START - 100, "not paid, not slashed");
		assert_eq!(free(OWNER), START - 1_000, "the owner pays only the validators");
		assert_eq!((paid(job, 11), paid(job, 12)), (500, 500));
	});
}

#[test]
fn just_past_the_bar_passes() {
	test(|| {
		let job = opened(&[(11, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		// 1% below the base: exactly at the bar.
		let r = report(Some(BASE), &[(PASS, Some(BASE - BASE / 100))]);
		commit_all(job, &[(11, r.clone())]);
		reveal_all(job, &[(11, r)]);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(BASE - BASE / 100) });
	});
}

#[test]
fn a_contest_is_won_by_the_better_hidden_eval_loss() {
	test(|| {
		for (v, b) in [(11, 2_000), (12, 2_000), (13, 2_000)] {
			register_validator(v, b);
		}
		register_miner(2);
		register_miner(3);
		let job = post(contest(2), 10_000);
		// Two recipes within the bounds: 200 steps every 20, and 120 every 10.
		for m in [2, 3] {
			assert_ok!(Jobs::claim_job(RuntimeOrigin::signed(m), job));
		}
		run_to_block(SUBMIT_BY);
		for (m, steps, interval) in [(2, 200, 20), (3, 120, 10)] {
			let mut att = attestation(job, m);
			att.recipe_sha256 = [m as u8; 32];
			(att.steps, att.checkpoint_interval) = (steps, interval);
			submit(job, m, att);
		}
		run_to_block(SUBMIT_BY + 1);
		let case = Cases::<Test>::get(job).unwrap();
		assert!(case.segments[0].iter().all(|s| *s < 10) && case.segments[1].iter().all(|s| *s < 12));
		assert_ok!(reveal_eval(job));
		// Miner 3's adapter is better on the hidden set.
		let r = report(Some(BASE), &[(PASS, Some(1_600_000)), (PASS, Some(1_200_000))]);
		let reports: Vec<_> = [11, 12, 13].iter().map(|v| (*v, r.clone())).collect();
		commit_all(job, &reports);
		reveal_all(job, &reports);
		// Shares 5_000 each, less 500 validators' fee: a pool of 9_000 split 2/3, 1/3.
		let payout = |m| match job_events().into_iter().find(|e| matches!(e, pallet_jobs::Event::ResultSettled { miner, .. } if *miner == m)) {
			Some(pallet_jobs::Event::ResultSettled { paid, fee, .. }) => paid + fee,
			_ => panic!("not settled"),
		};
		assert_eq!((payout(3), payout(2)), (6_000, 3_000));
		assert!(free(3) > free(2));
		assert_eq!(free(OWNER), START - 10_000);
	});
}

#[test]
fn a_seat_far_from_the_consensus_loss_earns_no_fee_share() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000), (13, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let agreed = report(Some(BASE), &[(PASS, Some(1_500_000))]);
		// 0.2% off: beyond the 0.1% tolerance.
		let off = report(Some(BASE), &[(PASS, Some(1_503_000))]);
		let reports = vec![(11, agreed.clone()), (12, agreed), (13, off)];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_500_000) });
		assert_eq!((paid(job, 11), paid(job, 12), paid(job, 13)), (500, 500, 0));
		assert_eq!(bond(13), 2_000, "clipped, not slashed");
	});
}

#[test]
fn a_seat_that_does_not_reveal_is_penalised_and_the_quorum_rules() {
	test(|| {
		let job = opened(&[(11, 2_000), (12, 2_000), (13, 2_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_500_000))]);
		commit_all(job, &[(11, r.clone()), (12, r.clone()), (13, r.clone())]);
		reveal_all(job, &[(11, r.clone()), (12, r)]);
		assert!(Cases::<Test>::get(job).is_some(), "waits for the deadline");
		run_to_block(JUDGE_BY + 1);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_500_000) });
		assert_eq!(bond(13), 2_000 - 40);
		assert!(events().contains(&Event::ValidatorPenalised { job_id: job, validator: 13, offence: Offence::NoReveal, slashed: 40 }));
		assert_eq!(paid(job, 13), 0);
	});
}

#[test]
fn without_a_quorum_the_case_is_extended_once_then_refunded() {
	test(|| {
		let validators: Vec<(u64, u128)> = (11..=15).map(|v| (v, 2_000)).collect();
		let job = opened(&validators, &[2], spec(1), 10_000);
		let first = seats(job);
		assert_ok!(reveal_eval(job));
		// Only one of three reveals: no quorum.
		let r = report(Some(BASE), &[(PASS, Some(1_500_000))]);
		assert_ok!(commit(job, first[0], &r));
		run_to_block(COMMIT_BY + 1);
		assert_ok!(reveal(job, first[0], r.clone()));
		run_to_block(JUDGE_BY + 1);
		for v in &first[1..] {
			assert_eq!(bond(*v), 2_000 - 40);
		}
		assert_eq!(bond(first[0]), 2_000);
		let case = Cases::<Test>::get(job).unwrap();
		assert_eq!(case.round, 1);
		assert!(events().contains(&Event::CaseExtended { job_id: job }));
		let second = seats(job);
		assert_eq!(second.len(), 2, "the two not yet drawn");
		assert!(second.iter().all(|v| !first.contains(v)));
		let until = JUDGE_BY + EXTENSION;
		assert_eq!(pallet_jobs::Jobs::<Test>::get(job).unwrap().status, JobStatus::Judging { until });
		assert_eq!((case.commit_by, case.judge_by), (until - REVEAL_WINDOW, until));
		// The fresh committee is silent too: refunded, no miner slashed.
		run_to_block(until + 1);
		assert!(events().contains(&Event::CaseAbandoned { job_id: job }));
		assert_eq!(grade_of(job, 2), Grade::Unjudged);
		assert_eq!(free(OWNER), START);
		assert_eq!(free(2), START - 100);
		for v in &second {
			assert_eq!(bond(*v), 2_000 - 40);
		}
		for v in 11..=15 {
			assert_eq!(Validators::<Test>::get(v).unwrap().duties, 0);
		}
	});
}

#[test]
fn an_extension_rules_when_the_fresh_committee_reveals() {
	test(|| {
		let validators: Vec<(u64, u128)> = (11..=14).map(|v| (v, 2_000)).collect();
		let job = opened(&validators, &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		run_to_block(JUDGE_BY + 1);
		let second = seats(job);
		assert_eq!(second.len(), 1);
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		assert_ok!(commit(job, second[0], &r));
		let until = JUDGE_BY + EXTENSION;
		run_to_block(until - REVEAL_WINDOW + 1);
		assert_ok!(reveal(job, second[0], r));
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_000_000) });
		assert_eq!(paid(job, second[0]), 1_000);
	});
}

#[test]
fn a_bond_slashed_below_the_minimum_leaves_the_active_set() {
	test(|| {
		let job = opened(&[(11, MIN_BOND), (12, 5_000)], &[2], spec(1), 10_000);
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		commit_all(job, &[(12, r.clone())]);
		reveal_all(job, &[(12, r)]);
		run_to_block(JUDGE_BY + 1);
		assert_eq!(bond(11), MIN_BOND - 20);
		assert!(!Validators::<Test>::get(11).unwrap().active);
		assert_eq!(ActiveSet::<Test>::get().into_inner(), vec![(12, 5_000)]);
	});
}

#[test]
fn an_early_close_keeps_the_owners_and_the_judges_periods() {
	test(|| {
		register_validator(11, MIN_BOND);
		register_miner(2);
		let job = post(spec(1), 10_000);
		// The only replica delivers at block 3: the case opens at 4 instead of 21.
		run_to_block(3);
		claim_and_submit(job, 2, attestation(job, 2));
		run_to_block(4);
		let case = Cases::<Test>::get(job).unwrap();
		let early = SUBMIT_BY + 1 - 4;
		assert_eq!((case.reveal_by, case.commit_by, case.judge_by), (REVEAL_BY - early, COMMIT_BY - early, JUDGE_BY - early));
		assert_ok!(reveal_eval(job));
		let r = report(Some(BASE), &[(PASS, Some(1_000_000))]);
		commit_all(job, &[(11, r.clone())]);
		run_to_block(case.commit_by + 1);
		assert_ok!(reveal(job, 11, r));
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_000_000) });
		assert!(System::block_number() < SUBMIT_BY, "ruled before the original close of submissions");
	});
}

#[test]
fn a_copier_fails_replay_under_its_own_seed() {
	test(|| {
		// Miner 3 re-signs miner 2's training as its own with a fresh result hash and
		// root (the market refuses exact copies): checkpoint 0 is miner 2's initial
		// state, not miner 3's, so every seat reports InitialState.
		let job = opened(&[(11, 2_000), (12, 2_000)], &[2, 3], spec(2), 10_000);
		assert_ok!(reveal_eval(job));
		let copier = Replay::Fail(Fault::InitialState);
		let r = report(Some(BASE), &[(PASS, Some(1_500_000)), (copier, None)]);
		let reports = vec![(11, r.clone()), (12, r)];
		commit_all(job, &reports);
		reveal_all(job, &reports);
		assert_eq!(grade_of(job, 2), Grade::Pass { loss_ppm: Some(1_500_000) });
		assert_eq!(grade_of(job, 3), Grade::Fraud);
		assert_eq!(free(3), START - 100 - 500, "its collateral is gone");
	});
}
