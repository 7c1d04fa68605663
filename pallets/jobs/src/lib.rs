#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

#[cfg(feature = "runtime-benchmarks")]
pub mod benchmarking;
mod impls;
#[cfg(test)]
mod mock;
#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod tests;
pub mod types;
pub mod weights;

pub use impls::{ResultJudge, MAX_MIN_IMPROVEMENT};
pub use pallet::*;
pub use types::*;
pub use weights::WeightInfo;

#[frame_support::pallet]
pub mod pallet {
	use super::*;
	use frame_support::{
		pallet_prelude::*,
		traits::{
			fungible::{self, Credit},
			OnUnbalanced,
		},
	};
	use frame_system::pallet_prelude::*;
	use sp_core::sr25519;
	use sp_runtime::{traits::Zero, PerThing, Perbill};

	/// The balance type of the currency.
	pub type BalanceOf<T> =
		<<T as Config>::Currency as fungible::Inspect<<T as frame_system::Config>::AccountId>>::Balance;
	/// A job as this runtime stores it.
	pub type JobOf<T> = Job<
		<T as frame_system::Config>::AccountId,
		BalanceOf<T>,
		BlockNumberFor<T>,
		<T as Config>::MaxReplication,
	>;
	/// A miner record as this runtime stores it.
	pub type MinerOf<T> = MinerInfo<BalanceOf<T>, BlockNumberFor<T>>;
	/// An attestation as this runtime checks it.
	pub type AttestationOf<T> =
		Attestation<<T as frame_system::Config>::AccountId, <T as frame_system::Config>::Hash>;
	/// Funds taken out of circulation by a slash.
	pub type CreditOf<T> = Credit<<T as frame_system::Config>::AccountId, <T as Config>::Currency>;

	const STORAGE_VERSION: StorageVersion = StorageVersion::new(0);

	#[pallet::pallet]
	#[pallet::storage_version(STORAGE_VERSION)]
	pub struct Pallet<T>(_);

	#[pallet::config]
	pub trait Config: frame_system::Config {
		/// The overarching event type.
		#[allow(deprecated)]
		type RuntimeEvent: From<Event<Self>> + IsType<<Self as frame_system::Config>::RuntimeEvent>;

		/// The token: budgets, deposits and collateral are holds on it.
		type Currency: fungible::Inspect<Self::AccountId>
			+ fungible::Mutate<Self::AccountId>
			+ fungible::MutateHold<Self::AccountId, Reason = Self::RuntimeHoldReason>
			+ fungible::BalancedHold<Self::AccountId>;

		/// The runtime's hold reasons, of which this pallet's [`HoldReason`] is part.
		type RuntimeHoldReason: From<HoldReason>;

		/// Judges delivered results once submissions close (proof of contribution:
		/// `pallet-contribution`), ruling through [`Pallet::settle_judged`].
		type Judge: ResultJudge<Self::AccountId, BlockNumberFor<Self>>;

		/// Receives the protocol fee of every paid result.
		#[pallet::constant]
		type Treasury: Get<Self::AccountId>;

		/// Where slashed collateral goes (dropped: burned).
		type OnSlash: OnUnbalanced<CreditOf<Self>>;

		/// Held from a miner while it is registered.
		#[pallet::constant]
		type MinerDeposit: Get<BalanceOf<Self>>;

		/// Collateral of a claim, as a part of the claim's reward...
		#[pallet::constant]
		type CollateralRatio: Get<Perbill>;

		/// ...but never less than this.
		#[pallet::constant]
		type MinCollateral: Get<BalanceOf<Self>>;

		/// Part of a claim's collateral slashed when the miner delivers nothing in time.
		#[pallet::constant]
		type NoShowSlash: Get<Perbill>;

		/// Part of a passing result's payout that goes to the treasury.
		#[pallet::constant]
		type ProtocolFee: Get<Perbill>;

		/// Part of the reward per result that pays the validators who judged it (passing
		/// or below the bar).
		#[pallet::constant]
		type ValidatorFee: Get<Perbill>;

		/// Smallest reward per result a job may offer (keeps payouts above dust).
		#[pallet::constant]
		type MinReward: Get<BalanceOf<Self>>;

		/// Longest a job may run, from posting to its judging deadline.
		#[pallet::constant]
		type MaxJobDuration: Get<BlockNumberFor<Self>>;

