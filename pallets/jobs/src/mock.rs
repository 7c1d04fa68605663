//! A mock runtime: System, Balances, Jobs; accounts are `u64`, balances `u128`.

use crate::{self as pallet_jobs, *};
use codec::Encode;
use frame_support::{
	derive_impl, parameter_types,
	traits::{ConstU128, ConstU32, Hooks},
	weights::Weight,
};
use sp_core::{sr25519, Pair, H256};
use sp_runtime::{BuildStorage, DispatchError, DispatchResult, Perbill};
use std::{cell::RefCell, collections::BTreeMap};

type Block = frame_system::mocking::MockBlock<Test>;

frame_support::construct_runtime!(
	pub enum Test {
		System: frame_system,
		Balances: pallet_balances,
		Jobs: pallet_jobs,
	}
);

#[derive_impl(frame_system::config_preludes::TestDefaultConfig)]
impl frame_system::Config for Test {
	type Block = Block;
	type AccountData = pallet_balances::AccountData<u128>;
}

#[derive_impl(pallet_balances::config_preludes::TestDefaultConfig)]
impl pallet_balances::Config for Test {
	type Balance = u128;
	type ExistentialDeposit = ConstU128<1>;
	type AccountStore = System;
	type RuntimeHoldReason = RuntimeHoldReason;
}

/// Everyone's starting balance.
pub const START: u128 = 1_000_000;
/// The treasury account.
pub const TREASURY: u64 = 999;
/// Where the mock judge pays validators' fees.
pub const VALIDATORS: u64 = 998;
/// An account with almost nothing.
pub const POOR: u64 = 500;
/// The mock judge's shortest judging period.
pub const JUDGING: u64 = 10;
/// How long finished jobs are kept.
pub const RETAIN: u64 = 100;

parameter_types! {
	pub const TreasuryAccount: u64 = TREASURY;
	pub const CollateralRatio: Perbill = Perbill::from_percent(10);
	pub const NoShowSlash: Perbill = Perbill::from_percent(50);
	pub const ProtocolFee: Perbill = Perbill::from_percent(5);
	pub const ValidatorFee: Perbill = Perbill::from_percent(10);
}

/// What the mock judge does at a job's judging deadline.
#[derive(Clone, Debug)]
pub enum Ruling {
	/// Nothing (the market settles `Unjudged`).
	Silent,
	/// Rule these grades.
	Grades(Vec<Grade>),
	/// Move the deadline to this block.
	Extend(u64),
}

thread_local! {
	/// Cases opened: job id and the miners of its results, in order.
	pub static CASES: RefCell<Vec<(JobId, Vec<u64>)>> = const { RefCell::new(Vec::new()) };
	/// Rulings to give, by job.
	pub static RULINGS: RefCell<BTreeMap<JobId, Ruling>> = const { RefCell::new(BTreeMap::new()) };
	/// Whether `open_case` refuses.
	pub static REFUSE: RefCell<bool> = const { RefCell::new(false) };
	/// Slashed collateral the judge burned.
	pub static BURNED: RefCell<u128> = const { RefCell::new(0) };
	/// Jobs forgotten.
	pub static FORGOTTEN: RefCell<Vec<JobId>> = const { RefCell::new(Vec::new()) };
}

/// A judge the tests steer: it rules what [`RULINGS`] says, pays validators' fees to
/// [`VALIDATORS`] and burns slashes.
pub struct MockJudge;
impl MockJudge {
	/// Hands out what a settlement left, as a real judge would.
	pub fn distribute(out: Vec<ResultSettlement<CreditOf<Test>>>) {
		use frame_support::traits::{fungible::Balanced, Imbalance};
		for r in out {
			let _ = <Balances as Balanced<u64>>::resolve(&VALIDATORS, r.validator_fee);
			BURNED.with(|b| *b.borrow_mut() += r.slashed.peek());
		}
	}
}
impl ResultJudge<u64, u64> for MockJudge {
	fn min_judging_period() -> u64 {
		JUDGING
	}
	fn open_case(job_id: JobId, results: &[(u64, Delivery<u64>)]) -> DispatchResult {
		if REFUSE.with(|r| *r.borrow()) {
			return Err(DispatchError::Other("refused"))
		}
		CASES.with(|c| c.borrow_mut().push((job_id, results.iter().map(|(m, _)| *m).collect())));
		Ok(())
	}
	fn on_deadline(job_id: JobId) {
		match RULINGS.with(|r| r.borrow().get(&job_id).cloned()).unwrap_or(Ruling::Silent) {
			Ruling::Silent => {},
			Ruling::Grades(grades) =>
				if let Ok(out) = Jobs::settle_judged(job_id, &grades) {
					Self::distribute(out)
				},
			Ruling::Extend(until) => {
				let _ = Jobs::extend_judging(job_id, until);
			},
		}
	}
	fn on_deadline_weight() -> Weight {
		Weight::from_parts(1_000_000, 1_000)
	}
	fn forget(job_id: JobId) {
		FORGOTTEN.with(|f| f.borrow_mut().push(job_id));
	}
}

