//! Long random sequences of calls across the market and its judge: many accounts acting
//! as owners, miners and validators (honest, lazy, lying, silent), random block
//! advances. After every step: no MOLT created or lost except by the documented burns
//! (no-show slashes, validator penalties, the unpaid part of fraud slashes), both
//! pallets' invariants hold, and a call that failed changed nothing.

use crate::{mock::*, Event, *};
use frame_support::{
	traits::{
		fungible::{Inspect, InspectHold},
		OnIdle,
	},
	weights::Weight,
};
use pallet_jobs::{ClaimState, Deadlines, JobId, Jobs as JobRecords};
use sp_core::Pair;
use sp_runtime::DispatchResult;

/// xorshift64*: a small deterministic generator, so a failing seed replays exactly.
struct Rng(u64);
impl Rng {
	fn next(&mut self) -> u64 {
		self.0 ^= self.0 >> 12;
		self.0 ^= self.0 << 25;
		self.0 ^= self.0 >> 27;
		self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
	}
	fn below(&mut self, n: u64) -> u64 {
		self.next() % n.max(1)
	}
	fn pick<T: Copy>(&mut self, items: &[T]) -> T {
		items[self.below(items.len() as u64) as usize]
	}
}

const OWNERS: [u64; 3] = [1, 2, 3];
const MINERS: [u64; 5] = [4, 5, 6, 7, 8];
const VALIDATORS: [u64; 7] = [11, 12, 13, 14, 15, 16, POOR];

fn everyone() -> Vec<u64> {
	let mut all: Vec<u64> = OWNERS.iter().chain(&MINERS).chain(&VALIDATORS).copied().collect();
	all.push(TREASURY);
	all
}

fn total_of_everyone() -> u128 {
	everyone().iter().map(|a| Balances::free_balance(a) + Balances::total_balance_on_hold(a)).sum()
}

/// Takes the events of the last step: adds what they report burned to `burned` and
/// counts the outcomes. Events are reset after every step, so that neither reading them
/// nor the storage root grows with the run.
fn take_events(burned: &mut u128, c: &mut Coverage) {
	for record in System::events() {
		match record.event {
			RuntimeEvent::Jobs(e) => match e {
				pallet_jobs::Event::ClaimExpired { slashed, .. } => *burned += slashed,
				pallet_jobs::Event::ResultSettled { grade, .. } => match grade {
					pallet_jobs::Grade::Pass { .. } => c.passed += 1,
					pallet_jobs::Grade::BelowBar => c.below_bar += 1,
					pallet_jobs::Grade::Fraud => c.fraud += 1,
					pallet_jobs::Grade::Unjudged => c.unjudged += 1,
				},
				_ => {},
			},
			RuntimeEvent::Contribution(e) => match e {
				Event::ValidatorPenalised { slashed, .. } => {
					*burned += slashed;
					c.penalised += 1;
				},
				Event::CaseRuled { burned: b, .. } => {
					*burned += b;
					c.ruled += 1;
				},
				Event::CaseExtended { .. } => c.extended += 1,
				Event::CaseAbandoned { .. } => c.abandoned += 1,
				Event::ValidatorPaid { .. } => c.validators_paid += 1,
				Event::ReportRevealed { .. } => c.reveals += 1,
				_ => {},
			},
			_ => {},
		}
	}
	System::reset_events();
}

/// What an honest validator finds on result `i` of `job`: some miners fake segments,
/// some train poorly (no better than the base), most train well.
fn truth(job: JobId, i: usize) -> (Replay, Option<u32>) {
	match (job as usize * 7 + i * 3) % 5 {
		0 => (Replay::Fail(Fault::Segment), None),
		1 => (Replay::Pass, Some(2_000_000)),
		2 => (Replay::Pass, Some(1_200_000)),
		_ => (Replay::Pass, Some(1_500_000 + (i as u32) * 1_000)),
	}
}

/// An honest report on `job`: the truth of every result, the base model's loss when the
/// eval set is out.
fn honest_report(job: JobId) -> Report {
	let eval = Cases::<Test>::get(job).is_some_and(|c| c.eval.is_some());
	let entries: Vec<_> = (0..delivered(job))
		.map(|i| {
			let (replay, loss) = truth(job, i);
			(replay, if eval { loss } else { None })
		})
		.collect();
	report(eval.then_some(2_000_000), &entries)
}

