//! The market's rules: registration, posting, claiming, delivery, judging and settlement.
//!
//! Every path that moves funds runs inside a storage layer (calls are transactional, and
//! `on_idle` wraps each job), so an error leaves no funds half-moved.

use crate::{pallet::*, types::*, weights::WeightInfo};
use alloc::vec::Vec;
use codec::Encode;
use frame_support::{
	ensure,
	pallet_prelude::*,
	storage::with_storage_layer,
	traits::{
		fungible::{BalancedHold, InspectHold, MutateHold},
		tokens::{Fortitude, Precision, Restriction},
		Imbalance, OnUnbalanced,
	},
};
use frame_system::pallet_prelude::BlockNumberFor;
use sp_core::sr25519;
use sp_runtime::{
	traits::{One, SaturatedConversion, Saturating, Zero},
	DispatchError, DispatchResult, Perbill,
};

/// The judge of a market: rules on the results of a job after its submissions close.
///
/// The ruling is asynchronous. The market opens a case when submissions close
/// ([`Self::open_case`]), and calls [`Self::on_deadline`] once the job's judging deadline
/// has passed. The judge rules through [`Pallet::settle_judged`] (whenever it is ready,
/// at the latest from `on_deadline`) or moves its deadline once through
/// [`Pallet::extend_judging`]. Whatever is still unsettled after `on_deadline` returns is
/// settled as [`Grade::Unjudged`]: every job ends.
pub trait ResultJudge<AccountId, BlockNumber> {
	/// Shortest `judge_by - reveal_by` a job may post: the judge's own windows.
	fn min_judging_period() -> BlockNumber;
	/// Submissions of `job_id` closed; `results` are the delivered claims, in claim order
	/// (the order [`Pallet::settle_judged`] takes grades in). An error settles every
	/// result as `Unjudged` at once.
	fn open_case(job_id: JobId, results: &[(AccountId, Delivery<BlockNumber>)]) -> DispatchResult;
	/// The judging deadline of `job_id` passed: rule now, or extend.
	fn on_deadline(job_id: JobId);
	/// Most weight [`Self::on_deadline`] (with the settlement it triggers) may use.
	fn on_deadline_weight() -> Weight;
	/// The job's record is pruned: drop what the judge keeps of it.
	fn forget(job_id: JobId);
	/// Benchmarks only: ready the judge to take the costliest case it can (for a
	/// committee judge, a full set of validators to draw from), so that the market's
	/// benchmarks measure the judge it runs with.
	#[cfg(feature = "runtime-benchmarks")]
	fn prepare_for_cases() {}
}

/// A judge that never rules: every delivered result ends `Unjudged` at the judging
/// deadline (refunded, nobody slashed). For tests and for chains without validators.
impl<AccountId, BlockNumber: Zero> ResultJudge<AccountId, BlockNumber> for () {
	fn min_judging_period() -> BlockNumber {
		Zero::zero()
	}
	fn open_case(_: JobId, _: &[(AccountId, Delivery<BlockNumber>)]) -> DispatchResult {
		Ok(())
	}
	fn on_deadline(_: JobId) {}
	fn on_deadline_weight() -> Weight {
		Weight::zero()
	}
	fn forget(_: JobId) {}
}

/// The highest quality bar a job may set: its adapter's loss at most half the base model's.
pub const MAX_MIN_IMPROVEMENT: Perbill = Perbill::from_percent(50);

/// How many ids [`Pallet::claimable_jobs`] looks at in one call.
const MAX_JOBS_SCANNED: u64 = 1_000;

impl<T: Config> Pallet<T> {
	// --- miners ---------------------------------------------------------------------------

	pub(crate) fn do_register_miner(
		who: T::AccountId,
		worker_key: [u8; 32],
		key_proof: [u8; 64],
		capabilities: Capabilities,
	) -> DispatchResult {
		ensure!(!Miners::<T>::contains_key(&who), Error::<T>::AlreadyRegistered);
		Self::claim_worker_key(&who, worker_key, &key_proof)?;
		let deposit = T::MinerDeposit::get();
		T::Currency::hold(&HoldReason::MinerDeposit.into(), &who, deposit)
			.map_err(|_| Error::<T>::InsufficientBalance)?;
		Miners::<T>::insert(
			&who,
			MinerInfo {
				worker_key,
				capabilities,
				deposit,
				active_claims: 0,
				completed: 0,
				failed: 0,
				registered_at: frame_system::Pallet::<T>::block_number(),
			},
		);
		Self::deposit_event(Event::MinerRegistered { miner: who, worker_key, deposit });
		Ok(())
	}

	pub(crate) fn do_update_miner(
		who: T::AccountId,
		worker_key: Option<([u8; 32], [u8; 64])>,
		capabilities: Option<Capabilities>,
	) -> DispatchResult {
		let mut miner = Miners::<T>::get(&who).ok_or(Error::<T>::NotAMiner)?;
		if let Some((key, proof)) = worker_key {
			if key != miner.worker_key {
				Self::claim_worker_key(&who, key, &proof)?;
				WorkerKeys::<T>::remove(miner.worker_key);
				miner.worker_key = key;
			}
		}
		if let Some(capabilities) = capabilities {
			miner.capabilities = capabilities;
		}
		Miners::<T>::insert(&who, miner);
		Self::deposit_event(Event::MinerUpdated { miner: who });
		Ok(())
	}