		/// How far past `judge_by` the judge may extend its ruling (once).
		#[pallet::constant]
		type MaxJudgeExtension: Get<BlockNumberFor<Self>>;

		/// How long a finished or cancelled job's record is kept before it is pruned.
		#[pallet::constant]
		type RetainFinished: Get<BlockNumberFor<Self>>;

		/// Most miners that may work on one job (at most 32: ranked payouts weigh ranks by
		/// powers of two).
		#[pallet::constant]
		type MaxReplication: Get<u32>;

		/// Most unsettled claims one miner may hold.
		#[pallet::constant]
		type MaxActiveClaims: Get<u32>;

		/// Weights of the calls.
		type WeightInfo: WeightInfo;
	}

	/// Why this pallet holds funds.
	#[pallet::composite_enum]
	pub enum HoldReason {
		/// A miner's registration deposit.
		MinerDeposit,
		/// A miner's collateral for a claim.
		ClaimCollateral,
		/// A job owner's escrowed budget.
		JobEscrow,
	}

	/// Registered miners, by account.
	#[pallet::storage]
	pub type Miners<T: Config> = StorageMap<_, Blake2_128Concat, T::AccountId, MinerOf<T>>;

	/// Which account a worker key belongs to (one account per key).
	#[pallet::storage]
	pub type WorkerKeys<T: Config> = StorageMap<_, Blake2_128Concat, [u8; 32], T::AccountId>;

	/// Jobs, by id. Finished and cancelled jobs stay [`Config::RetainFinished`] blocks.
	#[pallet::storage]
	pub type Jobs<T: Config> = StorageMap<_, Twox64Concat, JobId, JobOf<T>>;

	/// The id the next job gets.
	#[pallet::storage]
	pub type NextJobId<T: Config> = StorageValue<_, JobId, ValueQuery>;

	/// Jobs to look at in a block (a deadline of theirs passes there, or they are to be
	/// pruned): one entry per job, at its `next_due`. A map, not a list per block, so no
	/// number of jobs due in one block can keep another job out of it.
	#[pallet::storage]
	pub type DueJobs<T: Config> =
		StorageDoubleMap<_, Twox64Concat, BlockNumberFor<T>, Twox64Concat, JobId, ()>;

	/// The first block whose due jobs `on_idle` has not fully processed.
	#[pallet::storage]
	pub type DueCursor<T: Config> = StorageValue<_, BlockNumberFor<T>, OptionQuery>;

	#[pallet::event]
	#[pallet::generate_deposit(pub(super) fn deposit_event)]
	pub enum Event<T: Config> {
		/// A miner registered; `deposit` is on hold.
		MinerRegistered { miner: T::AccountId, worker_key: [u8; 32], deposit: BalanceOf<T> },
		/// A miner changed its worker key or capabilities.
		MinerUpdated { miner: T::AccountId },
		/// A miner left; its deposit is released.
		MinerUnregistered { miner: T::AccountId },
		/// A job was posted; `budget` is on hold from the owner.
		JobPosted { job_id: JobId, owner: T::AccountId, budget: BalanceOf<T> },
		/// The owner cancelled a job nobody had claimed; the budget is released.
		JobCancelled { job_id: JobId },
		/// A miner claimed a job; `collateral` is on hold from it.
		JobClaimed { job_id: JobId, miner: T::AccountId, collateral: BalanceOf<T> },
		/// A miner delivered a signed result.
		ResultSubmitted { job_id: JobId, miner: T::AccountId, result_sha256: [u8; 32] },
		/// A claimer delivered nothing by the deadline: `refunded` to the owner, `slashed`
		/// from its collateral (the rest released).
		ClaimExpired {
			job_id: JobId,
			miner: T::AccountId,
			refunded: BalanceOf<T>,
			slashed: BalanceOf<T>,
		},
		/// Submissions closed with `results` delivered; the judge rules by `until`.
		JudgingOpened { job_id: JobId, results: u32, until: BlockNumberFor<T> },
		/// The judge moved its ruling to `until`.
		JudgingExtended { job_id: JobId, until: BlockNumberFor<T> },
		/// One result was judged and settled: the miner got `paid`, the treasury `fee`,
		/// the validators `validator_fee`, the owner `refunded`; `slashed` was taken from
		/// the miner's collateral (the rest released).
		ResultSettled {
			job_id: JobId,
			miner: T::AccountId,
			grade: Grade,
			paid: BalanceOf<T>,
			fee: BalanceOf<T>,
			validator_fee: BalanceOf<T>,
			refunded: BalanceOf<T>,
			slashed: BalanceOf<T>,
		},
		/// Every claim of a job is settled; `refunded` (unclaimed shares, rounding) went
		/// back to the owner.
		JobFinished { job_id: JobId, refunded: BalanceOf<T> },
		/// A finished or cancelled job's record was removed.
		JobPruned { job_id: JobId },
	}

