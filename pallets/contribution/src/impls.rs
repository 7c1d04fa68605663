//! The judge's rules: validators, the committee draw, commit-reveal, aggregation and
//! payouts (the README has the protocol). Calls are transactional; the market calls
//! [`ResultJudge::on_deadline`] inside a storage layer of its own.

use crate::{pallet::*, types::*, weights::WeightInfo};
use alloc::{collections::btree_map::BTreeMap, vec::Vec};
use codec::Encode;
use core::marker::PhantomData;
use frame_support::{
	ensure,
	pallet_prelude::*,
	storage::with_storage_layer,
	traits::{
		fungible::{Balanced, BalancedHold, InspectHold, MutateHold},
		tokens::Precision,
		Imbalance, Randomness,
	},
};
use frame_system::pallet_prelude::BlockNumberFor;
use pallet_jobs::{CreditOf, Delivery, Grade, JobId, JobStatus, ResultJudge};
use sp_core::sr25519;
use sp_runtime::{
	traits::{Hash, One, Saturating, UniqueSaturatedInto, Zero},
	DispatchResult, Perbill,
};

/// Randomness from the parent block's hash. **Predictable by the block author** (who can
/// also try several blocks): for the dev chain only, where the draw need not resist a
/// colluding author. A parachain uses the relay chain's BABE randomness instead.
pub struct ParentHashRandomness<T>(PhantomData<T>);

impl<T: frame_system::Config> Randomness<T::Hash, BlockNumberFor<T>> for ParentHashRandomness<T> {
	fn random(subject: &[u8]) -> (T::Hash, BlockNumberFor<T>) {
		// The parent's hash (what `parent_hash` holds during a block).
		let known_since = frame_system::Pallet::<T>::block_number().saturating_sub(One::one());
		let parent = frame_system::Pallet::<T>::block_hash(known_since);
		(T::Hashing::hash_of(&(subject, parent)), known_since)
	}
}

type Currency<T> = <T as pallet_jobs::Config>::Currency;

impl<T: Config> Pallet<T> {
	// --- validators -------------------------------------------------------------------

	pub(crate) fn do_register_validator(
		who: T::AccountId,
		report_key: [u8; 32],
		key_proof: [u8; 64],
		bond: BalanceOf<T>,
	) -> DispatchResult {
		ensure!(!Validators::<T>::contains_key(&who), Error::<T>::AlreadyValidator);
		ensure!(bond >= T::MinValidatorBond::get(), Error::<T>::BondTooLow);
		ensure!(!ReportKeys::<T>::contains_key(report_key), Error::<T>::ReportKeyInUse);
		ensure!(is_valid_sr25519_key(&report_key), Error::<T>::InvalidReportKey);
		// Proof of possession: nobody can register another's report key first.
		ensure!(
			pallet_jobs::verify_key_proof(REPORT_KEY_CONTEXT, &who, &report_key, &key_proof),
			Error::<T>::BadKeyProof
		);
		let mut set = ActiveSet::<T>::get();
		if set.is_full() {
			// The smallest bond (the latest of equals) makes room for a larger one.
			let (index, (smallest, its_bond)) = set
				.iter()
				.enumerate()
				.min_by(|(i, (_, a)), (j, (_, b))| a.cmp(b).then(j.cmp(i)))
				.map(|(i, e)| (i, e.clone()))
				.ok_or(Error::<T>::ValidatorSetFull)?;
			ensure!(bond > its_bond, Error::<T>::ValidatorSetFull);
			set.remove(index);
			Validators::<T>::mutate(&smallest, |v| {
				if let Some(v) = v {
					v.active = false;
				}
			});
			Self::deposit_event(Event::ValidatorLeft { validator: smallest });
		}
		Currency::<T>::hold(&HoldReason::ValidatorBond.into(), &who, bond)
			.map_err(|_| Error::<T>::InsufficientBalance)?;
		set.try_push((who.clone(), bond)).map_err(|_| Error::<T>::ValidatorSetFull)?;
		ActiveSet::<T>::put(set);
		ReportKeys::<T>::insert(report_key, &who);
		Validators::<T>::insert(
			&who,
			ValidatorInfo {
				report_key,
				bond,
				duties: 0,
				active: true,
				registered_at: frame_system::Pallet::<T>::block_number(),
			},
		);
		Self::deposit_event(Event::ValidatorRegistered { validator: who, report_key, bond });
		Ok(())
	}