/// Sets the mock judge's ruling on `job_id`.
pub fn rule(job_id: JobId, ruling: Ruling) {
	RULINGS.with(|r| r.borrow_mut().insert(job_id, ruling));
}

impl pallet_jobs::Config for Test {
	type RuntimeEvent = RuntimeEvent;
	type Currency = Balances;
	type RuntimeHoldReason = RuntimeHoldReason;
	type Judge = MockJudge;
	type Treasury = TreasuryAccount;
	type OnSlash = ();
	type MinerDeposit = ConstU128<100>;
	type CollateralRatio = CollateralRatio;
	type MinCollateral = ConstU128<10>;
	type NoShowSlash = NoShowSlash;
	type ProtocolFee = ProtocolFee;
	type ValidatorFee = ValidatorFee;
	type MinReward = ConstU128<100>;
	type MaxJobDuration = frame_support::traits::ConstU64<1_000>;
	type MaxJudgeExtension = frame_support::traits::ConstU64<20>;
	type RetainFinished = frame_support::traits::ConstU64<RETAIN>;
	type MaxReplication = ConstU32<3>;
	type MaxActiveClaims = ConstU32<4>;
	type WeightInfo = ();
}

/// Accounts 1..=20 and the treasury start with [`START`]; [`POOR`] with 50.
pub fn new_test_ext() -> sp_io::TestExternalities {
	let mut t = frame_system::GenesisConfig::<Test>::default().build_storage().unwrap();
	let mut balances: Vec<(u64, u128)> = (1..=20).map(|a| (a, START)).collect();
	balances.push((TREASURY, START));
	balances.push((VALIDATORS, START));
	balances.push((POOR, 50));
	pallet_balances::GenesisConfig::<Test> { balances, ..Default::default() }
		.assimilate_storage(&mut t)
		.unwrap();
	CASES.with(|c| c.borrow_mut().clear());
	RULINGS.with(|r| r.borrow_mut().clear());
	REFUSE.with(|r| *r.borrow_mut() = false);
	BURNED.with(|b| *b.borrow_mut() = 0);
	FORGOTTEN.with(|f| f.borrow_mut().clear());
	let mut ext = sp_io::TestExternalities::new(t);
	ext.execute_with(|| {
		System::set_block_number(1);
		// What a real chain has from block 1 on: the genesis hash at number 0.
		frame_system::BlockHash::<Test>::insert(0, H256::repeat_byte(0x42));
	});
	ext
}

/// Runs `test`, then checks the pallet's invariants.
pub fn test(f: impl FnOnce()) {
	new_test_ext().execute_with(|| {
		f();
		Jobs::do_try_state().expect("invariants hold");
	});
}

/// Advances to block `n`, running `on_idle` with unlimited weight in each block.
pub fn run_to_block(n: u64) {
	while System::block_number() < n {
		let b = System::block_number() + 1;
		System::set_block_number(b);
		Jobs::on_idle(b, Weight::MAX);
	}
}

/// The worker key pair of miner `who` (a deterministic test key).
pub fn worker(who: u64) -> sr25519::Pair {
	sr25519::Pair::from_seed(&[who as u8; 32])
}

/// The capabilities every test miner has unless a test says otherwise.
pub fn caps() -> Capabilities {
	Capabilities { backend: b"cpu-x86_64-avx512".to_vec().try_into().unwrap(), memory_mib: 16_384 }
}

pub fn content(tag: u8) -> ContentRef {
	ContentRef { sha256: [tag; 32], uri: b"https://example.org/blob".to_vec().try_into().unwrap() }
}