	#[pallet::error]
	pub enum Error<T> {
		/// The account is already a registered miner.
		AlreadyRegistered,
		/// The account is not a registered miner.
		NotAMiner,
		/// Another account already uses this worker key.
		WorkerKeyInUse,
		/// The bytes given as a worker key are not a valid sr25519 public key.
		InvalidWorkerKey,
		/// The key's proof is not its signature of `key_proof_message(WORKER_KEY_CONTEXT,
		/// caller)`: only whoever holds a key may register it.
		BadKeyProof,
		/// The miner still has unsettled claims.
		HasActiveClaims,
		/// The miner holds as many unsettled claims as allowed.
		TooManyActiveClaims,
		/// The account cannot cover the deposit, budget or collateral.
		InsufficientBalance,
		/// Steps out of range (zero, or more than [`MAX_STEPS`]), or a checkpoint interval
		/// of zero or past the last step.
		InvalidHyperParameters,
		/// Replication is zero or above the maximum.
		InvalidReplication,
		/// The recipe's (or bounds') URI is empty.
		EmptyUri,
		/// Deadlines not in the future, not in the order claim <= submit < submit + 1 <
		/// reveal < judge, a judging period shorter than the judge needs, or the job longer
		/// than the maximum duration.
		InvalidDeadlines,
		/// The budget gives a result less than the minimum reward.
		BudgetTooLow,
		/// No job with this id.
		UnknownJob,
		/// Only the job's owner may do this.
		NotJobOwner,
		/// The job is finished or cancelled.
		JobNotOpen,
		/// The job has claims; it can no longer be cancelled.
		JobHasClaims,
		/// The claim period is over.
		ClaimPeriodOver,
		/// Every replica of the job is claimed.
		JobFull,
		/// This miner already claimed this job.
		AlreadyClaimed,
		/// The miner does not meet the job's requirements.
		RequirementsNotMet,
		/// This miner has no claim on this job.
		NoClaim,
		/// The claim is not waiting for a result (already delivered or settled).
		NotWorking,
		/// The submission deadline has passed.
		SubmissionPeriodOver,
		/// The attestation is for another job.
		WrongJob,
		/// The attestation is for another chain.
		WrongChain,
		/// The attestation names another miner.
		WrongMiner,
		/// The attestation names another recipe than the job's.
		WrongRecipe,
		/// The attestation's steps or checkpoint interval are not the job's (or outside a
		/// contest's bounds).
		WrongSteps,
		/// The signature is not the miner's worker key's over this attestation.
		BadSignature,
		/// The quality bar is above [`MAX_MIN_IMPROVEMENT`].
		InvalidQualityBar,
		/// An owner may not claim its own job.
		OwnJob,
		/// Nothing of this job is due yet.
		NothingDue,
		/// The job is not being judged.
		NotJudging,
		/// The grades given are not one per delivered result.
		WrongGradeCount,
		/// The judging deadline may move only later, once, and by at most
		/// [`Config::MaxJudgeExtension`].
		InvalidExtension,
	}

	#[pallet::hooks]
	impl<T: Config> Hooks<BlockNumberFor<T>> for Pallet<T> {
		/// Settles jobs whose deadlines passed, as far as the block's spare weight goes.
		fn on_idle(now: BlockNumberFor<T>, remaining: Weight) -> Weight {
			Self::process_due(now, remaining)
		}

		fn integrity_test() {
			assert!(
				(1..=32).contains(&T::MaxReplication::get()),
				"MaxReplication must be 1..=32 (ranked payouts weigh ranks by 2^rank)"
			);
			assert!(!T::RetainFinished::get().is_zero(), "RetainFinished must be positive");
			assert!(
				T::ProtocolFee::get().deconstruct().saturating_add(T::ValidatorFee::get().deconstruct()) <
					Perbill::ACCURACY,
				"fees must leave the miner something"
			);
		}

