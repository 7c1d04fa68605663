//! A mock runtime: System, Balances, the market (Jobs) and its judge (Contribution).
//! Accounts are `u64`, balances `u128`.

use crate::{self as pallet_contribution, *};
use frame_support::{
	derive_impl, parameter_types,
	traits::{ConstU128, ConstU32, ConstU64, OnIdle},
	weights::Weight,
};
use pallet_jobs::{
	Attestation, Capabilities, ContentRef, Deadlines, JobId, JobSpec, PayoutRule, Requirements, Work,
	ATTESTATION_CONTEXT,
};
use sp_core::{sr25519, Pair, H256};
use sp_runtime::{BuildStorage, Perbill};

type Block = frame_system::mocking::MockBlock<Test>;

frame_support::construct_runtime!(
	pub enum Test {
		System: frame_system,
		Balances: pallet_balances,
		Jobs: pallet_jobs,
		Contribution: pallet_contribution,
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
/// An account with almost nothing.
pub const POOR: u64 = 500;
/// The job owner of most tests.
pub const OWNER: u64 = 1;
/// Smallest validator bond.
pub const MIN_BOND: u128 = 1_000;
/// Windows (blocks).
pub const REVEAL_WINDOW: u64 = 5;
pub const MIN_COMMIT: u64 = 5;
pub const EXTENSION: u64 = 15;
/// Claim by 10, submit by 20, reveal by 25, judge by 40 (so commits until 35).
pub const CLAIM_BY: u64 = 10;
pub const SUBMIT_BY: u64 = 20;
pub const REVEAL_BY: u64 = 25;
pub const JUDGE_BY: u64 = 40;
pub const COMMIT_BY: u64 = JUDGE_BY - REVEAL_WINDOW;
/// The eval set and salt of the test jobs.
pub const EVAL_SET: [u8; 32] = [0xE0; 32];
pub const EVAL_SALT: [u8; 32] = [0x5A; 32];

parameter_types! {
	pub const TreasuryAccount: u64 = TREASURY;
	pub const CollateralRatio: Perbill = Perbill::from_percent(10);
	pub const NoShowSlash: Perbill = Perbill::from_percent(50);
	pub const ProtocolFee: Perbill = Perbill::from_percent(5);
	pub const ValidatorFee: Perbill = Perbill::from_percent(10);
	pub static NoRevealSlash: Perbill = Perbill::from_percent(2);
	pub const WrongVerdictSlash: Perbill = Perbill::from_percent(10);
	pub const FraudReporterShare: Perbill = Perbill::from_percent(50);
	pub const LossTolerance: Perbill = Perbill::from_parts(1_000_000); // 0.1%
	pub static CommitteeSize: u32 = 3;
}

impl pallet_jobs::Config for Test {
	type RuntimeEvent = RuntimeEvent;
	type Currency = Balances;
	type RuntimeHoldReason = RuntimeHoldReason;
	type Judge = Contribution;
	type Treasury = TreasuryAccount;
	type OnSlash = ();
	type MinerDeposit = ConstU128<100>;
	type CollateralRatio = CollateralRatio;
	type MinCollateral = ConstU128<10>;
	type NoShowSlash = NoShowSlash;
	type ProtocolFee = ProtocolFee;
	type ValidatorFee = ValidatorFee;
	type MinReward = ConstU128<100>;
	type MaxJobDuration = ConstU64<1_000>;
	type MaxJudgeExtension = ConstU64<20>;
	type RetainFinished = ConstU64<50>;
	type MaxReplication = ConstU32<3>;
	type MaxActiveClaims = ConstU32<4>;
	type WeightInfo = ();
}

impl pallet_contribution::Config for Test {
	type RuntimeEvent = RuntimeEvent;
	type Randomness = ParentHashRandomness<Test>;
	type CommitteeSize = CommitteeSize;
	type SegmentsPerResult = ConstU32<2>;
	type MaxValidators = ConstU32<5>;
	type MinValidatorBond = ConstU128<MIN_BOND>;
	type MinCommitWindow = ConstU64<MIN_COMMIT>;
	type RevealWindow = ConstU64<REVEAL_WINDOW>;
	type ExtensionPeriod = ConstU64<EXTENSION>;
	type NoRevealSlash = NoRevealSlash;
	type WrongVerdictSlash = WrongVerdictSlash;
	type FraudReporterShare = FraudReporterShare;
	type LossTolerance = LossTolerance;
	type WeightInfo = ();
}

/// Accounts 1..=40 and the treasury start with [`START`]; [`POOR`] with 50.
pub fn new_test_ext() -> sp_io::TestExternalities {
	let mut t = frame_system::GenesisConfig::<Test>::default().build_storage().unwrap();
	let mut balances: Vec<(u64, u128)> = (1..=40).map(|a| (a, START)).collect();
	balances.push((TREASURY, START));
	balances.push((POOR, 50));
	pallet_balances::GenesisConfig::<Test> { balances, ..Default::default() }
		.assimilate_storage(&mut t)
		.unwrap();
	CommitteeSize::set(3);
	NoRevealSlash::set(Perbill::from_percent(2));
	let mut ext = sp_io::TestExternalities::new(t);
	ext.execute_with(|| {
		System::set_block_number(1);
		frame_system::BlockHash::<Test>::insert(0, H256::repeat_byte(0x42));
	});
	ext
}

/// The test externalities plus a keystore, where benchmarks keep their keys.
#[cfg(feature = "runtime-benchmarks")]
pub fn new_bench_ext() -> sp_io::TestExternalities {
	let mut ext = new_test_ext();
	ext.register_extension(sp_keystore::KeystoreExt::new(sp_keystore::testing::MemoryKeystore::new()));
	ext
}

/// Runs `test`, then checks both pallets' invariants.
pub fn test(f: impl FnOnce()) {
	new_test_ext().execute_with(|| {
		f();
		check_invariants();
	});
}

pub fn check_invariants() {
	Jobs::do_try_state().expect("market invariants hold");
	Contribution::do_try_state().expect("judge invariants hold");
}

/// Advances to block `n`, with a parent hash per block (the draw's randomness) and
/// `on_idle` with unlimited weight.
pub fn run_to_block(n: u64) {
	while System::block_number() < n {
		let b = System::block_number() + 1;
		frame_system::BlockHash::<Test>::insert(b - 1, H256::from_low_u64_be(b.wrapping_mul(0x9E37_79B9)));
		System::set_block_number(b);
		AllPalletsWithSystem::on_idle(b, Weight::MAX);
	}
}

/// Worker key of miner `who`; report key of validator `who`.
pub fn key(who: u64) -> sr25519::Pair {
	sr25519::Pair::from_seed(&[who as u8; 32])
}

pub fn caps() -> Capabilities {
	Capabilities { backend: b"cpu-test".to_vec().try_into().unwrap(), memory_mib: 16_384 }
}

pub fn content(tag: u8) -> ContentRef {
	ContentRef { sha256: [tag; 32], uri: b"https://example.org/blob".to_vec().try_into().unwrap() }
}

/// A compute job: 100 steps, a checkpoint every 10 (10 segments); 1% better than the
/// base model to pass.
pub fn spec(replication: u8) -> JobSpec {
	JobSpec {
		work: Work::Compute { recipe: content(1), steps: 100, checkpoint_interval: 10 },
		eval_commitment: impls_eval_commitment(),
		min_improvement: Perbill::from_percent(1),
		payout: PayoutRule::Equal,
		requirements: Requirements { backend: None, min_memory_mib: 0, min_completed_jobs: 0 },
		replication,
	}
}

fn impls_eval_commitment() -> [u8; 32] {
	crate::impls::eval_commitment(&EVAL_SET, &EVAL_SALT)
}

/// A contest: up to 200 steps, checkpoints at most 20 apart, ranked payout.
pub fn contest(replication: u8) -> JobSpec {
	JobSpec {
		work: Work::Contest { bounds: content(2), max_steps: 200, max_checkpoint_interval: 20 },
		payout: PayoutRule::Ranked,
		..spec(replication)
	}
}

pub fn deadlines() -> Deadlines<u64> {
	Deadlines { claim_by: CLAIM_BY, submit_by: SUBMIT_BY, reveal_by: REVEAL_BY, judge_by: JUDGE_BY }
}

/// `key`'s proof of possession for `who` in `context` (a worker key's or a report key's).
pub fn proof(context: &[u8], who: u64, key: &sr25519::Pair) -> sr25519::Signature {
	key.sign(&pallet_jobs::key_proof_message(context, &who))
}

pub fn register_miner(who: u64) {
	let proof = proof(pallet_jobs::WORKER_KEY_CONTEXT, who, &key(who));
	Jobs::register_miner(RuntimeOrigin::signed(who), key(who).public(), proof, caps()).unwrap();
}

pub fn register_validator(who: u64, bond: u128) {
	let proof = proof(REPORT_KEY_CONTEXT, who, &key(who));
	Contribution::register_validator(RuntimeOrigin::signed(who), key(who).public(), proof, bond).unwrap();
}

/// Posts `spec` by [`OWNER`] with `budget`; returns its id.
pub fn post(spec: JobSpec, budget: u128) -> JobId {
	let id = pallet_jobs::NextJobId::<Test>::get();
	Jobs::post_job(RuntimeOrigin::signed(OWNER), spec, budget, deadlines()).unwrap();
	id
}

/// `miner`'s attestation for a compute job: its own result and root.
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
		final_train_loss_ppm: 1_000_000,
	}
}

