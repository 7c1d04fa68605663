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

pub use impls::ParentHashRandomness;
pub use pallet::*;
pub use types::*;
pub use weights::WeightInfo;

#[frame_support::pallet]
pub mod pallet {
	use super::*;
	use frame_support::{
		pallet_prelude::*,
		traits::Randomness,
	};
	use frame_system::pallet_prelude::*;
	use pallet_jobs::{ContentRef, Grade, JobId};
	use sp_core::sr25519;
	use sp_runtime::{traits::Zero, Perbill};

	/// The balance type (the market's currency).
	pub type BalanceOf<T> = pallet_jobs::BalanceOf<T>;
	/// A validator record as this runtime stores it.
	pub type ValidatorOf<T> = ValidatorInfo<BalanceOf<T>, BlockNumberFor<T>>;
	/// A case as this runtime stores it.
	pub type CaseOf<T> = Case<<T as frame_system::Config>::AccountId, BalanceOf<T>, BlockNumberFor<T>>;

	const STORAGE_VERSION: StorageVersion = StorageVersion::new(0);

	#[pallet::pallet]
	#[pallet::storage_version(STORAGE_VERSION)]
	pub struct Pallet<T>(_);

	/// The judge builds on the market: its currency, its jobs, its settlement.
	#[pallet::config]
	pub trait Config:
		frame_system::Config + pallet_jobs::Config<RuntimeHoldReason: From<HoldReason>>
	{
		/// The overarching event type.
		#[allow(deprecated)]
		type RuntimeEvent: From<Event<Self>> + IsType<<Self as frame_system::Config>::RuntimeEvent>;

		/// Randomness for the committee draw: the relay chain's BABE randomness on a
		/// parachain; [`ParentHashRandomness`] (predictable by the block author) on the
		/// dev chain.
		type Randomness: Randomness<Self::Hash, BlockNumberFor<Self>>;

		/// Seats on a committee (K).
		#[pallet::constant]
		type CommitteeSize: Get<u32>;

		/// Segments every seat replays per result (m).
		#[pallet::constant]
		type SegmentsPerResult: Get<u32>;

		/// Most validators in the active set.
		#[pallet::constant]
		type MaxValidators: Get<u32>;

		/// Smallest self-bond.
		#[pallet::constant]
		type MinValidatorBond: Get<BalanceOf<Self>>;

		/// Shortest commit window a job may leave (from the eval reveal deadline).
		#[pallet::constant]
		type MinCommitWindow: Get<BlockNumberFor<Self>>;

		/// Blocks between the last commitment and the judging deadline: the report reveal
		/// window.
		#[pallet::constant]
		type RevealWindow: Get<BlockNumberFor<Self>>;

		/// Length of the one extension (commit and reveal windows of a fresh committee).
		#[pallet::constant]
		type ExtensionPeriod: Get<BlockNumberFor<Self>>;

		/// Part of a seat's stake slashed when it does not commit and reveal.
		#[pallet::constant]
		type NoRevealSlash: Get<Perbill>;

		/// Part of a seat's stake slashed when its replay verdict is against the majority.
		#[pallet::constant]
		type WrongVerdictSlash: Get<Perbill>;

		/// Part of a fraud's slashed collateral that goes to the seats that reported it
		/// (the rest is burned).
		#[pallet::constant]
		type FraudReporterShare: Get<Perbill>;

		/// Largest relative distance of a seat's loss from the consensus loss that still
		/// earns its fee share.
		#[pallet::constant]
		type LossTolerance: Get<Perbill>;

		/// Weights of the calls.
		type WeightInfo: WeightInfo;
	}

	/// Why this pallet holds funds.
	#[pallet::composite_enum]
	pub enum HoldReason {
		/// A validator's self-bond.
		ValidatorBond,
	}

	/// Registered validators (active or leaving), by account.
	#[pallet::storage]
	pub type Validators<T: Config> = StorageMap<_, Blake2_128Concat, T::AccountId, ValidatorOf<T>>;

	/// Which validator a report key belongs to (one validator per key).
	#[pallet::storage]
	pub type ReportKeys<T: Config> = StorageMap<_, Blake2_128Concat, [u8; 32], T::AccountId>;

	/// The validators that may be drawn, with their bonds.
	#[pallet::storage]
	pub type ActiveSet<T: Config> =
		StorageValue<_, BoundedVec<(T::AccountId, BalanceOf<T>), T::MaxValidators>, ValueQuery>;

	/// Jobs under judgement.
	#[pallet::storage]
	pub type Cases<T: Config> = StorageMap<_, Twox64Concat, JobId, CaseOf<T>>;

	/// Revealed reports, by job and validator (removed with the case).
	#[pallet::storage]
	pub type Reports<T: Config> =
		StorageDoubleMap<_, Twox64Concat, JobId, Blake2_128Concat, T::AccountId, Report>;