	pub(crate) fn do_unregister_validator(who: T::AccountId) -> DispatchResult {
		let mut info = Validators::<T>::get(&who).ok_or(Error::<T>::NotAValidator)?;
		ensure!(info.active, Error::<T>::NotActive);
		info.active = false;
		Validators::<T>::insert(&who, info);
		ActiveSet::<T>::mutate(|set| set.retain(|(v, _)| v != &who));
		Self::deposit_event(Event::ValidatorLeft { validator: who });
		Ok(())
	}

	pub(crate) fn do_withdraw_bond(who: T::AccountId) -> DispatchResult {
		let info = Validators::<T>::get(&who).ok_or(Error::<T>::NotAValidator)?;
		ensure!(!info.active, Error::<T>::StillActive);
		ensure!(info.duties == 0, Error::<T>::HasDuties);
		Currency::<T>::release(&HoldReason::ValidatorBond.into(), &who, info.bond, Precision::Exact)?;
		ReportKeys::<T>::remove(info.report_key);
		Validators::<T>::remove(&who);
		Self::deposit_event(Event::BondWithdrawn { validator: who, amount: info.bond });
		Ok(())
	}

	/// Burns `part` of `who`'s bond; a validator left below the minimum leaves the active
	/// set. Returns what was slashed.
	fn slash_bond(job_id: JobId, who: &T::AccountId, part: Perbill, offence: Offence) -> BalanceOf<T> {
		let Some(mut info) = Validators::<T>::get(who) else { return Zero::zero() };
		let amount = part * info.bond;
		let (credit, _) =
			<Currency<T> as BalancedHold<_>>::slash(&HoldReason::ValidatorBond.into(), who, amount);
		let slashed = credit.peek();
		drop(credit); // burned
		info.bond = info.bond.saturating_sub(slashed);
		if info.active && info.bond < T::MinValidatorBond::get() {
			info.active = false;
			ActiveSet::<T>::mutate(|set| set.retain(|(v, _)| v != who));
			Self::deposit_event(Event::ValidatorLeft { validator: who.clone() });
		} else {
			ActiveSet::<T>::mutate(|set| {
				if let Some(entry) = set.iter_mut().find(|(v, _)| v == who) {
					entry.1 = info.bond;
				}
			});
		}
		Validators::<T>::insert(who, info);
		Self::deposit_event(Event::ValidatorPenalised { job_id, validator: who.clone(), offence, slashed });
		slashed
	}

	fn change_duties(who: &T::AccountId, add: bool) {
		Validators::<T>::mutate(who, |v| {
			if let Some(v) = v {
				if add {
					v.duties.saturating_inc();
				} else {
					v.duties.saturating_dec();
				}
			}
		});
	}

	// --- the eval set and reports -------------------------------------------------------

	pub(crate) fn do_reveal_eval(
		who: T::AccountId,
		job_id: JobId,
		set: pallet_jobs::ContentRef,
		salt: [u8; 32],
	) -> DispatchResult {
		let mut case = Cases::<T>::get(job_id).ok_or(Error::<T>::NoCase)?;
		ensure!(case.owner == who, Error::<T>::NotJobOwner);
		ensure!(frame_system::Pallet::<T>::block_number() <= case.reveal_by, Error::<T>::EvalRevealPeriodOver);
		ensure!(case.eval.is_none(), Error::<T>::EvalAlreadyRevealed);
		ensure!(eval_commitment(&set.sha256, &salt) == case.eval_commitment, Error::<T>::EvalMismatch);
		case.eval = Some(EvalReveal { set: set.clone(), salt });
		Cases::<T>::insert(job_id, case);
		Self::deposit_event(Event::EvalRevealed { job_id, set });
		Ok(())
	}

	/// The commitment to `report` of `validator` on round `round` of job `job_id`:
	/// `SHA-256(REPORT_CONTEXT || SCALE(job_id) || SCALE(round) || SCALE(report) || salt
	/// || SCALE(validator))`. The validator is inside, so a copied commitment cannot be
	/// revealed by the copier.
	pub fn commitment(
		job_id: JobId,
		round: u8,
		validator: &T::AccountId,
		report: &Report,
		salt: &[u8; 32],
	) -> [u8; 32] {
		let mut bytes = REPORT_CONTEXT.to_vec();
		job_id.encode_to(&mut bytes);
		round.encode_to(&mut bytes);
		report.encode_to(&mut bytes);
		bytes.extend_from_slice(salt);
		validator.encode_to(&mut bytes);
		sp_io::hashing::sha2_256(&bytes)
	}

