//! Long random sequences of calls from many accounts. After every step: no MOLT created or
//! lost (free + held of every account, plus everything slashed, equals the start), the
//! total issuance moved only by slashes, the invariants hold, and nothing panicked.

use crate::{mock::*, Jobs as JobRecords, *};
// The pallet, not its `Jobs` storage map (both are glob-imported).
use crate::mock::Jobs;
use frame_support::{
	traits::{
		fungible::{Inspect, InspectHold},
		Hooks,
	},
	weights::Weight,
};
use sp_core::Pair;

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
		self.next() % n
	}
	fn pick<T: Copy>(&mut self, items: &[T]) -> T {
		items[self.below(items.len() as u64) as usize]
	}
}

const ACCOUNTS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, POOR];

fn total_of_everyone() -> u128 {
	let mut all: Vec<u64> = ACCOUNTS.to_vec();
	all.extend([TREASURY, VALIDATORS]);
	all.iter().map(|a| Balances::free_balance(a) + Balances::total_balance_on_hold(a)).sum()
}

/// Everything slashed so far (no-shows, frauds): burned, in this mock.
fn slashed_so_far() -> u128 {
	events()
		.into_iter()
		.map(|e| match e {
			Event::ResultSettled { slashed, .. } | Event::ClaimExpired { slashed, .. } => slashed,
			_ => 0,
		})
		.sum()
}

/// A random claim in a state `pick` accepts: (job id, miner).
fn some_claim(rng: &mut Rng, pick: impl Fn(&ClaimState<u128, u64>) -> bool) -> Option<(JobId, u64)> {
	let found: Vec<_> = JobRecords::<Test>::iter()
		.flat_map(|(id, job)| {
			job.claims.iter().filter(|c| pick(&c.state)).map(|c| (id, c.miner)).collect::<Vec<_>>()
		})
		.collect();
	(!found.is_empty()).then(|| found[rng.below(found.len() as u64) as usize])
}

fn random_grade(rng: &mut Rng) -> Grade {
	match rng.below(5) {
		0 | 1 => Grade::Pass { loss_ppm: rng.pick(&[None, Some(1), Some(500_000), Some(500_000), Some(2_000_000)]) },
		2 => Grade::BelowBar,
		3 => Grade::Fraud,
		_ => Grade::Unjudged,
	}
}

/// One random action. Errors are expected; they must change nothing. Actions that need a
/// claim in some state mostly pick one that is in it, so that the sequences get past the
/// checks and into settlement.
fn step(rng: &mut Rng) -> sp_runtime::DispatchResult {
	let who = rng.pick(&ACCOUNTS);
	let other = rng.pick(&ACCOUNTS);
	let jobs = NextJobId::<Test>::get();
	let job = if jobs == 0 { 0 } else { rng.below(jobs + 1) }; // sometimes unknown
	let origin = RuntimeOrigin::signed(who);
	let is_working = |s: &ClaimState<u128, u64>| *s == ClaimState::Working;
	let delivered = |s: &ClaimState<u128, u64>| matches!(s, ClaimState::Submitted { .. });
	match rng.below(16) {
		0 | 1 => {
			// Mostly the miner's own worker key; sometimes another's (taken or not).
			let key = if rng.below(5) == 0 { worker(other) } else { worker(who) };
			// Sometimes a proof made for someone else (a squatter replaying one it saw).
			let prover = if rng.below(8) == 0 { other } else { who };
			Jobs::register_miner(origin, key.public(), proof(prover, &key), caps())
		},
		2 => Jobs::unregister_miner(origin),
		3 => {
			let mut c = caps();
			c.memory_mib = rng.pick(&[0, 8_000, 80_000]);
			Jobs::update_miner(origin, None, Some(c))
		},
		4 | 5 => {
			let now = System::block_number();
			let claim_by = now + rng.below(25); // sometimes not in the future
			let submit_by = claim_by + rng.below(30);
			let reveal_by = submit_by + 1 + rng.below(5);
			let judge_by = reveal_by + JUDGING - 1 + rng.below(10); // sometimes too short
			let mut s = if rng.below(3) == 0 { contest(1 + rng.below(3) as u8) } else { spec(1 + rng.below(3) as u8) };
			if rng.below(4) == 0 {
				s.requirements.min_memory_mib = 10_000;
			}
			let budget = rng.pick(&[50, 300, 1_000, 10_001, 2_000_000]);
			Jobs::post_job(origin, s, budget, Deadlines { claim_by, submit_by, reveal_by, judge_by })
		},
		6 => Jobs::cancel_job(origin, job),
		7 | 8 => {
			// Mostly a job this account could claim.
			let open = Jobs::claimable_jobs(Some(who), 0, 100);
			let job = if !open.is_empty() && rng.below(5) != 0 {
				open[rng.below(open.len() as u64) as usize].0
			} else {
				job
			};
			Jobs::claim_job(origin, job)
		},
		9 | 10 => {
			let (job, miner) = some_claim(rng, is_working).unwrap_or((job, who));
			// Honest, or signed by the wrong key, or for the wrong job, or a copy of
			// another miner's result.
			let mut att = attestation(job, miner);
			if rng.below(6) == 0 {
				att.result_sha256 = attestation(job, other).result_sha256;
			}
			let key = if rng.below(6) == 0 { worker(other) } else { worker(miner) };
			let sig = sign(&att, &key);
			if rng.below(6) == 0 {
				att.job_id = att.job_id.wrapping_add(1);
			}
			Jobs::submit_result(RuntimeOrigin::signed(miner), job, att, sig)
		},
		11 | 12 => {
			// The judge's ruling for a job under judgement: mostly one grade per result.
			let (job, _) = some_claim(rng, delivered).unwrap_or((job, who));
			let results = JobRecords::<Test>::get(job)
				.map(|j| j.claims.iter().filter(|c| delivered(&c.state)).count())
				.unwrap_or(0);
			let n = if rng.below(8) == 0 { results + 1 } else { results };
			let grades: Vec<Grade> = (0..n).map(|_| random_grade(rng)).collect();
			match rng.below(4) {
				// Ruled at once, before the deadline.
				0 => Jobs::settle_judged(job, &grades).map(MockJudge::distribute),
				1 => {
					rule(job, Ruling::Extend(System::block_number() + rng.below(40)));
					Ok(())
				},
				_ => {
					rule(job, Ruling::Grades(grades));
					Ok(())
				},
			}
		},
		13 => Jobs::settle_expired(origin, job),
		_ => {
			// Time passes; on_idle sometimes has little weight to spare.
			let blocks = 1 + rng.below(8);
			for _ in 0..blocks {
				let b = System::block_number() + 1;
				System::set_block_number(b);
				let spare = if rng.below(3) == 0 { Jobs::process_job_weight() } else { Weight::MAX };
				Jobs::on_idle(b, spare);
			}
			Ok(())
		},
	}
}

