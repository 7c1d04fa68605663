//! Configuration of each pallet of the runtime.

use crate::{
	currency::{EXISTENTIAL_DEPOSIT, MICRO_MOLT, MILLI_MOLT, MOLT},
	time::{DAYS, HOURS, SLOT_DURATION},
	AccountId, Aura, Balance, Balances, Block, BlockNumber, CollatorSelection, Contribution, Hash, Nonce,
	PalletInfo, Runtime, RuntimeCall, RuntimeEvent, RuntimeFreezeReason,
	RuntimeHoldReason, RuntimeOrigin, RuntimeTask, Session, SessionKeys, System, VERSION,
};
use alloc::vec;
use frame_support::{
	derive_impl,
	dispatch::DispatchClass,
	parameter_types,
	traits::{
		fungible::{Balanced, Credit},
		ConstBool, ConstU128, ConstU32, ConstU64, ConstU8, HandleMessage, OnUnbalanced,
	},
	weights::{
		constants::{
			BlockExecutionWeight, ExtrinsicBaseWeight, RocksDbWeight, WEIGHT_REF_TIME_PER_SECOND,
		},
		ConstantMultiplier, Weight, WeightToFeeCoefficient, WeightToFeeCoefficients,
		WeightToFeePolynomial,
	},
	BoundedSlice, PalletId,
};
use frame_system::{
	limits::{BlockLength, BlockWeights},
	EnsureRoot,
};
use sp_runtime::{
	traits::{AccountIdConversion, AccountIdLookup, BlakeTwo256},
	Perbill,
};
use sp_version::RuntimeVersion;

/// About a tenth of the block weight goes to `on_initialize` hooks.
const AVERAGE_ON_INITIALIZE_RATIO: Perbill = Perbill::from_percent(10);
/// Normal extrinsics may fill 75% of a block; the rest is kept for operational ones.
const NORMAL_DISPATCH_RATIO: Perbill = Perbill::from_percent(75);
/// Two seconds of compute per block (async backing), and the relay chain's PoV limit.
const MAXIMUM_BLOCK_WEIGHT: Weight = Weight::from_parts(
	WEIGHT_REF_TIME_PER_SECOND.saturating_mul(2),
	cumulus_primitives_core::relay_chain::MAX_POV_SIZE as u64,
);

/// Relay-chain slot length the parachain builds against.
pub const RELAY_CHAIN_SLOT_DURATION_MILLIS: u32 = 6000;
/// Parachain blocks the relay chain may include per relay block.
pub const BLOCK_PROCESSING_VELOCITY: u32 = 1;
/// Parachain blocks that may be built before the relay chain includes them.
pub const UNINCLUDED_SEGMENT_CAPACITY: u32 = 3;
/// Build on the newest relay parent.
pub const RELAY_PARENT_OFFSET: u32 = 0;

parameter_types! {
	pub const Version: RuntimeVersion = VERSION;
	pub RuntimeBlockLength: BlockLength = BlockLength::builder()
		.max_length(5 * 1024 * 1024)
		.modify_max_length_for_class(DispatchClass::Normal, |m| *m = NORMAL_DISPATCH_RATIO * *m)
		.build();
	pub RuntimeBlockWeights: BlockWeights = BlockWeights::builder()
		.base_block(BlockExecutionWeight::get())
		.for_class(DispatchClass::all(), |weights| {
			weights.base_extrinsic = ExtrinsicBaseWeight::get();
		})
		.for_class(DispatchClass::Normal, |weights| {
			weights.max_total = Some(NORMAL_DISPATCH_RATIO * MAXIMUM_BLOCK_WEIGHT);
		})
		.for_class(DispatchClass::Operational, |weights| {
			weights.max_total = Some(MAXIMUM_BLOCK_WEIGHT);
			weights.reserved = Some(
				MAXIMUM_BLOCK_WEIGHT - NORMAL_DISPATCH_RATIO * MAXIMUM_BLOCK_WEIGHT,
			);
		})
		.avg_block_initialization(AVERAGE_ON_INITIALIZE_RATIO)
		.build_or_panic();
	/// Generic Substrate address format, so dev accounts read as everywhere else.
	pub const SS58Prefix: u16 = 42;
}