/// Claims `job_id` as `miner` and submits `att`, signed by the miner's worker key.
pub fn claim_and_submit(job_id: JobId, miner: u64, att: Attestation<u64, H256>) {
	Jobs::claim_job(RuntimeOrigin::signed(miner), job_id).unwrap();
	submit(job_id, miner, att);
}

/// Submits `att` for `miner`'s claim, signed by its worker key.
pub fn submit(job_id: JobId, miner: u64, att: Attestation<u64, H256>) {
	let mut message = ATTESTATION_CONTEXT.to_vec();
	codec::Encode::encode_to(&att, &mut message);
	let sig = key(miner).sign(&message);
	Jobs::submit_result(RuntimeOrigin::signed(miner), job_id, att, sig).unwrap();
}

/// A report: the base loss, and per result its replay verdict and loss.
pub fn report(base: Option<u32>, results: &[(Replay, Option<u32>)]) -> Report {
	Report {
		base_loss_ppm: base,
		results: results
			.iter()
			.map(|(replay, loss)| ResultReport { replay: *replay, loss_ppm: *loss, bits_per_byte_ppm: loss.map(|l| l / 2) })
			.collect::<Vec<_>>()
			.try_into()
			.unwrap(),
	}
}

/// The salt validator `v` uses.
pub fn salt(v: u64) -> [u8; 32] {
	[v as u8 ^ 0xA5; 32]
}