/// Validators 11..=14 are honest, 15 is careless (random reports), 16 and POOR lie at
/// random too.
fn report_of(rng: &mut Rng, job: JobId, v: u64) -> Report {
	if (11..=14).contains(&v) && rng.below(20) != 0 {
		honest_report(job)
	} else {
		random_report(rng, delivered(job))
	}
}

fn random_report(rng: &mut Rng, results: usize) -> Report {
	let entry = |rng: &mut Rng| {
		let replay = match rng.below(6) {
			0 => Replay::Fail(Fault::Segment),
			1 => Replay::Fail(Fault::InitialState),
			_ => Replay::Pass,
		};
		(replay, rng.pick(&[None, Some(1_000_000), Some(1_500_000), Some(1_500_000), Some(2_500_000)]))
	};
	// Sometimes one entry too many or too few.
	let n = match rng.below(12) {
		0 => results + 1,
		1 => results.saturating_sub(1),
		_ => results,
	};
	let entries: Vec<_> = (0..n).map(|_| entry(rng)).collect();
	report(rng.pick(&[None, Some(2_000_000), Some(2_000_000)]), &entries)
}

/// A job under judgement and a validator seated on it that has not committed yet, if any.
fn some_seat(rng: &mut Rng) -> Option<(JobId, u64)> {
	let seats: Vec<(JobId, u64)> = Cases::<Test>::iter()
		.flat_map(|(j, c)| {
			c.seats.iter().filter(|s| s.commitment.is_none()).map(move |s| (j, s.validator)).collect::<Vec<_>>()
		})
		.collect();
	(!seats.is_empty()).then(|| seats[rng.below(seats.len() as u64) as usize])
}

fn delivered(job: JobId) -> usize {
	JobRecords::<Test>::get(job)
		.map(|j| j.claims.iter().filter(|c| matches!(c.state, ClaimState::Submitted { .. })).count())
		.unwrap_or(0)
}