/// How often each settlement path was taken, over all seeds: the sequences must reach
/// every path, or the conservation checks prove little.
#[derive(Default, Debug)]
struct Coverage {
	passed: u32,
	below_bar: u32,
	fraud: u32,
	unjudged: u32,
	expired: u32,
	extended: u32,
	finished: u32,
	cancelled: u32,
	pruned: u32,
	failed_calls: u32,
}

#[test]
fn random_call_sequences_conserve_molt_and_keep_invariants() {
	let mut coverage = Coverage::default();
	for seed in 1..=40u64 {
		new_test_ext().execute_with(|| {
			let start_total = total_of_everyone();
			let start_issuance = <Balances as Inspect<u64>>::total_issuance();
			let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
			for i in 0..400 {
				let root = sp_io::storage::root(sp_runtime::StateVersion::V1);
				if step(&mut rng).is_err() {
					coverage.failed_calls += 1;
					assert_eq!(
						sp_io::storage::root(sp_runtime::StateVersion::V1),
						root,
						"seed {seed} step {i}: a failing call changed state"
					);
				}
				let slashed = slashed_so_far();
				assert_eq!(
					total_of_everyone() + slashed,
					start_total,
					"seed {seed} step {i}: MOLT created or lost"
				);
				assert_eq!(
					<Balances as Inspect<u64>>::total_issuance() + slashed,
					start_issuance,
					"seed {seed} step {i}: issuance moved by more than the slashes"
				);
				if let Err(e) = Jobs::do_try_state() {
					panic!("seed {seed} step {i}: invariant broken: {e:?}");
				}
			}
			// Let every deadline pass: every job ends and is pruned; afterwards nothing is
			// held but miners' deposits.
			for _ in 0..1_500 {
				let b = System::block_number() + 1;
				System::set_block_number(b);
				Jobs::on_idle(b, Weight::MAX);
			}
			assert_eq!(JobRecords::<Test>::iter().count(), 0, "seed {seed}: a job never ended");
			for a in ACCOUNTS {
				assert_eq!(
					Balances::total_balance_on_hold(&a),
					Miners::<Test>::get(a).map_or(0, |m| m.deposit),
					"seed {seed}: something still held for {a}"
				);
			}
			Jobs::do_try_state().unwrap();
			for e in events() {
				match e {
					Event::ResultSettled { grade: Grade::Pass { .. }, .. } => coverage.passed += 1,
					Event::ResultSettled { grade: Grade::BelowBar, .. } => coverage.below_bar += 1,
					Event::ResultSettled { grade: Grade::Fraud, .. } => coverage.fraud += 1,
					Event::ResultSettled { grade: Grade::Unjudged, .. } => coverage.unjudged += 1,
					Event::ClaimExpired { .. } => coverage.expired += 1,
					Event::JudgingExtended { .. } => coverage.extended += 1,
					Event::JobFinished { .. } => coverage.finished += 1,
					Event::JobCancelled { .. } => coverage.cancelled += 1,
					Event::JobPruned { .. } => coverage.pruned += 1,
					_ => {},
				}
			}
		});
	}
	println!("{coverage:?}");
	let c = &coverage;
	assert!(
		c.passed >= 50 &&
			c.below_bar >= 20 && c.fraud >= 20 &&
			c.unjudged >= 50 && c.expired >= 50 &&
			c.extended >= 10 && c.finished >= 500 &&
			c.cancelled >= 10 && c.pruned >= 500,
		"random sequences reach too few settlements: {coverage:?}"
	);
}