#[derive_impl(frame_system::config_preludes::ParaChainDefaultConfig)]
impl frame_system::Config for Runtime {
	type AccountId = AccountId;
	type Nonce = Nonce;
	type Hash = Hash;
	type Block = Block;
	type Lookup = AccountIdLookup<AccountId, ()>;
	type BlockHashCount = ConstU32<4096>;
	type BlockWeights = RuntimeBlockWeights;
	type BlockLength = RuntimeBlockLength;
	type Version = Version;
	type AccountData = pallet_balances::AccountData<Balance>;
	type DbWeight = RocksDbWeight;
	type SS58Prefix = SS58Prefix;
	type OnSetCode = cumulus_pallet_parachain_system::ParachainSetCode<Self>;
	type MaxConsumers = ConstU32<16>;
	type Hashing = BlakeTwo256;
	type RuntimeEvent = RuntimeEvent;
	type RuntimeOrigin = RuntimeOrigin;
	type RuntimeCall = RuntimeCall;
	type RuntimeTask = RuntimeTask;
	type PalletInfo = PalletInfo;
}

impl pallet_timestamp::Config for Runtime {
	type Moment = u64;
	type OnTimestampSet = Aura;
	// Aura checks the slot; a zero minimum period lets several blocks share a slot.
	type MinimumPeriod = ConstU64<0>;
	type WeightInfo = ();
}

impl pallet_authorship::Config for Runtime {
	type FindAuthor = pallet_session::FindAccountFromAuthorIndex<Self, Aura>;
	type EventHandler = (CollatorSelection,);
}

parameter_types! {
	pub const ExistentialDeposit: Balance = EXISTENTIAL_DEPOSIT;
}

impl pallet_balances::Config for Runtime {
	type Balance = Balance;
	type DustRemoval = ();
	type RuntimeEvent = RuntimeEvent;
	type ExistentialDeposit = ExistentialDeposit;
	type AccountStore = System;
	type WeightInfo = pallet_balances::weights::SubstrateWeight<Runtime>;
	type MaxLocks = ConstU32<50>;
	type MaxReserves = ConstU32<50>;
	type ReserveIdentifier = [u8; 8];
	type RuntimeHoldReason = RuntimeHoldReason;
	type RuntimeFreezeReason = RuntimeFreezeReason;
	type FreezeIdentifier = RuntimeFreezeReason;
	type MaxFreezes = ConstU32<8>;
	type DoneSlashHandler = ();
}

parameter_types! {
	/// The treasury: receives transaction fees (and later protocol fees).
	pub const TreasuryPalletId: PalletId = PalletId(*b"mlt/trsy");
	pub TreasuryAccount: AccountId = TreasuryPalletId::get().into_account_truncating();
	/// Per byte of an extrinsic.
	pub const TransactionByteFee: Balance = 10 * MICRO_MOLT;
}

/// Sends transaction fees and tips to the treasury account, so fees never change the
/// total issuance (only emission and slashing burns may).
pub struct FeesToTreasury;
impl OnUnbalanced<Credit<AccountId, Balances>> for FeesToTreasury {
	fn on_nonzero_unbalanced(amount: Credit<AccountId, Balances>) {
		// The treasury is endowed at genesis, so depositing never falls below the
		// existential deposit; if it ever did, the credit would be burned on drop.
		let _ = <Balances as Balanced<AccountId>>::resolve(&TreasuryAccount::get(), amount);
	}
}

/// Maps the base weight of an extrinsic to 0.1 milli-MOLT, linearly.
pub struct WeightToFee;
impl WeightToFeePolynomial for WeightToFee {
	type Balance = Balance;
	fn polynomial() -> WeightToFeeCoefficients<Self::Balance> {
		let p = MILLI_MOLT / 10;
		let q = Balance::from(ExtrinsicBaseWeight::get().ref_time());
		vec![WeightToFeeCoefficient {
			degree: 1,
			negative: false,
			coeff_frac: Perbill::from_rational(p % q, q),
			coeff_integer: p / q,
		}]
		.into()
	}
}

