//! Long random sequences of calls from many accounts. After every step: no MOLT created or
//! lost (free + held of every account, plus everything slashed, equals the start), the
//! total issuance moved only by slashes, the invariants hold, and nothing panicked.

use crate::{mock::*, Jobs as JobRecords, *};
// The pallet, not its `Jobs` storage map (both are glob-imported).
use crate::mock::Jobs;
use frame_support::traits::{
	fungible::{Inspect, InspectHold},
	Hooks,
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
	all.push(TREASURY);
	all.iter().map(|a| Balances::free_balance(a) + Balances::total_balance_on_hold(a)).sum()
}

fn slashed_so_far() -> u128 {
	events()
		.into_iter()
		.map(|e| match e {
			Event::ResultRejected { slashed, .. } | Event::ClaimExpired { slashed, .. } => slashed,
			_ => 0,
		})
		.sum()
}

/// A random claim in a state `pick` accepts: (job id, miner, job owner).
fn some_claim(rng: &mut Rng, pick: impl Fn(&ClaimState<u64>) -> bool) -> Option<(JobId, u64, u64)> {
	let found: Vec<_> = JobRecords::<Test>::iter()
		.flat_map(|(id, job)| {
			job.claims
				.iter()
				.filter(|c| pick(&c.state))
				.map(|c| (id, c.miner, job.owner))
				.collect::<Vec<_>>()
		})
		.collect();
	(!found.is_empty()).then(|| found[rng.below(found.len() as u64) as usize])
}

/// One random action; errors are expected (they must just change nothing). Actions that
/// need a claim in some state mostly pick one that is in it, so that the sequences get
/// past the checks and into settlement.
fn step(rng: &mut Rng) {
	let who = rng.pick(&ACCOUNTS);
	let other = rng.pick(&ACCOUNTS);
	let jobs = NextJobId::<Test>::get();
	let job = if jobs == 0 { 0 } else { rng.below(jobs + 1) }; // sometimes unknown
	let origin = RuntimeOrigin::signed(who);
	let is_working = |s: &ClaimState<u64>| *s == ClaimState::Working;
	let in_review = |s: &ClaimState<u64>| matches!(s, ClaimState::Submitted { .. });
	let disputed = |s: &ClaimState<u64>| matches!(s, ClaimState::Disputed { .. });
	let _ = match rng.below(16) {
		0 | 1 => {
			// Mostly the miner's own worker key; sometimes another's (taken or not).
			let key = if rng.below(5) == 0 { worker(other) } else { worker(who) };
			Jobs::register_miner(origin, key.public(), caps())
		},
		2 => Jobs::unregister_miner(origin),
		3 => {
			let mut c = caps();
			c.memory_mib = rng.pick(&[0, 8_000, 80_000]);
			Jobs::update_miner(origin, None, Some(c))
		},
		4 | 5 => {
			let now = System::block_number();
			let claim_by = now + 1 + rng.below(20);
			let submit_by = claim_by + rng.below(30);
			let mut s = spec(1 + rng.below(3) as u8);
			if rng.below(4) == 0 {
				s.requirements.min_memory_mib = 10_000;
			}
			let budget = rng.pick(&[50, 300, 1_000, 10_001, 2_000_000]);
			Jobs::post_job(origin, s, budget, Deadlines { claim_by, submit_by })
		},
		6 => Jobs::cancel_job(origin, job),
		7 | 8 => Jobs::claim_job(origin, job),
		9 | 10 => {
			let (job, miner, _) = some_claim(rng, is_working).unwrap_or((job, who, 0));
			// Honest, or signed by the wrong key, or for the wrong job.
			let mut att = attestation(job, miner);
			let key = if rng.below(6) == 0 { worker(other) } else { worker(miner) };
			let sig = sign(&att, &key);
			if rng.below(6) == 0 {
				att.job_id = att.job_id.wrapping_add(1);
			}
			Jobs::submit_result(RuntimeOrigin::signed(miner), job, att, sig)
		},
		11 => {
			let (job, miner, owner) = some_claim(rng, in_review).unwrap_or((job, other, who));
			let by = if rng.below(8) == 0 { who } else { owner };
			if rng.below(3) == 0 {
				Jobs::reject_result(RuntimeOrigin::signed(by), job, miner)
			} else {
				Jobs::accept_result(RuntimeOrigin::signed(by), job, miner)
			}
		},
		12 => {
			let (job, miner, _) = some_claim(rng, disputed).unwrap_or((job, other, 0));
			let verdict = if rng.below(2) == 0 { Verdict::Accept } else { Verdict::Reject };
			Jobs::resolve_dispute(RuntimeOrigin::root(), job, miner, verdict)
		},
		13 => Jobs::settle_expired(origin, job),
		_ => {
			// Time passes; on_idle sometimes has little weight to spare.
			let blocks = 1 + rng.below(8);
			for _ in 0..blocks {
				let b = System::block_number() + 1;
				System::set_block_number(b);
				let spare = if rng.below(3) == 0 {
					<() as WeightInfo>::settle_expired(3)
				} else {
					frame_support::weights::Weight::MAX
				};
				Jobs::on_idle(b, spare);
			}
			Ok(())
		},
	};
}

/// How often each settlement path was taken, over all seeds: the sequences must reach
/// every path, or the conservation checks prove little.
#[derive(Default, Debug)]
struct Coverage {
	accepted: u32,
	rejected: u32,
	expired: u32,
	finished: u32,
	cancelled: u32,
}

#[test]
fn random_call_sequences_conserve_molt_and_keep_invariants() {
	let mut coverage = Coverage::default();
	for seed in 1..=40u64 {
		new_test_ext().execute_with(|| {
			let start_total = total_of_everyone();
			let start_issuance = <Balances as Inspect<u64>>::total_issuance();
			let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
			for i in 0..300 {
				step(&mut rng);
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
			// Let every deadline pass: afterwards nothing is held but miners' deposits.
			for _ in 0..2_000 {
				let b = System::block_number() + 1;
				System::set_block_number(b);
				Jobs::on_idle(b, frame_support::weights::Weight::MAX);
			}
			for (id, job) in JobRecords::<Test>::iter() {
				assert!(
					job.status != JobStatus::Open ||
						job.claims.iter().any(|c| matches!(c.state, ClaimState::Disputed { .. })),
					"seed {seed}: job {id} still open without a dispute: {job:?}"
				);
			}
			Jobs::do_try_state().unwrap();
			for e in events() {
				match e {
					Event::ResultAccepted { .. } => coverage.accepted += 1,
					Event::ResultRejected { .. } => coverage.rejected += 1,
					Event::ClaimExpired { .. } => coverage.expired += 1,
					Event::JobFinished { .. } => coverage.finished += 1,
					Event::JobCancelled { .. } => coverage.cancelled += 1,
					_ => {},
				}
			}
		});
	}
	println!("{coverage:?}");
	let Coverage { accepted, rejected, expired, finished, cancelled } = coverage;
	assert!(
		accepted >= 20 && rejected >= 5 && expired >= 20 && finished >= 50 && cancelled >= 10,
		"random sequences reach too few settlements: {coverage:?}"
	);
}
