//! The market's rules: registration, posting, claiming, delivery, and settlement.
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
		OnUnbalanced,
	},
};
use frame_system::pallet_prelude::BlockNumberFor;
use sp_core::sr25519;
use sp_runtime::{
	traits::{CheckedAdd, One, Saturating, Zero},
	DispatchError, DispatchResult,
};

/// How a judge will treat a delivered result.
pub struct Review<BlockNumber> {
	/// Until when a verdict may be given.
	pub until: BlockNumber,
	/// The verdict if none is given by then.
	pub on_silence: Verdict,
}

/// Judges delivered results for the market. The market asks it how a fresh result will
/// be reviewed; verdicts come back through the owner's calls (if [`Self::owner_reviews`])
/// or through [`Pallet::apply_verdict`] from another pallet.
pub trait ResultJudge<AccountId, BlockNumber> {
	/// A result for `job_id` by `miner` arrived at `now`.
	fn review(job_id: JobId, miner: &AccountId, now: BlockNumber) -> Review<BlockNumber>;
	/// Whether the job's owner may accept or reject results itself.
	fn owner_reviews() -> bool;
}

/// The simple judge: the owner accepts or rejects within `Period` blocks; silence accepts;
/// a rejection goes to the arbiter.
pub struct OwnerReview<Period>(core::marker::PhantomData<Period>);

impl<AccountId, BlockNumber: Saturating, Period: Get<BlockNumber>> ResultJudge<AccountId, BlockNumber>
	for OwnerReview<Period>
{
	fn review(_job_id: JobId, _miner: &AccountId, now: BlockNumber) -> Review<BlockNumber> {
		Review { until: now.saturating_add(Period::get()), on_silence: Verdict::Accept }
	}

	fn owner_reviews() -> bool {
		true
	}
}

/// How many ids [`Pallet::claimable_jobs`] looks at in one call.
const MAX_JOBS_SCANNED: u64 = 1_000;
/// How many blocks past the wanted one a deadline may be moved when that block is full.
const DUE_SLOTS_SEARCHED: u32 = 16;

impl<T: Config> Pallet<T> {
	// --- miners ---------------------------------------------------------------------------