		#[cfg(feature = "try-runtime")]
		fn try_state(_n: BlockNumberFor<T>) -> Result<(), sp_runtime::TryRuntimeError> {
			Self::do_try_state()
		}
	}

	#[pallet::call]
	impl<T: Config> Pallet<T> {
		/// Register as a miner: `worker_key` is the sr25519 key the worker signs results
		/// with, `key_proof` its signature of [`key_proof_message`]`(`[`WORKER_KEY_CONTEXT`]`,
		/// caller)`; [`Config::MinerDeposit`] is put on hold.
		#[pallet::call_index(0)]
		#[pallet::weight(T::WeightInfo::register_miner())]
		pub fn register_miner(
			origin: OriginFor<T>,
			worker_key: sr25519::Public,
			key_proof: sr25519::Signature,
			capabilities: Capabilities,
		) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_register_miner(who, worker_key.0, key_proof.0, capabilities)
		}

		/// Change the worker key (with its proof, as for [`Pallet::register_miner`]) and/or
		/// the capabilities.
		#[pallet::call_index(1)]
		#[pallet::weight(T::WeightInfo::update_miner())]
		pub fn update_miner(
			origin: OriginFor<T>,
			worker_key: Option<(sr25519::Public, sr25519::Signature)>,
			capabilities: Option<Capabilities>,
		) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_update_miner(who, worker_key.map(|(k, p)| (k.0, p.0)), capabilities)
		}

		/// Leave the market; only with no unsettled claims. The deposit is released.
		#[pallet::call_index(2)]
		#[pallet::weight(T::WeightInfo::unregister_miner())]
		pub fn unregister_miner(origin: OriginFor<T>) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_unregister_miner(who)
		}

		/// Post a job: `budget` (for all replicas together) goes on hold until settlement.
		#[pallet::call_index(3)]
		#[pallet::weight(T::WeightInfo::post_job())]
		pub fn post_job(
			origin: OriginFor<T>,
			spec: JobSpec,
			budget: BalanceOf<T>,
			deadlines: Deadlines<BlockNumberFor<T>>,
		) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_post_job(who, spec, budget, deadlines).map(|_| ())
		}

		/// Cancel a job nobody claimed; the whole budget is released.
		#[pallet::call_index(4)]
		#[pallet::weight(T::WeightInfo::cancel_job())]
		pub fn cancel_job(origin: OriginFor<T>, job_id: JobId) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_cancel_job(who, job_id)
		}

		/// Claim a job as a registered miner that meets its requirements; the claim's
		/// collateral goes on hold.
		#[pallet::call_index(5)]
		#[pallet::weight(T::WeightInfo::claim_job(T::MaxReplication::get()))]
		pub fn claim_job(origin: OriginFor<T>, job_id: JobId) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_claim_job(who, job_id)
		}

		/// Deliver a result: an attestation signed by the miner's worker key.
		#[pallet::call_index(6)]
		#[pallet::weight(T::WeightInfo::submit_result(T::MaxReplication::get()))]
		pub fn submit_result(
			origin: OriginFor<T>,
			job_id: JobId,
			attestation: AttestationOf<T>,
			signature: sr25519::Signature,
		) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_submit_result(who, job_id, attestation, signature)
		}

		/// Anyone may settle what is due on a job (expired claims, the close of
		/// submissions, the judging deadline, pruning) without waiting for `on_idle`.
		#[pallet::call_index(10)]
		#[pallet::weight(Pallet::<T>::process_job_weight())]
		pub fn settle_expired(origin: OriginFor<T>, job_id: JobId) -> DispatchResult {
			ensure_signed(origin)?;
			Self::do_settle_expired(job_id)
		}
	}

	#[pallet::view_functions]
	impl<T: Config> Pallet<T> {
		/// A job by id.
		pub fn job(job_id: JobId) -> Option<JobOf<T>> {
			Jobs::<T>::get(job_id)
		}

		/// Open jobs `miner` could claim now (all open, claimable jobs if `miner` is
		/// `None`), in id order from `from_id`, at most `limit` (capped at 100).
		pub fn open_jobs(
			miner: Option<T::AccountId>,
			from_id: JobId,
			limit: u32,
		) -> alloc::vec::Vec<(JobId, JobOf<T>)> {
			Self::claimable_jobs(miner, from_id, limit)
		}

		/// A miner's record.
		pub fn miner(who: T::AccountId) -> Option<MinerOf<T>> {
			Miners::<T>::get(who)
		}
	}
}