	/// What a report key signs to commit: `COMMIT_CONTEXT || SCALE(genesis hash, job_id,
	/// round, validator, commitment)`.
	pub fn commit_message(job_id: JobId, round: u8, validator: &T::AccountId, commitment: &[u8; 32]) -> Vec<u8> {
		let mut message = COMMIT_CONTEXT.to_vec();
		(pallet_jobs::Pallet::<T>::genesis_hash(), job_id, round, validator, commitment).encode_to(&mut message);
		message
	}

	pub(crate) fn do_commit_report(
		job_id: JobId,
		validator: T::AccountId,
		commitment: [u8; 32],
		signature: sr25519::Signature,
	) -> DispatchResult {
		let mut case = Cases::<T>::get(job_id).ok_or(Error::<T>::NoCase)?;
		let now = frame_system::Pallet::<T>::block_number();
		let round = case.round;
		let seat = case.seats.iter_mut().find(|s| s.validator == validator).ok_or(Error::<T>::NotOnCommittee)?;
		ensure!(
			(case.eval.is_some() || now > case.reveal_by) && now <= case.commit_by,
			Error::<T>::NotCommitPeriod
		);
		ensure!(seat.commitment.is_none(), Error::<T>::AlreadyCommitted);
		let info = Validators::<T>::get(&validator).ok_or(Error::<T>::NotAValidator)?;
		let message = Self::commit_message(job_id, round, &validator, &commitment);
		ensure!(
			sp_io::crypto::sr25519_verify(&signature, &message, &sr25519::Public::from_raw(info.report_key)),
			Error::<T>::BadSignature
		);
		seat.commitment = Some(commitment);
		Cases::<T>::insert(job_id, case);
		Self::deposit_event(Event::ReportCommitted { job_id, validator });
		Ok(())
	}

	pub(crate) fn do_reveal_report(
		job_id: JobId,
		validator: T::AccountId,
		report: Report,
		salt: [u8; 32],
	) -> DispatchResult {
		let mut case = Cases::<T>::get(job_id).ok_or(Error::<T>::NoCase)?;
		let now = frame_system::Pallet::<T>::block_number();
		let (round, results) = (case.round, case.segments.len());
		// Once every seat has committed nothing is left to copy: reveals may start before
		// `commit_by`.
		let all_committed = case.seats.iter().all(|s| s.commitment.is_some());
		let seat = case.seats.iter_mut().find(|s| s.validator == validator).ok_or(Error::<T>::NotOnCommittee)?;
		ensure!((now > case.commit_by || all_committed) && now <= case.judge_by, Error::<T>::NotRevealPeriod);
		let commitment = seat.commitment.ok_or(Error::<T>::NotCommitted)?;
		ensure!(!seat.revealed, Error::<T>::AlreadyRevealed);
		ensure!(report.results.len() == results, Error::<T>::WrongResultCount);
		ensure!(
			Self::commitment(job_id, round, &validator, &report, &salt) == commitment,
			Error::<T>::CommitmentMismatch
		);
		seat.revealed = true;
		let all_revealed = case.seats.iter().all(|s| s.revealed);
		Cases::<T>::insert(job_id, case);
		Reports::<T>::insert(job_id, &validator, &report);
		Self::deposit_event(Event::ReportRevealed { job_id, validator, report });
		if all_revealed {
			// Nothing is left to wait for. A ruling that fails (it should not) leaves the
			// case to the deadline, and the reveal stands.
			if let Err(e) = with_storage_layer(|| Self::rule(job_id)) {
				log::error!(target: "runtime::contribution", "ruling job {job_id} failed: {e:?}");
			}
		}
		Ok(())
	}

	// --- the draw ------------------------------------------------------------------------

	/// The seed of a case's draw: fresh randomness, the job, the round, and every attested
	/// checkpoint root (unknown to anyone before submissions closed).
	fn seed(job_id: JobId, round: u8, roots: &[[u8; 32]]) -> [u8; 32] {
		let (random, _) = T::Randomness::random(COMMITTEE_SUBJECT);
		sp_io::hashing::blake2_256(&(COMMITTEE_SUBJECT, random, job_id, round, roots).encode())
	}

	/// A number drawn from `seed` for `(what, index)`.
	fn draw(seed: &[u8; 32], what: u8, index: u32, sub: u32) -> u128 {
		let h = sp_io::hashing::blake2_256(&(seed, what, index, sub).encode());
		let mut low = [0u8; 16];
		low.copy_from_slice(h.get(..16).unwrap_or(&[0; 16]));
		u128::from_le_bytes(low)
	}

