//! The judge's data: validators, cases, seats and reports. Everything is bounded by the
//! constants below (the runtime's `CommitteeSize`, `SegmentsPerResult` and the market's
//! `MaxReplication` are checked against them in `integrity_test`).

use codec::{Decode, DecodeWithMemTracking, Encode, MaxEncodedLen};
use frame_support::{pallet_prelude::*, BoundedVec};
use pallet_jobs::ContentRef;
use scale_info::TypeInfo;

/// Most seats on a committee.
pub const MAX_COMMITTEE: u32 = 16;
/// Most results one case judges (the market's replication is at most this).
pub const MAX_RESULTS: u32 = 32;
/// Most segments drawn per result.
pub const MAX_SEGMENTS: u32 = 16;

/// Domain separation of report commitments.
pub const REPORT_CONTEXT: &[u8] = b"molting/report/v1";
/// Domain separation of commitment signatures by report keys.
pub const COMMIT_CONTEXT: &[u8] = b"molting/commit/v1";

/// The context of a report key's proof of possession: the key signs
/// `REPORT_KEY_CONTEXT ++ SCALE(account)` (`pallet_jobs::key_proof_message`).
pub const REPORT_KEY_CONTEXT: &[u8] = b"molting/report-key/v1";
/// Subject of the committee draw's randomness.
pub const COMMITTEE_SUBJECT: &[u8] = b"molting/committee";

/// A registered validator.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct ValidatorInfo<Balance, BlockNumber> {
	/// The sr25519 key the validator's worker signs commitments with (a hot key).
	pub report_key: [u8; 32],
	/// Self-bond, on hold.
	pub bond: Balance,
	/// Seats on cases not yet ruled: the bond stays on hold while there are any.
	pub duties: u32,
	/// In the active set (may be drawn).
	pub active: bool,
	/// When it registered.
	pub registered_at: BlockNumber,
}

/// Why a checkpoint replay failed.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum Fault {
	/// The recipe, manifest, a drawn checkpoint or the adapter could not be fetched.
	Unavailable,
	/// The manifest's Merkle root is not the attested one, or a checkpoint does not hash
	/// to its leaf.
	BadManifest,
	/// Checkpoint 0 is not the recipe's initial state under the miner's seed.
	InitialState,
	/// A drawn segment did not replay to the next checkpoint's hash.
	Segment,
	/// The adapter is not the export of the last checkpoint.
	Adapter,
	/// The recipe is not the job's, or not within a contest's bounds.
	OutOfBounds,
}

/// A seat's verdict on one result's training.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum Replay {
	/// Every check passed.
	Pass,
	/// A check failed.
	Fail(Fault),
}

/// A seat's findings on one result.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct ResultReport {
	/// The replay verdict.
	pub replay: Replay,
	/// The adapter's mean eval loss (nats per predicted token, in millionths), if the eval
	/// set was revealed and the result replays.
	pub loss_ppm: Option<u32>,
	/// The adapter's eval bits per byte, in millionths.
	pub bits_per_byte_ppm: Option<u32>,
}

/// One seat's report on a case: the base model's eval loss, and one entry per result in
/// the market's order.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct Report {
	/// The base model's mean eval loss, in millionths (if the eval set was revealed).
	pub base_loss_ppm: Option<u32>,
	/// Per result.
	pub results: BoundedVec<ResultReport, ConstU32<MAX_RESULTS>>,
}

/// One validator's seat on a committee.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct Seat<AccountId, Balance> {
	/// The validator.
	pub validator: AccountId,
	/// Its bond when drawn: its weight in every vote of the case.
	pub stake: Balance,
	/// Its commitment, once made.
	pub commitment: Option<[u8; 32]>,
	/// Whether it revealed a report matching the commitment (kept in `Reports`).
	pub revealed: bool,
}

/// The eval set, as the owner revealed it.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct EvalReveal {
	/// The eval set (its SHA-256 and where to fetch it).
	pub set: ContentRef,
	/// The salt of the commitment.
	pub salt: [u8; 32],
}

/// What one result's drawn checkpoints are.
pub type Segments = BoundedVec<u32, ConstU32<MAX_SEGMENTS>>;

/// A job under judgement.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct Case<AccountId, Balance, BlockNumber> {
	/// 0, or 1 once extended.
	pub round: u8,
	/// The owner (who may reveal the eval set).
	pub owner: AccountId,
	/// The eval commitment of the job.
	pub eval_commitment: [u8; 32],
	/// Last block the owner may reveal the eval set in.
	pub reveal_by: BlockNumber,
	/// Last block of commitments.
	pub commit_by: BlockNumber,
	/// Last block of report reveals.
	pub judge_by: BlockNumber,
	/// The eval set, once revealed.
	pub eval: Option<EvalReveal>,
	/// Per result (the market's order): the segments every seat replays.
	pub segments: BoundedVec<Segments, ConstU32<MAX_RESULTS>>,
	/// The committee.
	pub seats: BoundedVec<Seat<AccountId, Balance>, ConstU32<MAX_COMMITTEE>>,
}

/// Why a validator lost part of its bond.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum Offence {
	/// Drawn, and did not commit and reveal in time.
	NoReveal,
	/// Its replay verdict on a result was against the majority.
	WrongVerdict,
}