impl pallet_transaction_payment::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	type OnChargeTransaction = pallet_transaction_payment::FungibleAdapter<Balances, FeesToTreasury>;
	type WeightToFee = WeightToFee;
	type LengthToFee = ConstantMultiplier<Balance, TransactionByteFee>;
	type FeeMultiplierUpdate = ();
	type OperationalFeeMultiplier = ConstU8<5>;
	type WeightInfo = pallet_transaction_payment::weights::SubstrateWeight<Runtime>;
}

parameter_types! {
	pub const ReservedXcmpWeight: Weight = MAXIMUM_BLOCK_WEIGHT.saturating_div(4);
	pub const ReservedDmpWeight: Weight = MAXIMUM_BLOCK_WEIGHT.saturating_div(4);
}

/// How blocks are paced against the relay chain (async backing, one block per relay slot).
pub type ConsensusHook = cumulus_pallet_aura_ext::FixedVelocityConsensusHook<
	Runtime,
	RELAY_CHAIN_SLOT_DURATION_MILLIS,
	BLOCK_PROCESSING_VELOCITY,
	UNINCLUDED_SEGMENT_CAPACITY,
>;

/// Downward messages from the relay chain. The runtime has no XCM executor yet (the
/// market needs none), so messages are accepted and dropped rather than left to pile up.
pub struct DropDownwardMessages;
impl HandleMessage for DropDownwardMessages {
	type MaxMessageLen = ConstU32<{ 64 * 1024 }>;

	fn handle_message(_message: BoundedSlice<u8, Self::MaxMessageLen>) {}

	fn handle_messages<'a>(
		messages: impl Iterator<Item = BoundedSlice<'a, u8, Self::MaxMessageLen>>,
	) {
		messages.for_each(drop);
	}

	fn sweep_queue() {}
}

impl cumulus_pallet_parachain_system::Config for Runtime {
	type WeightInfo = cumulus_pallet_parachain_system::weights::SubstrateWeight<Runtime>;
	type RuntimeEvent = RuntimeEvent;
	type OnSystemEvent = ();
	type SelfParaId = parachain_info::Pallet<Runtime>;
	type OutboundXcmpMessageSource = ();
	type DmpQueue = DropDownwardMessages;
	type ReservedDmpWeight = ReservedDmpWeight;
	type XcmpMessageHandler = ();
	type ReservedXcmpWeight = ReservedXcmpWeight;
	type CheckAssociatedRelayNumber = cumulus_pallet_parachain_system::RelayNumberMonotonicallyIncreases;
	type ConsensusHook = ConsensusHook;
	type RelayParentOffset = ConstU32<RELAY_PARENT_OFFSET>;
	type SchedulingSignatureVerifier = ();
}

impl parachain_info::Config for Runtime {}

impl cumulus_pallet_aura_ext::Config for Runtime {}

impl pallet_aura::Config for Runtime {
	type AuthorityId = crate::AuraId;
	type DisabledValidators = ();
	type MaxAuthorities = ConstU32<100>;
	type AllowMultipleBlocksPerSlot = ConstBool<true>;
	type SlotDuration = ConstU64<SLOT_DURATION>;
}

parameter_types! {
	pub const SessionPeriod: BlockNumber = 6 * HOURS;
	pub const SessionOffset: BlockNumber = 0;
}

impl pallet_session::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	type ValidatorId = AccountId;
	type ValidatorIdOf = pallet_collator_selection::IdentityCollator;
	type ShouldEndSession = pallet_session::PeriodicSessions<SessionPeriod, SessionOffset>;
	type NextSessionRotation = pallet_session::PeriodicSessions<SessionPeriod, SessionOffset>;
	type SessionManager = CollatorSelection;
	type SessionHandler = <SessionKeys as sp_runtime::traits::OpaqueKeys>::KeyTypeIdProviders;
	type Keys = SessionKeys;
	type DisablingStrategy = ();
	type WeightInfo = ();
	type Currency = Balances;
	type KeyDeposit = ();
}

parameter_types! {
	pub const PotId: PalletId = PalletId(*b"PotStake");
}