	/// Up to [`Config::CommitteeSize`] distinct active validators not in `exclude`, each
	/// seat drawn with probability proportional to bond among those not yet drawn.
	fn draw_committee(seed: &[u8; 32], exclude: &[T::AccountId]) -> Vec<Seat<T::AccountId, BalanceOf<T>>> {
		let mut candidates: Vec<(T::AccountId, BalanceOf<T>)> =
			ActiveSet::<T>::get().into_iter().filter(|(v, _)| !exclude.contains(v)).collect();
		let mut seats = Vec::new();
		for k in 0..T::CommitteeSize::get() {
			let total: u128 =
				candidates.iter().map(|(_, b)| UniqueSaturatedInto::<u128>::unique_saturated_into(*b)).sum();
			if total == 0 {
				break
			}
			let mut point = Self::draw(seed, 0, k, 0) % total;
			let mut chosen = candidates.len().saturating_sub(1);
			for (i, (_, bond)) in candidates.iter().enumerate() {
				let b: u128 = (*bond).unique_saturated_into();
				if point < b {
					chosen = i;
					break
				}
				point = point.saturating_sub(b);
			}
			if chosen >= candidates.len() {
				break
			}
			let (validator, stake) = candidates.remove(chosen);
			seats.push(Seat { validator, stake, commitment: None, revealed: false });
		}
		seats
	}

	/// `min(SegmentsPerResult, segments)` distinct segments of result `result` (all of
	/// them when there are no more than that), drawn uniformly; a repeat moves on to the
	/// next free segment.
	fn draw_segments(seed: &[u8; 32], result: u32, segments: u32) -> Segments {
		let m = T::SegmentsPerResult::get().min(MAX_SEGMENTS);
		let mut chosen: Vec<u32> = if segments <= m {
			(0..segments).collect()
		} else {
			let mut out = Vec::new();
			for j in 0..m {
				let mut s = (Self::draw(seed, 1, result, j) % u128::from(segments)) as u32;
				while out.contains(&s) {
					s = s.saturating_add(1) % segments;
				}
				out.push(s);
			}
			out
		};
		chosen.sort();
		Segments::truncate_from(chosen)
	}

	/// Seats a committee and draws the segments of every result for round `round`.
	/// Returns whether anyone was seated.
	fn seat_committee(
		job_id: JobId,
		case: &mut CaseOf<T>,
		results: &[Delivery<BlockNumberFor<T>>],
		exclude: &[T::AccountId],
	) -> bool {
		let roots: Vec<[u8; 32]> = results.iter().map(|d| d.checkpoint_root).collect();
		let seed = Self::seed(job_id, case.round, &roots);
		let seats = Self::draw_committee(&seed, exclude);
		if seats.is_empty() {
			return false
		}
		for seat in &seats {
			Self::change_duties(&seat.validator, true);
		}
		case.seats = BoundedVec::truncate_from(seats);
		case.segments = BoundedVec::truncate_from(
			results
				.iter()
				.enumerate()
				.map(|(i, d)| Self::draw_segments(&seed, i as u32, d.segments()))
				.collect::<Vec<_>>(),
		);
		Self::deposit_event(Event::CommitteeDrawn {
			job_id,
			round: case.round,
			seats: case.seats.iter().map(|s| s.validator.clone()).collect(),
			segments: case.segments.iter().map(|s| s.to_vec()).collect(),
			commit_by: case.commit_by,
			judge_by: case.judge_by,
		});
		true
	}

	/// Frees the seats of a case and removes its reports.
	fn unseat(job_id: JobId, case: &CaseOf<T>) {
		for seat in &case.seats {
			Self::change_duties(&seat.validator, false);
		}
		let _ = Reports::<T>::clear_prefix(job_id, MAX_COMMITTEE, None);
	}

	/// The owner and every claimer of a job: never drawn to judge it.
	fn parties(job: &pallet_jobs::JobOf<T>) -> Vec<T::AccountId> {
		core::iter::once(job.owner.clone()).chain(job.claims.iter().map(|c| c.miner.clone())).collect()
	}

	/// The delivered results of a job under judgement, in the market's order.
	fn deliveries(job_id: JobId) -> Vec<Delivery<BlockNumberFor<T>>> {
		pallet_jobs::Jobs::<T>::get(job_id)
			.map(|job| {
				job.claims
					.iter()
					.filter_map(|c| match &c.state {
						pallet_jobs::ClaimState::Submitted { delivery } => Some(delivery.clone()),
						_ => None,
					})
					.collect()
			})
			.unwrap_or_default()
	}

	// --- the ruling ----------------------------------------------------------------------