	#[pallet::event]
	#[pallet::generate_deposit(pub(super) fn deposit_event)]
	pub enum Event<T: Config> {
		/// A validator registered; `bond` is on hold.
		ValidatorRegistered { validator: T::AccountId, report_key: [u8; 32], bond: BalanceOf<T> },
		/// A validator left the active set (by its own call, or displaced by a larger bond,
		/// or its bond fell below the minimum).
		ValidatorLeft { validator: T::AccountId },
		/// A validator's bond was released and its record removed.
		BondWithdrawn { validator: T::AccountId, amount: BalanceOf<T> },
		/// A committee was drawn for a case; `segments[i]` are result `i`'s drawn segments.
		CommitteeDrawn {
			job_id: JobId,
			round: u8,
			seats: alloc::vec::Vec<T::AccountId>,
			segments: alloc::vec::Vec<alloc::vec::Vec<u32>>,
			commit_by: BlockNumberFor<T>,
			judge_by: BlockNumberFor<T>,
		},
		/// The owner revealed the eval set.
		EvalRevealed { job_id: JobId, set: ContentRef },
		/// A seat committed to its report.
		ReportCommitted { job_id: JobId, validator: T::AccountId },
		/// A seat revealed its report.
		ReportRevealed { job_id: JobId, validator: T::AccountId, report: Report },
		/// The committee ruled; `burned` is what of the slashes was not paid out.
		CaseRuled { job_id: JobId, grades: alloc::vec::Vec<Grade>, burned: BalanceOf<T> },
		/// No quorum revealed; a fresh committee was drawn (see `CommitteeDrawn`).
		CaseExtended { job_id: JobId },
		/// No quorum revealed, twice (or no validator was left to draw): every result of the
		/// job is refunded, no miner slashed.
		CaseAbandoned { job_id: JobId },
		/// A seat earned fees (and its share of fraud slashes) on a case.
		ValidatorPaid { job_id: JobId, validator: T::AccountId, amount: BalanceOf<T> },
		/// A validator lost `slashed` of its bond (burned).
		ValidatorPenalised {
			job_id: JobId,
			validator: T::AccountId,
			offence: Offence,
			slashed: BalanceOf<T>,
		},
	}

	#[pallet::error]
	pub enum Error<T> {
		/// The account is already a validator.
		AlreadyValidator,
		/// The account is not a validator.
		NotAValidator,
		/// The bond is below the minimum.
		BondTooLow,
		/// The account cannot cover the bond.
		InsufficientBalance,
		/// Another validator already uses this report key.
		ReportKeyInUse,
		/// The bytes given as a report key are not a valid sr25519 public key.
		InvalidReportKey,
		/// The key's proof is not its signature of `REPORT_KEY_CONTEXT ++ SCALE(caller)`:
		/// only whoever holds a key may register it.
		BadKeyProof,
		/// The active set is full and the bond is not larger than the smallest in it.
		ValidatorSetFull,
		/// The validator is still in the active set (leave it first).
		StillActive,
		/// The validator is not in the active set.
		NotActive,
		/// No validator could be drawn for the case.
		NoValidators,
		/// The validator still has seats on cases not yet ruled.
		HasDuties,
		/// No case for this job (not under judgement).
		NoCase,
		/// Only the job's owner may reveal its eval set.
		NotJobOwner,
		/// The eval set's reveal period is over.
		EvalRevealPeriodOver,
		/// The eval set is already revealed.
		EvalAlreadyRevealed,
		/// `SHA-256(eval set's SHA-256 || salt)` is not the job's commitment.
		EvalMismatch,
		/// The validator has no seat on this case.
		NotOnCommittee,
		/// Commitments are taken once the eval set is revealed (or its reveal period is
		/// over) until `commit_by`.
		NotCommitPeriod,
		/// The seat already committed.
		AlreadyCommitted,
		/// The signature is not the validator's report key's over this commitment.
		BadSignature,
		/// Reports are revealed after `commit_by` (or once every seat has committed) until
		/// `judge_by`.
		NotRevealPeriod,
		/// The seat made no commitment.
		NotCommitted,
		/// The seat already revealed.
		AlreadyRevealed,
		/// The report and salt do not hash to the seat's commitment.
		CommitmentMismatch,
		/// The report does not have one entry per result.
		WrongResultCount,
	}