	pub(crate) fn do_unregister_miner(who: T::AccountId) -> DispatchResult {
		let miner = Miners::<T>::get(&who).ok_or(Error::<T>::NotAMiner)?;
		ensure!(miner.active_claims == 0, Error::<T>::HasActiveClaims);
		T::Currency::release(&HoldReason::MinerDeposit.into(), &who, miner.deposit, Precision::Exact)?;
		WorkerKeys::<T>::remove(miner.worker_key);
		Miners::<T>::remove(&who);
		Self::deposit_event(Event::MinerUnregistered { miner: who });
		Ok(())
	}

	fn claim_worker_key(who: &T::AccountId, key: [u8; 32], proof: &[u8; 64]) -> DispatchResult {
		ensure!(!WorkerKeys::<T>::contains_key(key), Error::<T>::WorkerKeyInUse);
		// A valid sr25519 key is a point on the Ristretto curve; reject anything else now
		// rather than at the first (impossible to verify) submission.
		ensure!(is_valid_sr25519_key(&key), Error::<T>::InvalidWorkerKey);
		// Proof of possession: a stranger who saw the key (in the pool, or in another
		// account's registration) cannot register it first.
		ensure!(verify_key_proof(WORKER_KEY_CONTEXT, who, &key, proof), Error::<T>::BadKeyProof);
		WorkerKeys::<T>::insert(key, who.clone());
		Ok(())
	}

	// --- jobs -----------------------------------------------------------------------------

	pub(crate) fn do_post_job(
		owner: T::AccountId,
		spec: JobSpec,
		budget: BalanceOf<T>,
		deadlines: Deadlines<BlockNumberFor<T>>,
	) -> Result<JobId, DispatchError> {
		Self::check_spec(&spec)?;
		let now = frame_system::Pallet::<T>::block_number();
		let d = deadlines;
		ensure!(
			d.claim_by > now &&
				d.claim_by <= d.submit_by &&
				// At least one block to reveal in after the close.
				d.submit_by.saturating_add(One::one()) < d.reveal_by &&
				d.reveal_by < d.judge_by &&
				d.judge_by.saturating_sub(d.reveal_by) >= T::Judge::min_judging_period() &&
				d.judge_by.saturating_sub(now) <= T::MaxJobDuration::get(),
			Error::<T>::InvalidDeadlines
		);
		let reward_per_result = budget / BalanceOf::<T>::from(spec.replication);
		ensure!(reward_per_result >= T::MinReward::get(), Error::<T>::BudgetTooLow);

		let job_id = NextJobId::<T>::get();
		T::Currency::hold(&HoldReason::JobEscrow.into(), &owner, budget)
			.map_err(|_| Error::<T>::InsufficientBalance)?;
		NextJobId::<T>::put(job_id.saturating_add(1));
		// The job is looked at once its submission deadline has passed.
		let next_due = d.submit_by.saturating_add(One::one());
		DueJobs::<T>::insert(next_due, job_id, ());
		Self::note_due(next_due);
		Jobs::<T>::insert(
			job_id,
			Job {
				owner: owner.clone(),
				spec,
				budget,
				reward_per_result,
				escrow: budget,
				released: Zero::zero(),
				deadlines,
				posted_at: now,
				status: JobStatus::Open,
				next_due,
				claims: BoundedVec::new(),
			},
		);
		Self::deposit_event(Event::JobPosted { job_id, owner, budget });
		Ok(job_id)
	}

	fn check_spec(spec: &JobSpec) -> DispatchResult {
		let (uri, steps_ok) = match &spec.work {
			Work::Compute { recipe, steps, checkpoint_interval } => (
				&recipe.uri,
				(1..=MAX_STEPS).contains(steps) && (1..=*steps).contains(checkpoint_interval),
			),
			Work::Contest { bounds, max_steps, max_checkpoint_interval } => (
				&bounds.uri,
				(1..=MAX_STEPS).contains(max_steps) &&
					(1..=*max_steps).contains(max_checkpoint_interval),
			),
		};
		ensure!(steps_ok, Error::<T>::InvalidHyperParameters);
		ensure!(
			spec.replication > 0 && u32::from(spec.replication) <= T::MaxReplication::get(),
			Error::<T>::InvalidReplication
		);
		ensure!(!uri.is_empty(), Error::<T>::EmptyUri);
		// A bar no adapter can clear would turn every result into a refund (less the
		// validators' fee) while the adapters are public.
		ensure!(spec.min_improvement <= MAX_MIN_IMPROVEMENT, Error::<T>::InvalidQualityBar);
		Ok(())
	}