/// A valid compute spec with the given replication: 100 steps, a checkpoint every 10.
pub fn spec(replication: u8) -> JobSpec {
	JobSpec {
		work: Work::Compute { recipe: content(1), steps: 100, checkpoint_interval: 10 },
		eval_commitment: [4; 32],
		min_improvement: Perbill::from_percent(1),
		payout: PayoutRule::Equal,
		requirements: Requirements { backend: None, min_memory_mib: 0, min_completed_jobs: 0 },
		replication,
	}
}

/// A contest spec: at most 200 steps, checkpoints at most 20 apart, ranked payout.
pub fn contest(replication: u8) -> JobSpec {
	JobSpec {
		work: Work::Contest { bounds: content(2), max_steps: 200, max_checkpoint_interval: 20 },
		payout: PayoutRule::Ranked,
		..spec(replication)
	}
}

/// Claim by 20, submit by 50, reveal by 60, judge by 80.
pub const SUBMIT_BY: u64 = 50;
pub const JUDGE_BY: u64 = 80;
pub fn deadlines() -> Deadlines<u64> {
	Deadlines { claim_by: 20, submit_by: SUBMIT_BY, reveal_by: 60, judge_by: JUDGE_BY }
}

/// `key`'s proof of possession for account `who`, as a worker makes it.
pub fn proof(who: u64, key: &sr25519::Pair) -> sr25519::Signature {
	key.sign(&key_proof_message(WORKER_KEY_CONTEXT, &who))
}

/// Registers `who` as a miner with its test worker key.
pub fn register(who: u64) {
	Jobs::register_miner(RuntimeOrigin::signed(who), worker(who).public(), proof(who, &worker(who)), caps()).unwrap();
}

/// Posts a job by `owner` and returns its id.
pub fn post(owner: u64, replication: u8, budget: u128) -> JobId {
	let id = NextJobId::<Test>::get();
	Jobs::post_job(RuntimeOrigin::signed(owner), spec(replication), budget, deadlines()).unwrap();
	id
}

/// A correct attestation of `miner` for compute job `job_id` (100 steps, every 10); each
/// miner's result and root are its own.
pub fn attestation(job_id: JobId, miner: u64) -> Attestation<u64, H256> {
	Attestation {
		job_id,
		genesis_hash: Jobs::genesis_hash(),
		miner,
		recipe_sha256: [1; 32],
		result_sha256: [100u8.wrapping_add(miner as u8); 32],
		result_uri: b"https://example.org/adapter".to_vec().try_into().unwrap(),
		checkpoint_root: [50u8.wrapping_add(miner as u8); 32],
		steps: 100,
		checkpoint_interval: 10,
		final_train_loss_ppm: 1_234_567,
	}
}

/// Signs `att` with `key` the way a worker does.
pub fn sign(att: &Attestation<u64, H256>, key: &sr25519::Pair) -> sr25519::Signature {
	let mut message = ATTESTATION_CONTEXT.to_vec();
	att.encode_to(&mut message);
	key.sign(&message)
}

/// Submits a correctly signed result of `miner` for `job_id`.
pub fn deliver(job_id: JobId, miner: u64) {
	let att = attestation(job_id, miner);
	let sig = sign(&att, &worker(miner));
	Jobs::submit_result(RuntimeOrigin::signed(miner), job_id, att, sig).unwrap();
}

/// Free balance.
pub fn free(who: u64) -> u128 {
	Balances::free_balance(who)
}

/// Balance on hold for `reason`.
pub fn held(reason: HoldReason, who: u64) -> u128 {
	Jobs::held(reason, &who)
}

/// This pallet's events so far.
pub fn events() -> Vec<pallet_jobs::Event<Test>> {
	System::events()
		.into_iter()
		.filter_map(|r| match r.event {
			RuntimeEvent::Jobs(e) => Some(e),
			_ => None,
		})
		.collect()
}

/// The test externalities plus a keystore, where benchmarks keep their worker keys.
#[cfg(feature = "runtime-benchmarks")]
pub fn new_bench_ext() -> sp_io::TestExternalities {
	let mut ext = new_test_ext();
	ext.register_extension(sp_keystore::KeystoreExt::new(
		sp_keystore::testing::MemoryKeystore::new(),
	));
	ext
}