impl pallet_collator_selection::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	type Currency = Balances;
	type UpdateOrigin = EnsureRoot<AccountId>;
	type PotId = PotId;
	type MaxCandidates = ConstU32<100>;
	type MinEligibleCollators = ConstU32<1>;
	type MaxInvulnerables = ConstU32<20>;
	// A multiple of the session length, so kicks line up with sessions.
	type KickThreshold = SessionPeriod;
	type ValidatorId = AccountId;
	type ValidatorIdOf = pallet_collator_selection::IdentityCollator;
	type ValidatorRegistration = Session;
	type WeightInfo = ();
}

impl pallet_utility::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	type RuntimeCall = RuntimeCall;
	type PalletsOrigin = crate::OriginCaller;
	type WeightInfo = pallet_utility::weights::SubstrateWeight<Runtime>;
}

parameter_types! {
	pub const JobsCollateralRatio: Perbill = Perbill::from_percent(10);
	pub const JobsNoShowSlash: Perbill = Perbill::from_percent(50);
	pub const JobsProtocolFee: Perbill = Perbill::from_percent(5);
	pub const JobsValidatorFee: Perbill = Perbill::from_percent(5);
}

impl pallet_jobs::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	type Currency = Balances;
	type RuntimeHoldReason = RuntimeHoldReason;
	// Proof of contribution: a committee of validators replays and scores every result.
	type Judge = Contribution;
	type Treasury = TreasuryAccount;
	// Slashed collateral is burned.
	type OnSlash = ();
	type MinerDeposit = ConstU128<{ 10 * MOLT }>;
	type CollateralRatio = JobsCollateralRatio;
	type MinCollateral = ConstU128<MOLT>;
	type NoShowSlash = JobsNoShowSlash;
	type ProtocolFee = JobsProtocolFee;
	type ValidatorFee = JobsValidatorFee;
	type MinReward = ConstU128<MOLT>;
	type MaxJobDuration = ConstU32<{ 30 * DAYS }>;
	type MaxJudgeExtension = ConstU32<{ 2 * DAYS }>;
	type RetainFinished = ConstU32<{ 7 * DAYS }>;
	type MaxReplication = ConstU32<8>;
	type MaxActiveClaims = ConstU32<16>;
	type WeightInfo = pallet_jobs::weights::SubstrateWeight<Runtime>;
}

parameter_types! {
	// As much as a wrong verdict: withholding a reveal that would lose must not pay.
	pub const ContributionNoRevealSlash: Perbill = Perbill::from_percent(10);
	pub const ContributionWrongVerdictSlash: Perbill = Perbill::from_percent(10);
	pub const ContributionFraudReporterShare: Perbill = Perbill::from_percent(50);
	/// 0.1%: honest seats on one backend class agree to the bit.
	pub const ContributionLossTolerance: Perbill = Perbill::from_parts(1_000_000);
}

impl pallet_contribution::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	// Dev and test networks: predictable by the block author (see the pallet's README).
	// A production parachain reads the relay chain's BABE randomness instead.
	type Randomness = pallet_contribution::ParentHashRandomness<Runtime>;
	type CommitteeSize = ConstU32<3>;
	// Two distinct segments per result: 2 x interval / steps of the training compute (5%
	// at 40 checkpoints); a miner that fakes all but one of its segments is caught for sure.
	type SegmentsPerResult = ConstU32<2>;
	type MaxValidators = ConstU32<64>;
	type MinValidatorBond = ConstU128<{ 100 * MOLT }>;
	// Dev-chain windows (6 s blocks): half a minute each, two minutes for an extension.
	type MinCommitWindow = ConstU32<5>;
	type RevealWindow = ConstU32<5>;
	type ExtensionPeriod = ConstU32<20>;
	type NoRevealSlash = ContributionNoRevealSlash;
	type WrongVerdictSlash = ContributionWrongVerdictSlash;
	type FraudReporterShare = ContributionFraudReporterShare;
	type LossTolerance = ContributionLossTolerance;
	type WeightInfo = pallet_contribution::weights::SubstrateWeight<Runtime>;
}

impl pallet_sudo::Config for Runtime {
	type RuntimeEvent = RuntimeEvent;
	type RuntimeCall = RuntimeCall;
	type WeightInfo = pallet_sudo::weights::SubstrateWeight<Runtime>;
}