fn step(rng: &mut Rng, remembered: &mut Vec<(JobId, u64, Report)>) -> DispatchResult {
	let owner = rng.pick(&OWNERS);
	let miner = rng.pick(&MINERS);
	let validator = rng.pick(&VALIDATORS);
	let next = pallet_jobs::NextJobId::<Test>::get();
	let job = rng.below(next + 1);
	match rng.below(24) {
		0 => Jobs::register_miner(RuntimeOrigin::signed(miner), key(miner).public(), proof(pallet_jobs::WORKER_KEY_CONTEXT, miner, &key(miner)), caps()),
		1 => Jobs::unregister_miner(RuntimeOrigin::signed(miner)),
		2 | 3 => {
			let now = System::block_number();
			let claim_by = now + 1 + rng.below(8);
			let submit_by = claim_by + rng.below(8);
			let reveal_by = submit_by + 1 + rng.below(5);
			let judge_by = reveal_by + MIN_COMMIT + REVEAL_WINDOW - 1 + rng.below(10); // sometimes too short
			let replication = 1 + rng.below(3) as u8;
			let s = if rng.below(3) == 0 { contest(replication) } else { spec(replication) };
			let budget = rng.pick(&[50, 1_000, 10_000, 30_000]);
			Jobs::post_job(RuntimeOrigin::signed(owner), s, budget, Deadlines { claim_by, submit_by, reveal_by, judge_by })
		},
		4 => Jobs::cancel_job(RuntimeOrigin::signed(owner), job),
		5 | 6 => {
			let open = Jobs::claimable_jobs(Some(miner), 0, 100);
			let job = if !open.is_empty() && rng.below(4) != 0 { open[rng.below(open.len() as u64) as usize].0 } else { job };
			Jobs::claim_job(RuntimeOrigin::signed(miner), job)
		},
		7 | 8 => {
			// Deliver on a Working claim: honest, a copy of another's result, or forged.
			let working: Vec<(JobId, u64)> = JobRecords::<Test>::iter()
				.flat_map(|(id, j)| j.claims.iter().filter(|c| c.state == ClaimState::Working).map(move |c| (id, c.miner)).collect::<Vec<_>>())
				.collect();
			let (job, m) = if working.is_empty() { (job, miner) } else { working[rng.below(working.len() as u64) as usize] };
			let mut att = attestation(job, m);
			if let Some(j) = JobRecords::<Test>::get(job) {
				if matches!(j.spec.work, pallet_jobs::Work::Contest { .. }) {
					att.recipe_sha256 = [m as u8; 32];
					(att.steps, att.checkpoint_interval) = (rng.pick(&[20, 100, 200, 201]), rng.pick(&[5, 20, 21]));
				}
			}
			if rng.below(8) == 0 {
				att.result_sha256 = attestation(job, rng.pick(&MINERS)).result_sha256;
			}
			let signer = if rng.below(10) == 0 { rng.pick(&MINERS) } else { m };
			let mut message = pallet_jobs::ATTESTATION_CONTEXT.to_vec();
			codec::Encode::encode_to(&att, &mut message);
			let sig = key(signer).sign(&message);
			Jobs::submit_result(RuntimeOrigin::signed(m), job, att, sig)
		},
		9 => {
			let bond = rng.pick(&[MIN_BOND - 1, MIN_BOND, 2_000, 5_000]);
			// Sometimes a proof made for another account (a squatter's replay): refused.
			let prover = if rng.below(10) == 0 { owner } else { validator };
			Contribution::register_validator(RuntimeOrigin::signed(validator), key(validator).public(), proof(REPORT_KEY_CONTEXT, prover, &key(validator)), bond)
		},
		10 => Contribution::unregister_validator(RuntimeOrigin::signed(validator)),
		11 => Contribution::withdraw_bond(RuntimeOrigin::signed(validator)),
		12 => {
			// The owner reveals (mostly its real eval set), or a stranger tries.
			let job = Cases::<Test>::iter_keys().next().filter(|_| rng.below(5) != 0).unwrap_or(job);
			let by = if rng.below(6) == 0 { owner } else { JobRecords::<Test>::get(job).map_or(owner, |j| j.owner) };
			let salt = if rng.below(6) == 0 { [0; 32] } else { EVAL_SALT };
			Contribution::reveal_eval(RuntimeOrigin::signed(by), job, content(0xE0), salt)
		},
		13 | 14 | 20 | 21 => {
			let (job, v) = some_seat(rng).unwrap_or((job, validator));
			let r = report_of(rng, job, v);
			let result = commit(job, v, &r);
			if result.is_ok() {
				remembered.push((job, v, r));
			}
			result
		},
		15 | 16 | 22 | 23 => {
			// Reveal a remembered commitment (sometimes a tampered one), or a random report.
			let now = System::block_number();
			let due = |(job, _, _): &(JobId, u64, Report)| Cases::<Test>::get(job).is_some_and(|c| now > c.commit_by);
			let ready: Vec<usize> = (0..remembered.len()).filter(|&i| due(&remembered[i])).collect();
			if ready.is_empty() || rng.below(8) == 0 {
				let (job, v) = some_seat(rng).unwrap_or((job, validator));
				let r = random_report(rng, delivered(job));
				reveal(job, v, r)
			} else {
				let i = ready[rng.below(ready.len() as u64) as usize];
				let (job, v, mut r) = remembered.swap_remove(i);
				if rng.below(10) == 0 {
					r.base_loss_ppm = Some(1);
				}
				let result = reveal(job, v, r.clone());

				result
			}
		},
		_ => {
			let blocks = 1 + rng.below(2);
			for _ in 0..blocks {
				let b = System::block_number() + 1;
				frame_system::BlockHash::<Test>::insert(b - 1, sp_core::H256::from_low_u64_be(rng.next()));
				System::set_block_number(b);
				let spare = if rng.below(4) == 0 { Jobs::process_job_weight() } else { Weight::MAX };
				AllPalletsWithSystem::on_idle(b, spare);
			}
			Ok(())
		},
	}
}

#[derive(Default, Debug)]
struct Coverage {
	steps: u64,
	failed_calls: u64,
	passed: u32,
	below_bar: u32,
	fraud: u32,
	unjudged: u32,
	ruled: u32,
	extended: u32,
	abandoned: u32,
	penalised: u32,
	validators_paid: u32,
	reveals: u32,
}