	pub(crate) fn do_cancel_job(who: T::AccountId, job_id: JobId) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		ensure!(job.owner == who, Error::<T>::NotJobOwner);
		ensure!(job.status == JobStatus::Open, Error::<T>::JobNotOpen);
		ensure!(job.claims.is_empty(), Error::<T>::JobHasClaims);
		let now = frame_system::Pallet::<T>::block_number();
		let escrow = job.escrow;
		Self::release_escrow(&mut job, escrow)?;
		job.status = JobStatus::Cancelled { at: now };
		Self::reschedule(job_id, &mut job, now.saturating_add(T::RetainFinished::get()));
		Jobs::<T>::insert(job_id, job);
		Self::deposit_event(Event::JobCancelled { job_id });
		Ok(())
	}

	pub(crate) fn do_claim_job(who: T::AccountId, job_id: JobId) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		let mut miner = Miners::<T>::get(&who).ok_or(Error::<T>::NotAMiner)?;
		let now = frame_system::Pallet::<T>::block_number();
		ensure!(job.status == JobStatus::Open, Error::<T>::JobNotOpen);
		ensure!(now <= job.deadlines.claim_by, Error::<T>::ClaimPeriodOver);
		// Paying oneself through the market would only farm a completed-jobs count.
		ensure!(job.owner != who, Error::<T>::OwnJob);
		ensure!(job.claims.len() < usize::from(job.spec.replication), Error::<T>::JobFull);
		ensure!(!job.claims.iter().any(|c| c.miner == who), Error::<T>::AlreadyClaimed);
		ensure!(meets(&miner, &job.spec.requirements), Error::<T>::RequirementsNotMet);
		ensure!(
			miner.active_claims < T::MaxActiveClaims::get(),
			Error::<T>::TooManyActiveClaims
		);

		let collateral = Self::collateral_for(job.reward_per_result);
		T::Currency::hold(&HoldReason::ClaimCollateral.into(), &who, collateral)
			.map_err(|_| Error::<T>::InsufficientBalance)?;
		job.claims
			.try_push(Claim { miner: who.clone(), collateral, claimed_at: now, state: ClaimState::Working })
			.map_err(|_| Error::<T>::JobFull)?;
		miner.active_claims.saturating_inc();
		Miners::<T>::insert(&who, miner);
		Jobs::<T>::insert(job_id, job);
		Self::deposit_event(Event::JobClaimed { job_id, miner: who, collateral });
		Ok(())
	}

	/// Collateral of a claim earning `reward`.
	pub fn collateral_for(reward: BalanceOf<T>) -> BalanceOf<T> {
		(T::CollateralRatio::get() * reward).max(T::MinCollateral::get())
	}

	/// The message a worker key signs for an attestation.
	pub fn attestation_message(attestation: &AttestationOf<T>) -> Vec<u8> {
		let mut message = ATTESTATION_CONTEXT.to_vec();
		attestation.encode_to(&mut message);
		message
	}

	pub(crate) fn do_submit_result(
		who: T::AccountId,
		job_id: JobId,
		attestation: AttestationOf<T>,
		signature: sr25519::Signature,
	) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		let miner = Miners::<T>::get(&who).ok_or(Error::<T>::NotAMiner)?;
		let now = frame_system::Pallet::<T>::block_number();
		ensure!(job.status == JobStatus::Open, Error::<T>::JobNotOpen);
		let index = Self::claim_index(&job, &who)?;
		ensure!(
			Self::claim_mut(&mut job.claims, index)?.state == ClaimState::Working,
			Error::<T>::NotWorking
		);
		ensure!(now <= job.deadlines.submit_by, Error::<T>::SubmissionPeriodOver);

		let a = attestation;
		ensure!(a.job_id == job_id, Error::<T>::WrongJob);
		ensure!(a.miner == who, Error::<T>::WrongMiner);
		ensure!(a.genesis_hash == Self::genesis_hash(), Error::<T>::WrongChain);
		if let Work::Compute { recipe, .. } = &job.spec.work {
			ensure!(a.recipe_sha256 == recipe.sha256, Error::<T>::WrongRecipe);
		}
		ensure!(
			job.spec.admits(&a.recipe_sha256, a.steps, a.checkpoint_interval),
			Error::<T>::WrongSteps
		);
		let message = Self::attestation_message(&a);
		ensure!(
			sp_io::crypto::sr25519_verify(&signature, &message, &sr25519::Public::from_raw(miner.worker_key)),
			Error::<T>::BadSignature
		);
		// A copy of another claim's result is not refused here: refusing it would let a
		// claimer who saw an honest submission in the pool front-run it with a copy and
		// lock the original out. The copy fails replay instead (its checkpoint 0 is not
		// the initial state under the copier's seed) and is slashed as fraud.

		let delivery = Delivery {
			recipe_sha256: a.recipe_sha256,
			result: ContentRef { sha256: a.result_sha256, uri: a.result_uri },
			checkpoint_root: a.checkpoint_root,
			steps: a.steps,
			checkpoint_interval: a.checkpoint_interval,
			final_train_loss_ppm: a.final_train_loss_ppm,
			submitted_at: now,
		};
		Self::claim_mut(&mut job.claims, index)?.state = ClaimState::Submitted { delivery };
		// Every replica delivered: nothing is left to wait for, submissions close next block.
		if Self::all_delivered(&job) {
			Self::reschedule(job_id, &mut job, now.saturating_add(One::one()));
		}
		Jobs::<T>::insert(job_id, job);
		Self::deposit_event(Event::ResultSubmitted {
			job_id,
			miner: who,
			result_sha256: a.result_sha256,
		});
		Ok(())
	}

	/// Every replica delivered, and `now` is after the block of the last submission: the
	/// draw's randomness must be unknown to whoever submitted last (the block hash it mixes
	/// in is that block's).
	fn closes_early(job: &JobOf<T>, now: BlockNumberFor<T>) -> bool {
		Self::all_delivered(job) &&
			job.claims.iter().filter_map(|c| c.state.delivery()).all(|d| d.submitted_at < now)
	}

	/// Every replica claimed and delivered.
	pub fn all_delivered(job: &JobOf<T>) -> bool {
		job.claims.len() == usize::from(job.spec.replication) &&
			job.claims.iter().all(|c| matches!(c.state, ClaimState::Submitted { .. }))
	}

	/// The genesis hash attestations must name.
	pub fn genesis_hash() -> T::Hash {
		frame_system::Pallet::<T>::block_hash(BlockNumberFor::<T>::zero())
	}

	pub(crate) fn do_settle_expired(job_id: JobId) -> DispatchResult {
		ensure!(Jobs::<T>::contains_key(job_id), Error::<T>::UnknownJob);
		let now = frame_system::Pallet::<T>::block_number();
		ensure!(Self::process_job(job_id, now)?, Error::<T>::NothingDue);
		Ok(())
	}

	// --- judging --------------------------------------------------------------------------

	/// The judge's ruling on `job_id`: one grade per delivered result, in the order of
	/// [`ResultJudge::open_case`]. Settles every result and finishes the job; returns, per
	/// result, the validators' fee and the slashed collateral for the judge to hand out
	/// (dropping them burns them).
	pub fn settle_judged(
		job_id: JobId,
		grades: &[Grade],
	) -> Result<Vec<ResultSettlement<CreditOf<T>>>, DispatchError> {
		with_storage_layer(|| {
			let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
			ensure!(matches!(job.status, JobStatus::Judging { .. }), Error::<T>::NotJudging);
			let delivered: Vec<usize> = (0..job.claims.len())
				.filter(|&i| {
					job.claims.get(i).is_some_and(|c| matches!(c.state, ClaimState::Submitted { .. }))
				})
				.collect();
			ensure!(delivered.len() == grades.len(), Error::<T>::WrongGradeCount);
			let payouts = Self::payouts(&job, grades);
			let mut out = Vec::with_capacity(grades.len());
			for ((&index, grade), payout) in delivered.iter().zip(grades).zip(payouts) {
				out.push(Self::settle_result(job_id, &mut job, index, *grade, payout)?);
			}
			let now = frame_system::Pallet::<T>::block_number();
			Self::finish(job_id, &mut job, now)?;
			Jobs::<T>::insert(job_id, job);
			Ok(out)
		})
	}

	/// The judge moves its ruling on `job_id` to `until` (later than now and the current
	/// deadline, at most [`Config::MaxJudgeExtension`] past `judge_by`).
	pub fn extend_judging(job_id: JobId, until: BlockNumberFor<T>) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		let JobStatus::Judging { until: current } = job.status else {
			return Err(Error::<T>::NotJudging.into())
		};
		let now = frame_system::Pallet::<T>::block_number();
		ensure!(
			until > current &&
				until >= now &&
				until <= job.deadlines.judge_by.saturating_add(T::MaxJudgeExtension::get()),
			Error::<T>::InvalidExtension
		);
		job.status = JobStatus::Judging { until };
		Self::reschedule(job_id, &mut job, until.saturating_add(One::one()));
		Jobs::<T>::insert(job_id, job);
		Self::deposit_event(Event::JudgingExtended { job_id, until });
		Ok(())
	}

	/// What each graded result earns before fees, by the job's payout rule: the reward per
	/// result less the validators' fee (`Equal`), or the passing results' pool split by
	/// rank of loss (`Ranked`); zero for a result that does not pass.
	fn payouts(job: &JobOf<T>, grades: &[Grade]) -> Vec<BalanceOf<T>> {
		let share = job.reward_per_result.saturating_sub(T::ValidatorFee::get() * job.reward_per_result);
		let mut out: Vec<BalanceOf<T>> = grades
			.iter()
			.map(|g| if matches!(g, Grade::Pass { .. }) { share } else { Zero::zero() })
			.collect();
		// Ranks of the passing results by loss (ties by claim order); without losses (no
		// eval revealed) there is no ranking.
		let mut ranked: Vec<(u32, usize)> = grades
			.iter()
			.enumerate()
			.filter_map(|(i, g)| match g {
				Grade::Pass { loss_ppm } => Some(loss_ppm.map(|l| (l, i))),
				_ => None,
			})
			.collect::<Option<Vec<_>>>()
			.unwrap_or_default();
		if job.spec.payout != PayoutRule::Ranked || ranked.len() < 2 {
			return out
		}
		ranked.sort();
		let n = ranked.len() as u32;
		let pool = share.saturating_mul(BalanceOf::<T>::from(n));
		// n <= MaxReplication <= 32 (integrity_test), so the weights fit a u64 and the split
		// is exact: floor(pool * weight / total), computed as
		// (pool / total) * weight + (pool % total) * weight / total so nothing overflows
		// (the remainder is below total < 2^32, the weight below 2^31). Ranks 1.. get their
		// floors; rank 0 the rest, so a better rank never earns less than a worse one.
		let total: BalanceOf<T> = 1u64.checked_shl(n).unwrap_or(u64::MAX).saturating_sub(1).saturated_into();
		let mut left = pool;
		for (rank, &(_, i)) in ranked.iter().enumerate().skip(1) {
			let weight: BalanceOf<T> = 1u64.checked_shl(n - 1 - rank as u32).unwrap_or(0).saturated_into();
			let amount = if total.is_zero() {
				Zero::zero()
			} else {
				(pool / total)
					.saturating_mul(weight)
					.saturating_add((pool % total).saturating_mul(weight) / total)
			};
			let amount = amount.min(left);
			left = left.saturating_sub(amount);
			if let Some(slot) = out.get_mut(i) {
				*slot = amount;
			}
		}
		if let Some(slot) = ranked.first().and_then(|&(_, i)| out.get_mut(i)) {
			*slot = left;
		}
		out
	}

	/// Settles the delivered claim at `index` by `grade`, paying `payout` (before the
	/// protocol fee) if it passes.
	fn settle_result(
		job_id: JobId,
		job: &mut JobOf<T>,
		index: usize,
		grade: Grade,
		payout: BalanceOf<T>,
	) -> Result<ResultSettlement<CreditOf<T>>, DispatchError> {
		let reward = job.reward_per_result;
		let owner = job.owner.clone();
		let claim = Self::claim_mut(&mut job.claims, index)?;
		let ClaimState::Submitted { delivery } = claim.state.clone() else {
			return Err(Error::<T>::NotJudging.into())
		};
		let (miner, collateral) = (claim.miner.clone(), claim.collateral);
		let escrow = HoldReason::JobEscrow.into();
		let collateral_reason = HoldReason::ClaimCollateral.into();
		let judged = matches!(grade, Grade::Pass { .. } | Grade::BelowBar);
		let validator_fee_amount = if judged { T::ValidatorFee::get() * reward } else { Zero::zero() };
		let (validator_fee, missing) =
			<T::Currency as BalancedHold<_>>::slash(&escrow, &owner, validator_fee_amount);
		ensure!(missing.is_zero(), Error::<T>::InsufficientBalance);
		let (mut paid, mut fee, mut slashed_amount) = (Zero::zero(), Zero::zero(), Zero::zero());
		let mut slashed = CreditOf::<T>::zero();
		match grade {
			Grade::Pass { .. } => {
				fee = T::ProtocolFee::get() * payout;
				paid = payout.saturating_sub(fee);
				for (to, amount) in [(&miner, paid), (&T::Treasury::get(), fee)] {
					if !amount.is_zero() {
						T::Currency::transfer_on_hold(
							&escrow,
							&owner,
							to,
							amount,
							Precision::Exact,
							Restriction::Free,
							Fortitude::Force,
						)?;
					}
				}
				T::Currency::release(&collateral_reason, &miner, collateral, Precision::Exact)?;
			},
			Grade::Fraud => {
				let (credit, _) =
					<T::Currency as BalancedHold<_>>::slash(&collateral_reason, &miner, collateral);
				slashed_amount = credit.peek();
				slashed = credit;
			},
			Grade::BelowBar | Grade::Unjudged => {
				T::Currency::release(&collateral_reason, &miner, collateral, Precision::Exact)?;
			},
		}
		// A passing result's share is spent on fees and payout (a ranked winner's payout
		// may exceed its own share: the out-ranked results' shares make up the pool); any
		// other result's share, less the validators' fee, goes back to the owner.
		let refunded = if matches!(grade, Grade::Pass { .. }) {
			Zero::zero()
		} else {
			reward.saturating_sub(validator_fee_amount)
		};
		if !refunded.is_zero() {
			T::Currency::release(&escrow, &owner, refunded, Precision::Exact)?;
		}
		let out = validator_fee_amount.saturating_add(paid).saturating_add(fee).saturating_add(refunded);
		job.escrow = job.escrow.saturating_sub(out);
		job.released = job.released.saturating_add(out);
		claim.state = ClaimState::Judged { delivery, grade, paid };
		Self::note_outcome(&miner, matches!(grade, Grade::Pass { .. }));
		Self::deposit_event(Event::ResultSettled {
			job_id,
			miner,
			grade,
			paid,
			fee,
			validator_fee: validator_fee_amount,
			refunded,
			slashed: slashed_amount,
		});
		Ok(ResultSettlement { validator_fee, slashed })
	}

	// --- settlement -----------------------------------------------------------------------

	/// Does what is due on `job_id` at `now`: at the close of submissions, expires the
	/// claims that delivered nothing and opens the case (or finishes a job nothing was
	/// delivered for); past the judging deadline, asks the judge to rule and settles what
	/// it left as `Unjudged`; past the retention period, prunes the record. Returns whether
	/// anything changed. Runs in its own storage layer.
	pub(crate) fn process_job(job_id: JobId, now: BlockNumberFor<T>) -> Result<bool, DispatchError> {
		with_storage_layer(|| {
			let Some(mut job) = Jobs::<T>::get(job_id) else { return Ok(false) };
			match job.status {
				JobStatus::Open if now > job.deadlines.submit_by || Self::closes_early(&job, now) => {
					Self::close_submissions(job_id, &mut job, now)?;
					Jobs::<T>::insert(job_id, job);
					Ok(true)
				},
				JobStatus::Judging { until } if now > until => {
					T::Judge::on_deadline(job_id);
					let Some(mut job) = Jobs::<T>::get(job_id) else { return Ok(true) };
					if matches!(job.status, JobStatus::Judging { until } if now > until) {
						Self::settle_unjudged(job_id, &mut job, now)?;
						Jobs::<T>::insert(job_id, job);
					}
					Ok(true)
				},
				JobStatus::Finished { at } | JobStatus::Cancelled { at }
					if now >= at.saturating_add(T::RetainFinished::get()) =>
				{
					DueJobs::<T>::remove(job.next_due, job_id);
					Jobs::<T>::remove(job_id);
					T::Judge::forget(job_id);
					Self::deposit_event(Event::JobPruned { job_id });
					Ok(true)
				},
				_ => Ok(false),
			}
		})
	}

	/// Submissions are over: expire the claims that delivered nothing, then hand what was
	/// delivered to the judge (or finish the job if nothing was). Closing early (every
	/// replica delivered) moves the later deadlines as much earlier: the owner's reveal
	/// period and the judge's period keep their lengths.
	fn close_submissions(job_id: JobId, job: &mut JobOf<T>, now: BlockNumberFor<T>) -> DispatchResult {
		let d = &mut job.deadlines;
		if now <= d.submit_by {
			let early = d.submit_by.saturating_add(One::one()).saturating_sub(now);
			d.submit_by = now.saturating_sub(One::one());
			d.claim_by = d.claim_by.min(d.submit_by);
			d.reveal_by = d.reveal_by.saturating_sub(early);
			d.judge_by = d.judge_by.saturating_sub(early);
		}
		for index in 0..job.claims.len() {
			if Self::claim_mut(&mut job.claims, index)?.state == ClaimState::Working {
				Self::expire_claim(job_id, job, index)?;
			}
		}
		let results: Vec<(T::AccountId, Delivery<BlockNumberFor<T>>)> = job
			.claims
			.iter()
			.filter_map(|c| match &c.state {
				ClaimState::Submitted { delivery } => Some((c.miner.clone(), delivery.clone())),
				_ => None,
			})
			.collect();
		if results.is_empty() {
			return Self::finish(job_id, job, now)
		}
		let until = job.deadlines.judge_by;
		job.status = JobStatus::Judging { until };
		Self::reschedule(job_id, job, until.saturating_add(One::one()));
		// The judge reads the job from storage.
		Jobs::<T>::insert(job_id, &*job);
		let count = results.len() as u32;
		// A judge that cannot take the case: every result is refunded, nobody slashed.
		match with_storage_layer(|| T::Judge::open_case(job_id, &results)) {
			Ok(()) => Self::deposit_event(Event::JudgingOpened { job_id, results: count, until }),
			Err(e) => {
				log::warn!(target: "runtime::jobs", "job {job_id}: the judge refused the case: {e:?}");
				Self::settle_unjudged(job_id, job, now)?;
			},
		}
		Ok(())
	}

	/// Settles every still-delivered claim as `Unjudged` and finishes the job.
	fn settle_unjudged(job_id: JobId, job: &mut JobOf<T>, now: BlockNumberFor<T>) -> DispatchResult {
		for index in 0..job.claims.len() {
			if matches!(Self::claim_mut(&mut job.claims, index)?.state, ClaimState::Submitted { .. }) {
				Self::settle_result(job_id, job, index, Grade::Unjudged, Zero::zero())?;
			}
		}
		Self::finish(job_id, job, now)
	}

	/// A claimer delivered nothing in time: refund its share, slash part of its collateral.
	fn expire_claim(job_id: JobId, job: &mut JobOf<T>, index: usize) -> DispatchResult {
		let reward = job.reward_per_result;
		Self::release_escrow(job, reward)?;
		let claim = Self::claim_mut(&mut job.claims, index)?;
		let miner = claim.miner.clone();
		let penalty = T::NoShowSlash::get() * claim.collateral;
		let (credit, missing) = <T::Currency as BalancedHold<_>>::slash(
			&HoldReason::ClaimCollateral.into(),
			&miner,
			penalty,
		);
		let slashed = penalty.saturating_sub(missing);
		T::OnSlash::on_unbalanced(credit);
		T::Currency::release(
			&HoldReason::ClaimCollateral.into(),
			&miner,
			claim.collateral.saturating_sub(penalty),
			Precision::Exact,
		)?;
		claim.state = ClaimState::Expired;
		Self::note_outcome(&miner, false);
		Self::deposit_event(Event::ClaimExpired { job_id, miner, refunded: reward, slashed });
		Ok(())
	}

	/// Gives `amount` of the job's escrow back to its owner.
	fn release_escrow(job: &mut JobOf<T>, amount: BalanceOf<T>) -> DispatchResult {
		if !amount.is_zero() {
			T::Currency::release(&HoldReason::JobEscrow.into(), &job.owner, amount, Precision::Exact)?;
		}
		job.escrow = job.escrow.saturating_sub(amount);
		job.released = job.released.saturating_add(amount);
		Ok(())
	}

	/// Where `miner`'s claim on `job` is.
	fn claim_index(job: &JobOf<T>, miner: &T::AccountId) -> Result<usize, DispatchError> {
		job.claims.iter().position(|c| &c.miner == miner).ok_or_else(|| Error::<T>::NoClaim.into())
	}

	/// The claim at `index`, as an error rather than a panic should it not be there.
	fn claim_mut<S>(
		claims: &mut BoundedVec<Claim<T::AccountId, BalanceOf<T>, BlockNumberFor<T>>, S>,
		index: usize,
	) -> Result<&mut Claim<T::AccountId, BalanceOf<T>, BlockNumberFor<T>>, DispatchError> {
		claims.iter_mut().nth(index).ok_or_else(|| Error::<T>::NoClaim.into())
	}

	fn note_outcome(miner: &T::AccountId, success: bool) {
		Miners::<T>::mutate(miner, |m| {
			if let Some(m) = m {
				m.active_claims.saturating_dec();
				if success {
					m.completed.saturating_inc();
				} else {
					m.failed.saturating_inc();
				}
			}
		});
	}

	/// Ends the job (every claim is settled): refunds what is left in escrow (unclaimed
	/// replicas, rounding) and queues the record for pruning.
	fn finish(job_id: JobId, job: &mut JobOf<T>, now: BlockNumberFor<T>) -> DispatchResult {
		let refunded = job.escrow;
		Self::release_escrow(job, refunded)?;
		job.status = JobStatus::Finished { at: now };
		Self::reschedule(job_id, job, now.saturating_add(T::RetainFinished::get()));
		Self::deposit_event(Event::JobFinished { job_id, refunded });
		Ok(())
	}

	// --- deadlines ------------------------------------------------------------------------

	/// Moves the job's one entry in the due queue to block `at`.
	fn reschedule(job_id: JobId, job: &mut JobOf<T>, at: BlockNumberFor<T>) {
		DueJobs::<T>::remove(job.next_due, job_id);
		DueJobs::<T>::insert(at, job_id, ());
		job.next_due = at;
		Self::note_due(at);
	}

	/// Keeps the cursor at or below every queued block.
	fn note_due(at: BlockNumberFor<T>) {
		if DueCursor::<T>::get().is_none_or(|c| c > at) {
			DueCursor::<T>::put(at);
		}
	}

	/// The weight of looking at one due job, at worst: expiring every claim, then the
	/// larger of closing submissions (the judge's `open_case` included) and the judging
	/// deadline (the judge's ruling included, then settling what it left).
	pub fn process_job_weight() -> Weight {
		let replicas = T::MaxReplication::get();
		T::WeightInfo::settle_expired(replicas)
			.saturating_add(T::WeightInfo::close_submissions(replicas).max(T::Judge::on_deadline_weight()))
	}

	/// `on_idle`: works through the due jobs of every block from the cursor up to `now`,
	/// while `remaining` weight lasts. Each job is settled in its own storage layer: one
	/// that fails (it should not) is logged and dropped from the queue, and blocks nothing
	/// else.
	pub(crate) fn process_due(now: BlockNumberFor<T>, remaining: Weight) -> Weight {
		let db = T::DbWeight::get();
		// Reading one queue entry (and, for an empty block, moving on).
		let per_entry = db.reads_writes(1, 1);
		let per_job = Self::process_job_weight();
		let mut used = db.reads_writes(1, 1);
		if remaining.any_lt(used) {
			return Weight::zero()
		}
		let Some(mut cursor) = DueCursor::<T>::get() else { return used };
		while cursor <= now {
			if remaining.any_lt(used.saturating_add(per_entry).saturating_add(per_job)) {
				break
			}
			used.saturating_accrue(per_entry);
			let Some(job_id) = DueJobs::<T>::iter_key_prefix(cursor).next() else {
				cursor.saturating_inc();
				continue
			};
			used.saturating_accrue(per_job);
			if let Err(e) = Self::process_job(job_id, now) {
				log::error!(target: "runtime::jobs", "settling job {job_id} failed: {e:?}");
			}
			// Settling moves the job's entry to its next date. One still here failed (or
			// should not have been queued): it is looked at again next block, so the job
			// stays queued and the cursor moves on.
			if DueJobs::<T>::take(cursor, job_id).is_some() {
				if let Some(mut job) = Jobs::<T>::get(job_id) {
					if job.next_due == cursor {
						Self::reschedule(job_id, &mut job, now.saturating_add(One::one()));
						Jobs::<T>::insert(job_id, job);
					}
				}
			}
		}
		DueCursor::<T>::put(cursor);
		used
	}

	// --- views ----------------------------------------------------------------------------

	/// Open jobs `miner` could claim now, from `from_id` on, at most `limit` (max 100).
	pub fn claimable_jobs(
		miner: Option<T::AccountId>,
		from_id: JobId,
		limit: u32,
	) -> Vec<(JobId, JobOf<T>)> {
		let now = frame_system::Pallet::<T>::block_number();
		let record = miner.as_ref().and_then(|who| Miners::<T>::get(who));
		if miner.is_some() && record.is_none() {
			return Vec::new()
		}
		let end = NextJobId::<T>::get().min(from_id.saturating_add(MAX_JOBS_SCANNED));
		(from_id..end)
			.filter_map(|id| Jobs::<T>::get(id).map(|job| (id, job)))
			.filter(|(_, job)| {
				job.status == JobStatus::Open &&
					now <= job.deadlines.claim_by &&
					job.claims.len() < usize::from(job.spec.replication) &&
					match (&miner, &record) {
						(Some(who), Some(m)) =>
							meets(m, &job.spec.requirements) &&
								&job.owner != who &&
								!job.claims.iter().any(|c| &c.miner == who),
						_ => true,
					}
			})
			.take(limit.min(100) as usize)
			.collect()
	}

	// --- invariants -----------------------------------------------------------------------

	/// Checks the market's invariants:
	/// - solvency: every job's `escrow + released == budget`; `escrow` is zero once the
	///   job is over, and every claim of a job that is over is settled;
	/// - every account's `JobEscrow` hold equals the escrow of its jobs;
	/// - every account's `ClaimCollateral` hold equals the collateral of its unsettled
	///   claims, and its `MinerDeposit` hold the deposit of its miner record;
	/// - a miner's `active_claims` counts its unsettled claims;
	/// - claims are `Working` only while submissions are open, and `Submitted` only until
	///   the job is judged;
	/// - liveness: every job has exactly one due entry, at its `next_due`, which is after
	///   its current deadline (the close of submissions while open, or the block after the
	///   last replica delivered; the judging deadline while judged; the end of retention
	///   once over) and not before the cursor;
	/// - worker keys and miners map one to one;
	/// - no job id is at or above `NextJobId`.
	pub fn do_try_state() -> Result<(), sp_runtime::TryRuntimeError> {
		use alloc::collections::btree_map::BTreeMap;
		let mut escrow: BTreeMap<T::AccountId, BalanceOf<T>> = BTreeMap::new();
		let mut collateral: BTreeMap<T::AccountId, BalanceOf<T>> = BTreeMap::new();
		let mut active: BTreeMap<T::AccountId, u32> = BTreeMap::new();
		let next = NextJobId::<T>::get();
		let cursor = DueCursor::<T>::get();
		let mut jobs = 0u32;
		for (id, job) in Jobs::<T>::iter() {
			jobs += 1;
			ensure!(id < next, "job id at or above NextJobId");
			ensure!(job.escrow.saturating_add(job.released) == job.budget, "escrow + released != budget");
			let deadline = match job.status {
				// Every replica delivered: due the block after the last submission, not after
				// submit_by.
				JobStatus::Open if Self::all_delivered(&job) => {
					let last = job.claims.iter().filter_map(|c| c.state.delivery()).map(|d| d.submitted_at).max();
					ensure!(
						last.is_some_and(|l| job.next_due == l.saturating_add(One::one())),
						"a fully delivered job is not due the block after its last submission"
					);
					job.next_due.saturating_sub(One::one())
				},
				JobStatus::Open => job.deadlines.submit_by,
				JobStatus::Judging { until } => until,
				JobStatus::Finished { at } | JobStatus::Cancelled { at } =>
					at.saturating_add(T::RetainFinished::get()).saturating_sub(One::one()),
			};
			ensure!(job.next_due > deadline, "a job's due entry is not after its deadline");
			ensure!(DueJobs::<T>::contains_key(job.next_due, id), "a job is missing from the due queue");
			ensure!(cursor.is_some_and(|c| c <= job.next_due), "a job is due before the cursor");
			for claim in job.claims.iter() {
				match claim.state {
					ClaimState::Working =>
						ensure!(job.status == JobStatus::Open, "a Working claim after submissions closed"),
					ClaimState::Submitted { .. } => ensure!(
						matches!(job.status, JobStatus::Open | JobStatus::Judging { .. }),
						"a Submitted claim on a job that is over"
					),
					_ => {},
				}
			}
			if job.status.is_over() {
				ensure!(job.escrow.is_zero(), "escrow left on a finished or cancelled job");
			}
			let e = escrow.entry(job.owner.clone()).or_default();
			*e = e.saturating_add(job.escrow);
			for claim in job.claims.iter().filter(|c| !c.state.is_terminal()) {
				let c = collateral.entry(claim.miner.clone()).or_default();
				*c = c.saturating_add(claim.collateral);
				*active.entry(claim.miner.clone()).or_default() += 1;
			}
		}
		ensure!(DueJobs::<T>::iter().count() as u32 == jobs, "due entries that belong to no job");
		for (who, amount) in &escrow {
			ensure!(
				T::Currency::balance_on_hold(&HoldReason::JobEscrow.into(), who) == *amount,
				"JobEscrow hold differs from the jobs' escrow"
			);
		}
		for (who, amount) in &collateral {
			ensure!(
				T::Currency::balance_on_hold(&HoldReason::ClaimCollateral.into(), who) == *amount,
				"ClaimCollateral hold differs from the unsettled claims' collateral"
			);
		}
		let mut miners = 0u32;
		for (who, miner) in Miners::<T>::iter() {
			miners += 1;
			ensure!(
				T::Currency::balance_on_hold(&HoldReason::MinerDeposit.into(), &who) == miner.deposit,
				"MinerDeposit hold differs from the miner's deposit"
			);
			ensure!(
				miner.active_claims == active.get(&who).copied().unwrap_or(0),
				"active_claims differs from the unsettled claims"
			);
			ensure!(
				WorkerKeys::<T>::get(miner.worker_key).as_ref() == Some(&who),
				"miner's worker key not mapped to it"
			);
		}
		ensure!(WorkerKeys::<T>::iter().count() as u32 == miners, "worker keys without a miner");
		Ok(())
	}

	/// Total balance `who` has on hold for `reason` (for tests and tooling).
	pub fn held(reason: HoldReason, who: &T::AccountId) -> BalanceOf<T> {
		T::Currency::balance_on_hold(&reason.into(), who)
	}
}

/// Whether a miner meets a job's requirements.
fn meets<B, N>(miner: &MinerInfo<B, N>, req: &Requirements) -> bool {
	req.backend.as_ref().is_none_or(|b| *b == miner.capabilities.backend) &&
		miner.capabilities.memory_mib >= req.min_memory_mib &&
		miner.completed >= req.min_completed_jobs
}

/// Cheap necessary conditions for 32 bytes to be an sr25519 public key (a canonical
/// Ristretto encoding): catches keys given in the wrong form (an account id of another
/// scheme, a hash) before they lock a miner out of ever attesting.
fn is_valid_sr25519_key(key: &[u8; 32]) -> bool {
	// An all-zero key is the identity point: valid encoding, but no one holds its secret.
	if key == &[0u8; 32] {
		return false
	}
	// The last byte's top bit is never set in a canonical Ristretto encoding, nor is the
	// lowest bit of the first byte (the encoding is of a non-negative field element).
	matches!(key, [first, .., last] if last & 0x80 == 0 && first & 0x01 == 0)
}