	#[pallet::hooks]
	impl<T: Config> Hooks<BlockNumberFor<T>> for Pallet<T> {
		fn integrity_test() {
			let k = T::CommitteeSize::get();
			assert!((1..=MAX_COMMITTEE).contains(&k), "CommitteeSize must be 1..={MAX_COMMITTEE}");
			assert!(
				(1..=MAX_SEGMENTS).contains(&T::SegmentsPerResult::get()),
				"SegmentsPerResult must be 1..={MAX_SEGMENTS}"
			);
			assert!(
				<T as pallet_jobs::Config>::MaxReplication::get() <= MAX_RESULTS,
				"the market's MaxReplication must be at most MAX_RESULTS"
			);
			assert!(T::MaxValidators::get() >= k, "MaxValidators must seat a whole committee");
			assert!(!T::MinValidatorBond::get().is_zero(), "MinValidatorBond must be positive");
			assert!(
				!T::MinCommitWindow::get().is_zero() && !T::RevealWindow::get().is_zero(),
				"the commit and reveal windows must be at least a block"
			);
			assert!(
				T::ExtensionPeriod::get() > T::RevealWindow::get() &&
					T::ExtensionPeriod::get() <=
						<T as pallet_jobs::Config>::MaxJudgeExtension::get(),
				"the extension must fit a reveal window and the market's MaxJudgeExtension"
			);
		}

		#[cfg(feature = "try-runtime")]
		fn try_state(_n: BlockNumberFor<T>) -> Result<(), sp_runtime::TryRuntimeError> {
			Self::do_try_state()
		}
	}

	#[pallet::call]
	impl<T: Config> Pallet<T> {
		/// Become a validator: `bond` (at least [`Config::MinValidatorBond`]) goes on
		/// hold; `report_key` is the sr25519 key the validator's worker signs commitments
		/// with. When the active set is full, a bond larger than the smallest displaces it.
		#[pallet::call_index(0)]
		#[pallet::weight(<T as Config>::WeightInfo::register_validator())]
		pub fn register_validator(
			origin: OriginFor<T>,
			report_key: sr25519::Public,
			key_proof: sr25519::Signature,
			bond: BalanceOf<T>,
		) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_register_validator(who, report_key.0, key_proof.0, bond)
		}

		/// Leave the active set (no new seats); seats already held must still be served.
		#[pallet::call_index(1)]
		#[pallet::weight(<T as Config>::WeightInfo::unregister_validator())]
		pub fn unregister_validator(origin: OriginFor<T>) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_unregister_validator(who)
		}

		/// Release the bond of a validator out of the active set with no seats left.
		#[pallet::call_index(2)]
		#[pallet::weight(<T as Config>::WeightInfo::withdraw_bond())]
		pub fn withdraw_bond(origin: OriginFor<T>) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_withdraw_bond(who)
		}

		/// The job's owner reveals its eval set: `SHA-256(set.sha256 || salt)` must be the
		/// job's commitment; until the job's `reveal_by`.
		#[pallet::call_index(3)]
		#[pallet::weight(<T as Config>::WeightInfo::reveal_eval())]
		pub fn reveal_eval(
			origin: OriginFor<T>,
			job_id: JobId,
			set: ContentRef,
			salt: [u8; 32],
		) -> DispatchResult {
			let who = ensure_signed(origin)?;
			Self::do_reveal_eval(who, job_id, set, salt)
		}

		/// A seat commits to its report: `commitment` is [`Pallet::commitment`] of the
		/// report, signed (with [`Pallet::commit_message`]) by the validator's report key.
		/// Anyone may submit it (the validator's worker pays the fee from any account).
		#[pallet::call_index(4)]
		#[pallet::weight(<T as Config>::WeightInfo::commit_report())]
		pub fn commit_report(
			origin: OriginFor<T>,
			job_id: JobId,
			validator: T::AccountId,
			commitment: [u8; 32],
			signature: sr25519::Signature,
		) -> DispatchResult {
			ensure_signed(origin)?;
			Self::do_commit_report(job_id, validator, commitment, signature)
		}

		/// A seat reveals its report and salt. Anyone may submit it: only the committer
		/// knows the salt. The last reveal of a committee rules the case at once (its
		/// weight is that of the last reveal).
		#[pallet::call_index(5)]
		#[pallet::weight(<T as Config>::WeightInfo::reveal_report(report.results.len() as u32))]
		pub fn reveal_report(
			origin: OriginFor<T>,
			job_id: JobId,
			validator: T::AccountId,
			report: Report,
			salt: [u8; 32],
		) -> DispatchResult {
			ensure_signed(origin)?;
			Self::do_reveal_report(job_id, validator, report, salt)
		}
	}

	#[pallet::view_functions]
	impl<T: Config> Pallet<T> {
		/// A case by job id.
		pub fn case(job_id: JobId) -> Option<CaseOf<T>> {
			Cases::<T>::get(job_id)
		}

		/// A validator's record.
		pub fn validator(who: T::AccountId) -> Option<ValidatorOf<T>> {
			Validators::<T>::get(who)
		}

		/// The cases `validator` has a seat on, with what it still has to do there.
		pub fn duties(validator: T::AccountId) -> alloc::vec::Vec<(JobId, CaseOf<T>)> {
			Self::cases_of(&validator)
		}
	}
}