/// Runs the sequences of `seeds` (400 calls each), checking after every call.
fn run(seeds: core::ops::RangeInclusive<u64>) -> Coverage {
	let mut coverage = Coverage::default();
	for seed in seeds {
		let mut ext = new_test_ext();
		let (start_total, start_issuance) =
			ext.execute_with(|| (total_of_everyone(), <Balances as Inspect<u64>>::total_issuance()));
		let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
		let mut remembered = Vec::new();
		let mut burned = 0u128;
		for i in 0..400 {
			ext.execute_with(|| {
				coverage.steps += 1;
				let root = sp_io::storage::root(sp_runtime::StateVersion::V1);
				if step(&mut rng, &mut remembered).is_err() {
					coverage.failed_calls += 1;
					assert_eq!(
						sp_io::storage::root(sp_runtime::StateVersion::V1),
						root,
						"seed {seed} step {i}: a failing call changed state"
					);
				}
				take_events(&mut burned, &mut coverage);
				assert_eq!(total_of_everyone() + burned, start_total, "seed {seed} step {i}: MOLT created or lost");
				assert_eq!(
					<Balances as Inspect<u64>>::total_issuance() + burned,
					start_issuance,
					"seed {seed} step {i}: issuance moved by more than the documented burns"
				);
				if let Err(e) = Jobs::do_try_state() {
					panic!("seed {seed} step {i}: market invariant broken: {e:?}");
				}
				if let Err(e) = Contribution::do_try_state() {
					panic!("seed {seed} step {i}: judge invariant broken: {e:?}");
				}
			});
			// Move the changes into the backend now and then: the root is then computed
			// over the last few steps' changes, not all of them.
			if i % 16 == 15 {
				ext.commit_all().expect("commits");
			}
		}
		ext.execute_with(|| {
			// Every deadline passes: every job ends and is pruned, every seat is freed.
			for _ in 0..200 {
				let b = System::block_number() + 1;
				System::set_block_number(b);
				AllPalletsWithSystem::on_idle(b, Weight::MAX);
			}
			take_events(&mut burned, &mut coverage);
			assert_eq!(total_of_everyone() + burned, start_total, "seed {seed}: MOLT created or lost at the end");
			assert_eq!(JobRecords::<Test>::iter().count(), 0, "seed {seed}: a job never ended");
			assert_eq!(Cases::<Test>::iter().count(), 0, "seed {seed}: a case never ended");
			for (v, info) in Validators::<Test>::iter() {
				assert_eq!(info.duties, 0, "seed {seed}: validator {v} still seated");
				assert_eq!(Balances::total_balance_on_hold(&v), info.bond, "seed {seed}: {v} holds more than its bond");
			}
			for m in MINERS {
				let deposit = pallet_jobs::Miners::<Test>::get(m).map_or(0, |r| r.deposit);
				assert_eq!(Balances::total_balance_on_hold(&m), deposit, "seed {seed}: miner {m} holds more than its deposit");
			}
			for o in OWNERS {
				assert_eq!(Balances::total_balance_on_hold(&o), 0, "seed {seed}: owner {o} still has escrow");
			}
			check_invariants();
		});
	}
	coverage
}

/// Each quarter of the calls runs as its own test, so the harness runs them side by side;
/// each must reach every ruling path, or the conservation checks prove little.
fn check(coverage: Coverage) {
	println!("{coverage:?}");
	let c = &coverage;
	assert_eq!(c.steps, 63 * 400);
	assert!(
		c.passed >= 50 && c.below_bar >= 3 && c.fraud >= 25 && c.unjudged >= 100 &&
			c.ruled >= 60 && c.extended >= 20 && c.abandoned >= 50 &&
			c.penalised >= 200 && c.validators_paid >= 80,
		"random sequences reach too few rulings: {coverage:?}"
	);
}

// 4 x 63 sequences of 400 calls: 100,800 calls.
#[test]
fn random_calls_conserve_molt_and_keep_invariants_1() {
	check(run(1..=63));
}

#[test]
fn random_calls_conserve_molt_and_keep_invariants_2() {
	check(run(64..=126));
}

#[test]
fn random_calls_conserve_molt_and_keep_invariants_3() {
	check(run(127..=189));
}

#[test]
fn random_calls_conserve_molt_and_keep_invariants_4() {
	check(run(190..=252));
}