	/// Aggregates the revealed reports of `job_id`, has the market settle by them, pays
	/// the seats and penalises wrong verdicts, and closes the case.
	pub(crate) fn rule(job_id: JobId) -> DispatchResult {
		let case = Cases::<T>::get(job_id).ok_or(Error::<T>::NoCase)?;
		let job = pallet_jobs::Jobs::<T>::get(job_id).ok_or(Error::<T>::NoCase)?;
		let reports: Vec<(T::AccountId, BalanceOf<T>, Report)> = case
			.seats
			.iter()
			.filter(|s| s.revealed)
			.filter_map(|s| Reports::<T>::get(job_id, &s.validator).map(|r| (s.validator.clone(), s.stake, r)))
			.collect();
		let revealed: BalanceOf<T> = reports.iter().fold(Zero::zero(), |a, (_, s, _)| a.saturating_add(*s));
		let eval_revealed = case.eval.is_some();
		let base = weighted_median(reports.iter().filter_map(|(_, s, r)| r.base_loss_ppm.map(|l| (l, *s))));

		let mut grades = Vec::new();
		// Per result: who shares the validators' fee, who reported a fraud.
		let mut fee_to: Vec<Vec<(T::AccountId, BalanceOf<T>)>> = Vec::new();
		let mut wrong: Vec<T::AccountId> = Vec::new();
		for i in 0..case.segments.len() {
			let entry = |r: &Report| r.results.get(i).copied();
			let fail_stake = reports
				.iter()
				.filter(|(_, _, r)| entry(r).is_some_and(|e| matches!(e.replay, Replay::Fail(_))))
				.fold(BalanceOf::<T>::zero(), |a, (_, s, _)| a.saturating_add(*s));
			let doubled = fail_stake.saturating_mul(2u32.into());
			if doubled == revealed {
				// A tie: no majority to follow and none to penalise; the result is refunded.
				grades.push(Grade::Unjudged);
				fee_to.push(Vec::new());
				continue
			}
			let fraud = doubled > revealed;
			let (majority, minority): (Vec<_>, Vec<_>) = reports.iter().partition(|(_, _, r)| {
				entry(r).is_some_and(|e| matches!(e.replay, Replay::Fail(_)) == fraud)
			});
			for (v, _, _) in minority {
				if !wrong.contains(v) {
					wrong.push(v.clone());
				}
			}
			if fraud {
				grades.push(Grade::Fraud);
				fee_to.push(majority.iter().map(|(v, s, _)| (v.clone(), *s)).collect());
				continue
			}
			let loss = weighted_median(
				majority.iter().filter_map(|(_, s, r)| entry(r).and_then(|e| e.loss_ppm).map(|l| (l, *s))),
			);
			let grade = match (eval_revealed, loss, base) {
				(true, Some(l), Some(b)) if l > b.saturating_sub(job.spec.min_improvement * b) => Grade::BelowBar,
				(true, Some(l), _) => Grade::Pass { loss_ppm: Some(l) },
				_ => Grade::Pass { loss_ppm: None },
			};
			grades.push(grade);
			// A seat far from the consensus loss (or silent on it) earns no fee share.
			let agrees = |r: &Report| match (eval_revealed, loss) {
				(true, Some(c)) => entry(r).and_then(|e| e.loss_ppm).is_some_and(|l| {
					l.abs_diff(c) <= T::LossTolerance::get() * c
				}),
				_ => true,
			};
			fee_to.push(majority.iter().filter(|(_, _, r)| agrees(r)).map(|(v, s, _)| (v.clone(), *s)).collect());
		}

		let settlements = pallet_jobs::Pallet::<T>::settle_judged(job_id, &grades)?;
		let mut paid: BTreeMap<T::AccountId, BalanceOf<T>> = BTreeMap::new();
		let mut burned = BalanceOf::<T>::zero();
		for (settlement, recipients) in settlements.into_iter().zip(fee_to.iter()) {
			let pallet_jobs::ResultSettlement { validator_fee, slashed } = settlement;
			// No seat to pay: the validators' fee goes to the treasury.
			let unpaid = Self::pay_by_stake(validator_fee, recipients, &mut paid);
			if let Err(rest) = Currency::<T>::resolve(&<T as pallet_jobs::Config>::Treasury::get(), unpaid) {
				burned = burned.saturating_add(rest.peek());
			}
			let reporters = T::FraudReporterShare::get() * slashed.peek();
			let (to_reporters, rest) = slashed.split(reporters);
			let unpaid = Self::pay_by_stake(to_reporters, recipients, &mut paid);
			burned = burned.saturating_add(rest.peek()).saturating_add(unpaid.peek());
		}
		for (validator, amount) in paid {
			Self::deposit_event(Event::ValidatorPaid { job_id, validator, amount });
		}
		for validator in wrong {
			Self::slash_bond(job_id, &validator, T::WrongVerdictSlash::get(), Offence::WrongVerdict);
		}
		Self::unseat(job_id, &case);
		Cases::<T>::remove(job_id);
		Self::deposit_event(Event::CaseRuled { job_id, grades, burned });
		Ok(())
	}