/// Commits `report` for seat `v` on `job_id` (signed by its report key).
pub fn commit(job_id: JobId, v: u64, report: &Report) -> sp_runtime::DispatchResult {
	let round = Cases::<Test>::get(job_id).map_or(0, |c| c.round);
	let c = Contribution::commitment(job_id, round, &v, report, &salt(v));
	let sig = key(v).sign(&Contribution::commit_message(job_id, round, &v, &c));
	Contribution::commit_report(RuntimeOrigin::signed(v), job_id, v, c, sig)
}

/// Reveals `report` for seat `v`.
pub fn reveal(job_id: JobId, v: u64, report: Report) -> sp_runtime::DispatchResult {
	Contribution::reveal_report(RuntimeOrigin::signed(v), job_id, v, report, salt(v))
}

/// The seats of `job_id`'s committee.
pub fn seats(job_id: JobId) -> Vec<u64> {
	Cases::<Test>::get(job_id).map(|c| c.seats.iter().map(|s| s.validator).collect()).unwrap_or_default()
}

/// The owner reveals the test eval set.
pub fn reveal_eval(job_id: JobId) -> sp_runtime::DispatchResult {
	Contribution::reveal_eval(RuntimeOrigin::signed(OWNER), job_id, content(0xE0), EVAL_SALT)
}

pub fn free(who: u64) -> u128 {
	Balances::free_balance(who)
}

pub fn bond(who: u64) -> u128 {
	Validators::<Test>::get(who).map_or(0, |v| v.bond)
}

pub fn events() -> Vec<pallet_contribution::Event<Test>> {
	System::events()
		.into_iter()
		.filter_map(|r| match r.event {
			RuntimeEvent::Contribution(e) => Some(e),
			_ => None,
		})
		.collect()
}

pub fn job_events() -> Vec<pallet_jobs::Event<Test>> {
	System::events()
		.into_iter()
		.filter_map(|r| match r.event {
			RuntimeEvent::Jobs(e) => Some(e),
			_ => None,
		})
		.collect()
}