	pub(crate) fn do_register_miner(
		who: T::AccountId,
		worker_key: [u8; 32],
		capabilities: Capabilities,
	) -> DispatchResult {
		ensure!(!Miners::<T>::contains_key(&who), Error::<T>::AlreadyRegistered);
		Self::claim_worker_key(&who, worker_key)?;
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
		worker_key: Option<[u8; 32]>,
		capabilities: Option<Capabilities>,
	) -> DispatchResult {
		let mut miner = Miners::<T>::get(&who).ok_or(Error::<T>::NotAMiner)?;
		if let Some(key) = worker_key {
			if key != miner.worker_key {
				Self::claim_worker_key(&who, key)?;
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

	fn claim_worker_key(who: &T::AccountId, key: [u8; 32]) -> DispatchResult {
		ensure!(!WorkerKeys::<T>::contains_key(key), Error::<T>::WorkerKeyInUse);
		// A valid sr25519 key is a point on the Ristretto curve; reject anything else now
		// rather than at the first (impossible to verify) submission.
		ensure!(is_valid_sr25519_key(&key), Error::<T>::InvalidWorkerKey);
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
		ensure!(
			deadlines.claim_by > now &&
				deadlines.claim_by <= deadlines.submit_by &&
				deadlines.submit_by.saturating_sub(now) <= T::MaxJobDuration::get(),
			Error::<T>::InvalidDeadlines
		);
		let reward_per_result = budget / BalanceOf::<T>::from(spec.replication);
		ensure!(reward_per_result >= T::MinReward::get(), Error::<T>::BudgetTooLow);

		let job_id = NextJobId::<T>::get();
		// The job is looked at once its submission deadline has passed.
		Self::schedule(job_id, deadlines.submit_by.saturating_add(1u32.into()))?;
		T::Currency::hold(&HoldReason::JobEscrow.into(), &owner, budget)
			.map_err(|_| Error::<T>::InsufficientBalance)?;
		NextJobId::<T>::put(job_id.saturating_add(1));
		Jobs::<T>::insert(
			job_id,
			Job {
				owner: owner.clone(),
				spec,
				budget,
				reward_per_result,
				escrow: budget,
				deadlines,
				posted_at: now,
				status: JobStatus::Open,
				claims: BoundedVec::new(),
			},
		);
		Self::deposit_event(Event::JobPosted { job_id, owner, budget });
		Ok(job_id)
	}

	fn check_spec(spec: &JobSpec) -> DispatchResult {
		ensure!(
			(1..=MAX_STEPS).contains(&spec.steps) &&
				(1..=spec.steps).contains(&spec.checkpoint_interval),
			Error::<T>::InvalidHyperParameters
		);
		ensure!(
			spec.replication > 0 && u32::from(spec.replication) <= T::MaxReplication::get(),
			Error::<T>::InvalidReplication
		);
		ensure!(!spec.recipe.uri.is_empty(), Error::<T>::EmptyUri);
		Ok(())
	}

	pub(crate) fn do_cancel_job(who: T::AccountId, job_id: JobId) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		ensure!(job.owner == who, Error::<T>::NotJobOwner);
		ensure!(job.status == JobStatus::Open, Error::<T>::JobNotOpen);
		ensure!(job.claims.is_empty(), Error::<T>::JobHasClaims);
		T::Currency::release(&HoldReason::JobEscrow.into(), &who, job.escrow, Precision::Exact)?;
		job.escrow = Zero::zero();
		job.status = JobStatus::Cancelled;
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

		ensure!(attestation.job_id == job_id, Error::<T>::WrongJob);
		ensure!(attestation.miner == who, Error::<T>::WrongMiner);
		ensure!(attestation.genesis_hash == Self::genesis_hash(), Error::<T>::WrongChain);
		ensure!(attestation.recipe_sha256 == job.spec.recipe.sha256, Error::<T>::WrongRecipe);
		ensure!(attestation.steps == job.spec.steps, Error::<T>::WrongSteps);
		let message = Self::attestation_message(&attestation);
		ensure!(
			sp_io::crypto::sr25519_verify(&signature, &message, &sr25519::Public::from_raw(miner.worker_key)),
			Error::<T>::BadSignature
		);

		let review = T::Judge::review(job_id, &who, now);
		Self::schedule(job_id, review.until.saturating_add(1u32.into()))?;
		let delivery = Delivery {
			result: ContentRef { sha256: attestation.result_sha256, uri: attestation.result_uri },
			checkpoint_root: attestation.checkpoint_root,
			final_train_loss_ppm: attestation.final_train_loss_ppm,
			submitted_at: now,
		};
		Self::claim_mut(&mut job.claims, index)?.state =
			ClaimState::Submitted { delivery, review_until: review.until, on_silence: review.on_silence };
		Jobs::<T>::insert(job_id, job);
		Self::deposit_event(Event::ResultSubmitted {
			job_id,
			miner: who,
			result_sha256: attestation.result_sha256,
		});
		Ok(())
	}

	/// The genesis hash attestations must name.
	pub fn genesis_hash() -> T::Hash {
		frame_system::Pallet::<T>::block_hash(BlockNumberFor::<T>::zero())
	}

	pub(crate) fn do_owner_review(
		who: T::AccountId,
		job_id: JobId,
		miner: T::AccountId,
		verdict: Verdict,
	) -> DispatchResult {
		ensure!(T::Judge::owner_reviews(), Error::<T>::OwnerMayNotReview);
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		ensure!(job.owner == who, Error::<T>::NotJobOwner);
		let index = Self::claim_index(&job, &miner)?;
		let ClaimState::Submitted { delivery, review_until, .. } =
			Self::claim_mut(&mut job.claims, index)?.state.clone()
		else {
			return Err(Error::<T>::NotUnderReview.into())
		};
		let now = frame_system::Pallet::<T>::block_number();
		ensure!(now <= review_until, Error::<T>::ReviewPeriodOver);
		match verdict {
			Verdict::Accept => Self::settle_claim(job_id, &mut job, index, Verdict::Accept)?,
			Verdict::Reject => {
				Self::claim_mut(&mut job.claims, index)?.state = ClaimState::Disputed { delivery };
				Self::deposit_event(Event::ResultDisputed { job_id, miner });
			},
		}
		Self::finish_if_done(job_id, &mut job, now)?;
		Jobs::<T>::insert(job_id, job);
		Ok(())
	}

	pub(crate) fn do_resolve_dispute(
		job_id: JobId,
		miner: T::AccountId,
		verdict: Verdict,
	) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		let index = Self::claim_index(&job, &miner)?;
		ensure!(
			matches!(Self::claim_mut(&mut job.claims, index)?.state, ClaimState::Disputed { .. }),
			Error::<T>::NotDisputed
		);
		Self::settle_claim(job_id, &mut job, index, verdict)?;
		Self::finish_if_done(job_id, &mut job, frame_system::Pallet::<T>::block_number())?;
		Jobs::<T>::insert(job_id, job);
		Ok(())
	}

	/// A verdict from a judge other than the owner (e.g. validators' scores) on a result
	/// under review or in dispute.
	pub fn apply_verdict(job_id: JobId, miner: &T::AccountId, verdict: Verdict) -> DispatchResult {
		with_storage_layer(|| {
			let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
			let index = Self::claim_index(&job, miner)?;
			ensure!(
				matches!(
					Self::claim_mut(&mut job.claims, index)?.state,
					ClaimState::Submitted { .. } | ClaimState::Disputed { .. }
				),
				Error::<T>::NotUnderReview
			);
			Self::settle_claim(job_id, &mut job, index, verdict)?;
			Self::finish_if_done(job_id, &mut job, frame_system::Pallet::<T>::block_number())?;
			Jobs::<T>::insert(job_id, job);
			Ok(())
		})
	}

	pub(crate) fn do_settle_expired(job_id: JobId) -> DispatchResult {
		let mut job = Jobs::<T>::get(job_id).ok_or(Error::<T>::UnknownJob)?;
		ensure!(job.status == JobStatus::Open, Error::<T>::JobNotOpen);
		let now = frame_system::Pallet::<T>::block_number();
		let settled = Self::settle_due(job_id, &mut job, now)?;
		ensure!(settled, Error::<T>::NothingDue);
		Jobs::<T>::insert(job_id, job);
		Ok(())
	}

	// --- settlement -----------------------------------------------------------------------

	/// Settles whatever of `job` is due at `now`: claims past the submission deadline with
	/// nothing delivered, results past their review period, and the job itself once all of
	/// it is settled. Returns whether anything changed.
	pub(crate) fn settle_due(
		job_id: JobId,
		job: &mut JobOf<T>,
		now: BlockNumberFor<T>,
	) -> Result<bool, DispatchError> {
		let mut changed = false;
		for index in 0..job.claims.len() {
			let due = match &Self::claim_mut(&mut job.claims, index)?.state {
				ClaimState::Working if now > job.deadlines.submit_by => Some(None),
				ClaimState::Submitted { review_until, on_silence, .. } if now > *review_until =>
					Some(Some(*on_silence)),
				_ => None,
			};
			match due {
				Some(None) => {
					Self::expire_claim(job_id, job, index)?;
					changed = true;
				},
				Some(Some(verdict)) => {
					Self::settle_claim(job_id, job, index, verdict)?;
					changed = true;
				},
				None => {},
			}
		}
		Ok(Self::finish_if_done(job_id, job, now)? || changed)
	}

	/// Pays or refunds one delivered claim according to `verdict`.
	fn settle_claim(
		job_id: JobId,
		job: &mut JobOf<T>,
		index: usize,
		verdict: Verdict,
	) -> DispatchResult {
		let reward = job.reward_per_result;
		let claim = Self::claim_mut(&mut job.claims, index)?;
		let delivery = match &claim.state {
			ClaimState::Submitted { delivery, .. } | ClaimState::Disputed { delivery } =>
				delivery.clone(),
			_ => return Err(Error::<T>::NotUnderReview.into()),
		};
		let miner = claim.miner.clone();
		let escrow = HoldReason::JobEscrow.into();
		let collateral_reason = HoldReason::ClaimCollateral.into();
		match verdict {
			Verdict::Accept => {
				let fee = T::ProtocolFee::get() * reward;
				let paid = reward.saturating_sub(fee);
				T::Currency::transfer_on_hold(
					&escrow,
					&job.owner,
					&miner,
					paid,
					Precision::Exact,
					Restriction::Free,
					Fortitude::Force,
				)?;
				if !fee.is_zero() {
					T::Currency::transfer_on_hold(
						&escrow,
						&job.owner,
						&T::Treasury::get(),
						fee,
						Precision::Exact,
						Restriction::Free,
						Fortitude::Force,
					)?;
				}
				T::Currency::release(&collateral_reason, &miner, claim.collateral, Precision::Exact)?;
				claim.state = ClaimState::Paid { delivery };
				Self::note_outcome(&miner, true);
				Self::deposit_event(Event::ResultAccepted { job_id, miner, paid, fee });
			},
			Verdict::Reject => {
				T::Currency::release(&escrow, &job.owner, reward, Precision::Exact)?;
				let slashed = Self::slash_collateral(&miner, claim.collateral);
				claim.state = ClaimState::Rejected { delivery };
				Self::note_outcome(&miner, false);
				Self::deposit_event(Event::ResultRejected {
					job_id,
					miner,
					refunded: reward,
					slashed,
				});
			},
		}
		job.escrow = job.escrow.saturating_sub(reward);
		Ok(())
	}

	/// A claimer delivered nothing in time: refund its share, slash part of its collateral.
	fn expire_claim(job_id: JobId, job: &mut JobOf<T>, index: usize) -> DispatchResult {
		let reward = job.reward_per_result;
		let claim = Self::claim_mut(&mut job.claims, index)?;
		let miner = claim.miner.clone();
		T::Currency::release(&HoldReason::JobEscrow.into(), &job.owner, reward, Precision::Exact)?;
		let penalty = T::NoShowSlash::get() * claim.collateral;
		let slashed = Self::slash_collateral(&miner, penalty);
		T::Currency::release(
			&HoldReason::ClaimCollateral.into(),
			&miner,
			claim.collateral.saturating_sub(penalty),
			Precision::Exact,
		)?;
		claim.state = ClaimState::Expired;
		job.escrow = job.escrow.saturating_sub(reward);
		Self::note_outcome(&miner, false);
		Self::deposit_event(Event::ClaimExpired { job_id, miner, refunded: reward, slashed });
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

	/// Takes `amount` of `miner`'s claim collateral off hold and out of circulation (or
	/// wherever [`Config::OnSlash`] sends it). Returns what was slashed.
	fn slash_collateral(miner: &T::AccountId, amount: BalanceOf<T>) -> BalanceOf<T> {
		let (credit, missing) =
			<T::Currency as BalancedHold<_>>::slash(&HoldReason::ClaimCollateral.into(), miner, amount);
		let slashed = amount.saturating_sub(missing);
		T::OnSlash::on_unbalanced(credit);
		slashed
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

	/// Ends the job when nothing more can happen to it: every claim settled, and either
	/// every replica claimed or the claim period over. Refunds what is left in escrow.
	fn finish_if_done(
		job_id: JobId,
		job: &mut JobOf<T>,
		now: BlockNumberFor<T>,
	) -> Result<bool, DispatchError> {
		let all_settled = job.claims.iter().all(|c| c.state.is_terminal());
		let no_more_claims = job.claims.len() == usize::from(job.spec.replication) ||
			now > job.deadlines.claim_by;
		if job.status != JobStatus::Open || !all_settled || !no_more_claims {
			return Ok(false)
		}
		let refunded = job.escrow;
		if !refunded.is_zero() {
			T::Currency::release(&HoldReason::JobEscrow.into(), &job.owner, refunded, Precision::Exact)?;
		}
		job.escrow = Zero::zero();
		job.status = JobStatus::Finished;
		Self::deposit_event(Event::JobFinished { job_id, refunded });
		Ok(true)
	}

	// --- deadlines ------------------------------------------------------------------------

	/// Asks for `job_id` to be looked at in block `at` (or, if that block is full, one of
	/// the next few).
	fn schedule(job_id: JobId, at: BlockNumberFor<T>) -> DispatchResult {
		let mut block = at;
		for _ in 0..DUE_SLOTS_SEARCHED {
			let pushed = DueAt::<T>::try_mutate(block, |due| due.try_push(job_id)).is_ok();
			if pushed {
				if DueCursor::<T>::get().is_none_or(|c| c > block) {
					DueCursor::<T>::put(block);
				}
				return Ok(())
			}
			block = block.checked_add(&One::one()).ok_or(Error::<T>::TooManyDeadlinesInBlock)?;
		}
		Err(Error::<T>::TooManyDeadlinesInBlock.into())
	}

	/// `on_idle`: works through the due jobs of every block from the cursor up to `now`,
	/// while `remaining` weight lasts. Each job is settled in its own storage layer: one
	/// that fails (it should not) is logged and skipped, and blocks nothing else.
	pub(crate) fn process_due(now: BlockNumberFor<T>, remaining: Weight) -> Weight {
		let db = T::DbWeight::get();
		let per_block = db.reads_writes(1, 2);
		let per_job = T::WeightInfo::settle_expired(T::MaxReplication::get());
		let mut used = db.reads(1);
		if remaining.any_lt(used) {
			return Weight::zero()
		}
		let Some(mut cursor) = DueCursor::<T>::get() else { return used };
		while cursor <= now && remaining.all_gte(used.saturating_add(per_block)) {
			used.saturating_accrue(per_block);
			let mut due = DueAt::<T>::get(cursor);
			while let Some(&job_id) = due.first() {
				if remaining.any_lt(used.saturating_add(per_job)) {
					break
				}
				used.saturating_accrue(per_job);
				let result = with_storage_layer(|| -> DispatchResult {
					if let Some(mut job) = Jobs::<T>::get(job_id) {
						if job.status == JobStatus::Open {
							Self::settle_due(job_id, &mut job, now)?;
							Jobs::<T>::insert(job_id, job);
						}
					}
					Ok(())
				});
				if let Err(e) = result {
					log::error!(target: "runtime::jobs", "settling job {job_id} failed: {e:?}");
				}
				due.remove(0);
			}
			if due.is_empty() {
				DueAt::<T>::remove(cursor);
				cursor.saturating_inc();
			} else {
				DueAt::<T>::insert(cursor, due);
				break
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
								!job.claims.iter().any(|c| &c.miner == who),
						_ => true,
					}
			})
			.take(limit.min(100) as usize)
			.collect()
	}

	// --- invariants -----------------------------------------------------------------------

	/// Checks the market's invariants:
	/// - every job's `escrow` is at most its budget, and is zero once the job is finished
	///   or cancelled;
	/// - every account's `JobEscrow` hold equals the escrow of its open jobs;
	/// - every account's `ClaimCollateral` hold equals the collateral of its unsettled
	///   claims, and its `MinerDeposit` hold the deposit of its miner record;
	/// - a miner's `active_claims` counts its unsettled claims;
	/// - worker keys and miners map one to one;
	/// - no job id is at or above `NextJobId`.
	#[cfg(any(feature = "try-runtime", feature = "std", test))]
	pub fn do_try_state() -> Result<(), sp_runtime::TryRuntimeError> {
		use alloc::collections::btree_map::BTreeMap;
		let mut escrow: BTreeMap<T::AccountId, BalanceOf<T>> = BTreeMap::new();
		let mut collateral: BTreeMap<T::AccountId, BalanceOf<T>> = BTreeMap::new();
		let mut active: BTreeMap<T::AccountId, u32> = BTreeMap::new();
		let next = NextJobId::<T>::get();
		for (id, job) in Jobs::<T>::iter() {
			ensure!(id < next, "job id at or above NextJobId");
			ensure!(job.escrow <= job.budget, "escrow above budget");
			if job.status != JobStatus::Open {
				ensure!(job.escrow.is_zero(), "escrow left on a finished or cancelled job");
				ensure!(
					job.claims.iter().all(|c| c.state.is_terminal()),
					"unsettled claim on a finished job"
				);
			}
			let e = escrow.entry(job.owner.clone()).or_default();
			*e = e.saturating_add(job.escrow);
			for claim in job.claims.iter().filter(|c| !c.state.is_terminal()) {
				let c = collateral.entry(claim.miner.clone()).or_default();
				*c = c.saturating_add(claim.collateral);
				*active.entry(claim.miner.clone()).or_default() += 1;
			}
		}
		for (who, amount) in &escrow {
			ensure!(
				T::Currency::balance_on_hold(&HoldReason::JobEscrow.into(), who) == *amount,
				"JobEscrow hold differs from the open jobs' escrow"
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