	/// Pays `credit` out to `recipients` in proportion to their stakes (the last takes the
	/// rounding). Returns what could not be paid (all of it when there is no recipient).
	fn pay_by_stake(
		credit: CreditOf<T>,
		recipients: &[(T::AccountId, BalanceOf<T>)],
		paid: &mut BTreeMap<T::AccountId, BalanceOf<T>>,
	) -> CreditOf<T> {
		let total_stake = recipients.iter().fold(BalanceOf::<T>::zero(), |a, (_, s)| a.saturating_add(*s));
		if total_stake.is_zero() || credit.peek().is_zero() {
			return credit
		}
		let amount = credit.peek();
		let mut rest = credit;
		let mut unpaid = CreditOf::<T>::zero();
		for (k, (who, stake)) in recipients.iter().enumerate() {
			let part = if k + 1 == recipients.len() {
				rest.peek()
			} else {
				Perbill::from_rational(*stake, total_stake) * amount
			};
			let (now, r) = rest.split(part);
			rest = r;
			let value = now.peek();
			match Currency::<T>::resolve(who, now) {
				Ok(()) => {
					let p = paid.entry(who.clone()).or_insert_with(Zero::zero);
					*p = p.saturating_add(value);
				},
				Err(back) => unpaid.subsume(back),
			}
		}
		unpaid.subsume(rest);
		unpaid
	}

	/// The cases `validator` has a seat on.
	pub fn cases_of(validator: &T::AccountId) -> Vec<(JobId, CaseOf<T>)> {
		Cases::<T>::iter().filter(|(_, c)| c.seats.iter().any(|s| &s.validator == validator)).collect()
	}

	// --- invariants ----------------------------------------------------------------------

	/// Checks the judge's invariants:
	/// - every validator's `ValidatorBond` hold equals its bond, its report key maps back
	///   to it, and its `duties` count its seats on open cases;
	/// - the active set holds distinct active validators with their current bonds, and
	///   every active validator is in it;
	/// - every case is of a job under judgement, and every job under judgement has a case;
	///   a case's seats are distinct, at most `CommitteeSize`; it has one segment list per
	///   delivered result, each within the result's segments; a seat revealed only after
	///   committing, and a report is stored exactly for each revealed seat.
	pub fn do_try_state() -> Result<(), sp_runtime::TryRuntimeError> {
		let mut seats: BTreeMap<T::AccountId, u32> = BTreeMap::new();
		let mut cases = 0u32;
		for (job_id, case) in Cases::<T>::iter() {
			cases += 1;
			ensure!(
				pallet_jobs::Jobs::<T>::get(job_id)
					.is_some_and(|j| matches!(j.status, JobStatus::Judging { .. })),
				"a case of a job not under judgement"
			);
			ensure!(case.seats.len() as u32 <= T::CommitteeSize::get(), "too many seats");
			if let Some(job) = pallet_jobs::Jobs::<T>::get(job_id) {
				ensure!(
					job.status == JobStatus::Judging { until: case.judge_by },
					"the case's judging deadline is not the market's"
				);
				ensure!(case.reveal_by == job.deadlines.reveal_by, "the case's reveal deadline is not the job's");
				ensure!(
					!case.seats.iter().any(|s| Self::parties(&job).contains(&s.validator)),
					"a party to the job sits on its committee"
				);
			}
			let deliveries = Self::deliveries(job_id);
			ensure!(case.segments.len() == deliveries.len(), "segments not one per result");
			for (segments, d) in case.segments.iter().zip(&deliveries) {
				ensure!(segments.iter().all(|s| *s < d.segments()), "a segment past the result's last");
			}
			for (i, seat) in case.seats.iter().enumerate() {
				ensure!(
					!case.seats.iter().skip(i + 1).any(|s| s.validator == seat.validator),
					"a validator seated twice"
				);
				ensure!(!seat.revealed || seat.commitment.is_some(), "revealed without committing");
				ensure!(
					seat.revealed == Reports::<T>::contains_key(job_id, &seat.validator),
					"a report without a revealed seat, or the reverse"
				);
				*seats.entry(seat.validator.clone()).or_default() += 1;
			}
			ensure!(
				Reports::<T>::iter_prefix(job_id).count() <= case.seats.len(),
				"reports of validators not seated"
			);
		}
		let judging = pallet_jobs::Jobs::<T>::iter()
			.filter(|(_, j)| matches!(j.status, JobStatus::Judging { .. }))
			.count() as u32;
		ensure!(judging == cases, "a job under judgement without a case");
		ensure!(Reports::<T>::iter_keys().all(|(j, _)| Cases::<T>::contains_key(j)), "reports of no case");

		let set = ActiveSet::<T>::get();
		let mut active = 0u32;
		for (who, info) in Validators::<T>::iter() {
			ensure!(
				Currency::<T>::balance_on_hold(&HoldReason::ValidatorBond.into(), &who) == info.bond,
				"ValidatorBond hold differs from the bond"
			);
			ensure!(ReportKeys::<T>::get(info.report_key).as_ref() == Some(&who), "report key not mapped");
			ensure!(info.duties == seats.get(&who).copied().unwrap_or(0), "duties differ from seats");
			if info.active {
				active += 1;
				ensure!(set.iter().any(|(v, b)| v == &who && *b == info.bond), "active validator not in the set");
			}
		}
		ensure!(active as usize == set.len(), "the active set holds inactive validators");
		for (i, (v, _)) in set.iter().enumerate() {
			ensure!(!set.iter().skip(i + 1).any(|(w, _)| w == v), "a validator twice in the set");
		}
		ensure!(ReportKeys::<T>::iter().count() == Validators::<T>::iter().count(), "report keys without a validator");
		Ok(())
	}
}

impl<T: Config> ResultJudge<T::AccountId, BlockNumberFor<T>> for Pallet<T> {
	fn min_judging_period() -> BlockNumberFor<T> {
		T::MinCommitWindow::get().saturating_add(T::RevealWindow::get())
	}

	fn open_case(job_id: JobId, results: &[(T::AccountId, Delivery<BlockNumberFor<T>>)]) -> DispatchResult {
		let job = pallet_jobs::Jobs::<T>::get(job_id).ok_or(Error::<T>::NoCase)?;
		let judge_by = job.deadlines.judge_by;
		// Nobody judges its own job or its own result.
		let parties = Self::parties(&job);
		let mut case = Case {
			round: 0,
			owner: job.owner,
			eval_commitment: job.spec.eval_commitment,
			reveal_by: job.deadlines.reveal_by,
			commit_by: judge_by.saturating_sub(T::RevealWindow::get()),
			judge_by,
			eval: None,
			segments: BoundedVec::new(),
			seats: BoundedVec::new(),
		};
		let deliveries: Vec<_> = results.iter().map(|(_, d)| d.clone()).collect();
		ensure!(Self::seat_committee(job_id, &mut case, &deliveries, &parties), Error::<T>::NoValidators);
		Cases::<T>::insert(job_id, case);
		Ok(())
	}

	fn on_deadline(job_id: JobId) {
		let Some(mut case) = Cases::<T>::get(job_id) else { return };
		let total = case.seats.iter().fold(BalanceOf::<T>::zero(), |a, s| a.saturating_add(s.stake));
		let revealed = case
			.seats
			.iter()
			.filter(|s| s.revealed)
			.fold(BalanceOf::<T>::zero(), |a, s| a.saturating_add(s.stake));
		for seat in case.seats.iter().filter(|s| !s.revealed) {
			Self::slash_bond(job_id, &seat.validator, T::NoRevealSlash::get(), Offence::NoReveal);
		}
		if revealed.saturating_mul(2u32.into()) > total {
			if let Err(e) = with_storage_layer(|| Self::rule(job_id)) {
				log::error!(target: "runtime::contribution", "ruling job {job_id} failed: {e:?}");
				Self::unseat(job_id, &case);
				Cases::<T>::remove(job_id);
				Self::deposit_event(Event::CaseAbandoned { job_id });
			}
			return
		}
		// No quorum: one more round with a fresh committee, else every result is refunded.
		Self::unseat(job_id, &case);
		let now = frame_system::Pallet::<T>::block_number();
		// Counted from the deadline (not from when `on_idle` got to it), so it always fits
		// the market's `MaxJudgeExtension`.
		let until = case.judge_by.saturating_add(T::ExtensionPeriod::get());
		let extended = case.round == 0 && until > now && {
			let mut exclude: Vec<T::AccountId> = case.seats.iter().map(|s| s.validator.clone()).collect();
			if let Some(job) = pallet_jobs::Jobs::<T>::get(job_id) {
				exclude.extend(Self::parties(&job));
			}
			case.round = 1;
			case.commit_by = until.saturating_sub(T::RevealWindow::get());
			case.judge_by = until;
			let deliveries = Self::deliveries(job_id);
			with_storage_layer(|| {
				ensure!(Self::seat_committee(job_id, &mut case, &deliveries, &exclude), Error::<T>::NoValidators);
				pallet_jobs::Pallet::<T>::extend_judging(job_id, until)
			})
			.is_ok()
		};
		if extended {
			Cases::<T>::insert(job_id, case);
			Self::deposit_event(Event::CaseExtended { job_id });
		} else {
			Cases::<T>::remove(job_id);
			Self::deposit_event(Event::CaseAbandoned { job_id });
		}
	}

	fn on_deadline_weight() -> Weight {
		// The larger of its two ends: a ruling, or a fresh committee.
		<T as Config>::WeightInfo::on_deadline_ruling().max(<T as Config>::WeightInfo::on_deadline_extending())
	}

	#[cfg(feature = "runtime-benchmarks")]
	fn prepare_for_cases() {
		crate::benchmarking::fill_active_set::<T>();
	}

	fn forget(job_id: JobId) {
		// Cases end with their ruling or abandonment; nothing should be left. Should one
		// be, free its seats.
		if let Some(case) = Cases::<T>::take(job_id) {
			Self::unseat(job_id, &case);
		}
	}
}

/// `SHA-256(eval set's SHA-256 || salt)`: the eval commitment a job posts.
pub fn eval_commitment(set_sha256: &[u8; 32], salt: &[u8; 32]) -> [u8; 32] {
	let mut bytes = [0u8; 64];
	bytes[..32].copy_from_slice(set_sha256);
	bytes[32..].copy_from_slice(salt);
	sp_io::hashing::sha2_256(&bytes)
}

/// The stake-weighted median (κ = ½): the smallest value whose cumulative stake reaches
/// half the total. `None` when there are no values.
pub fn weighted_median<B: sp_runtime::traits::AtLeast32BitUnsigned + Copy>(
	values: impl Iterator<Item = (u32, B)>,
) -> Option<u32> {
	let mut v: Vec<(u32, B)> = values.collect();
	v.sort_by_key(|(l, _)| *l);
	let total = v.iter().fold(B::zero(), |a, (_, s)| a.saturating_add(*s));
	let mut cumulative = B::zero();
	for (l, s) in &v {
		cumulative = cumulative.saturating_add(*s);
		if cumulative.saturating_mul(2u32.into()) >= total {
			return Some(*l)
		}
	}
	v.last().map(|(l, _)| *l)
}

/// Cheap necessary conditions for 32 bytes to be an sr25519 public key (see pallet-jobs).
fn is_valid_sr25519_key(key: &[u8; 32]) -> bool {
	key != &[0u8; 32] && matches!(key, [first, .., last] if last & 0x80 == 0 && first & 0x01 == 0)
}

#[cfg(test)]
mod unit {
	use super::*;

	#[test]
	fn weighted_median_is_the_half_stake_point() {
		assert_eq!(weighted_median::<u64>([].into_iter()), None);
		assert_eq!(weighted_median([(5, 1u64)].into_iter()), Some(5));
		// Stakes 1, 1, 3: the value holding the middle of the stake is 9.
		assert_eq!(weighted_median([(1, 1u64), (2, 1), (9, 3)].into_iter()), Some(9));
		// Equal stakes, even count: the lower middle.
		assert_eq!(weighted_median([(4, 1u64), (1, 1), (3, 1), (2, 1)].into_iter()), Some(2));
		// A lone outlier with little stake does not move it.
		assert_eq!(weighted_median([(100, 1u64), (7, 10), (8, 5)].into_iter()), Some(7));
	}

	#[test]
	fn eval_commitment_is_sha256_of_hash_and_salt() {
		// sha256 of 64 zero bytes.
		assert_eq!(
			eval_commitment(&[0; 32], &[0; 32]),
			hex_literal(b"f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b")
		);
	}

	fn hex_literal(h: &[u8; 64]) -> [u8; 32] {
		let mut out = [0u8; 32];
		for (i, pair) in h.chunks(2).enumerate() {
			let n = |c: u8| (c as char).to_digit(16).unwrap() as u8;
			out[i] = n(pair[0]) << 4 | n(pair[1]);
		}
		out
	}
}
