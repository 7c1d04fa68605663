//! The market's data: what a job asks for, what a miner offers, what a miner attests.
//!
//! Everything here is SCALE-encoded on chain and bounded. Call arguments are plain types
//! that polkadot.js and subxt decode from the metadata alone.

use codec::{Decode, DecodeWithMemTracking, Encode, MaxEncodedLen};
use frame_support::{pallet_prelude::*, BoundedVec};
use scale_info::TypeInfo;
use sp_runtime::Perbill;

/// Identifier of a job: a counter, starting at 0.
pub type JobId = u64;

/// Longest URI the chain stores (of a model, data set, or result).
pub const MAX_URI_LEN: u32 = 256;
/// Longest backend class name (`cpu/x86_64-avx512f/k2/v0.1.0`, `cuda/sm90/...`).
pub const MAX_BACKEND_LEN: u32 = 64;
/// Most training steps a job may ask for.
pub const MAX_STEPS: u32 = 1_000_000;

/// Where a content-addressed blob can be fetched from.
pub type Uri = BoundedVec<u8, ConstU32<MAX_URI_LEN>>;
/// A backend class: the instruction-set path or GPU architecture training ran on. Replays
/// are bit-exact only within one class.
pub type BackendClass = BoundedVec<u8, ConstU32<MAX_BACKEND_LEN>>;

/// A blob named by its SHA-256, and where to fetch it.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct ContentRef {
	/// SHA-256 of the blob's bytes.
	pub sha256: [u8; 32],
	/// Where to fetch it (`https://...`, `ipfs://...`, an artifact-store path).
	pub uri: Uri,
}

/// What a miner must offer to claim a job.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct Requirements {
	/// Exactly this backend class, if set (needed when results will be replayed).
	pub backend: Option<BackendClass>,
	/// At least this much accelerator (or, for CPU miners, main) memory, in MiB.
	pub min_memory_mib: u32,
	/// At least this many jobs completed and paid before.
	pub min_completed_jobs: u32,
}

/// What the miners are asked to do.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum Work {
	/// A verified compute job: every miner trains this one recipe (a canonical JSON
	/// document naming every input by SHA-256 and URI and every training parameter; the
	/// worker's README defines it). A worker refuses a recipe whose hash, steps or
	/// checkpoint interval disagree with these fields.
	Compute {
		/// The recipe.
		recipe: ContentRef,
		/// Optimizer steps (the recipe's `train.steps`); attestations must claim exactly this.
		steps: u32,
		/// A checkpoint (and a Merkle leaf) every this many steps (the recipe's
		/// `train.checkpoint_every`); attestations must claim exactly this.
		checkpoint_interval: u32,
	},
	/// A verified contest: each miner writes its own recipe within the bounds (a canonical
	/// JSON document, `molting/bounds/v1`, fixing the inputs by hash and the allowed
	/// ranges; validators check a miner's recipe against it), and the hidden eval ranks
	/// the results.
	Contest {
		/// The bounds document.
		bounds: ContentRef,
		/// Most steps a recipe may train.
		max_steps: u32,
		/// Longest checkpoint interval a recipe may use (bounds what a validator replays).
		max_checkpoint_interval: u32,
	},
}

/// How a job's budget goes to its passing results.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum PayoutRule {
	/// Every passing result earns the reward per result (`budget / replication`).
	Equal,
	/// The passing results' shares are pooled and split by rank of eval loss: rank `i` of
	/// `n`, `i >= 1`, gets `floor(pool * 2^(n-1-i) / (2^n - 1))`, rank 0 what is left (2/3 and
	/// 1/3 for two). Without a revealed eval set, as `Equal`.
	Ranked,
}

/// A fine-tuning job, as the owner posts it. The chain keeps only what it needs itself.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct JobSpec {
	/// One recipe, or a contest's bounds.
	pub work: Work,
	/// `SHA-256(SHA-256(eval set) || salt)`: the eval set stays secret until the owner
	/// reveals it, after submissions close.
	pub eval_commitment: [u8; 32],
	/// The quality bar: a result passes only if its eval loss is at most
	/// `(1 - min_improvement)` times the base model's.
	pub min_improvement: Perbill,
	/// How the budget goes to passing results.
	pub payout: PayoutRule,
	/// Who may claim it.
	pub requirements: Requirements,
	/// How many miners may work on it independently.
	pub replication: u8,
}

impl JobSpec {
	/// Whether an attestation's steps and checkpoint interval (and recipe) fit the work.
	pub fn admits(&self, recipe: &[u8; 32], steps: u32, interval: u32) -> bool {
		match &self.work {
			Work::Compute { recipe: r, steps: s, checkpoint_interval: i } =>
				&r.sha256 == recipe && *s == steps && *i == interval,
			Work::Contest { max_steps, max_checkpoint_interval, .. } =>
				(1..=*max_steps).contains(&steps) &&
					(1..=(*max_checkpoint_interval).min(steps)).contains(&interval),
		}
	}
}

/// Deadlines of a job, as absolute block numbers; each is the last block of its phase.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct Deadlines<BlockNumber> {
	/// Last block in which a miner may claim the job.
	pub claim_by: BlockNumber,
	/// Last block in which a claimer may submit its result.
	pub submit_by: BlockNumber,
	/// Last block in which the owner may reveal the eval set.
	pub reveal_by: BlockNumber,
	/// Last block of the judge's work; the job is settled after it.
	pub judge_by: BlockNumber,
}

/// What a miner offers.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct Capabilities {
	/// The backend class the miner trains on.
	pub backend: BackendClass,
	/// Accelerator (or, for CPU miners, main) memory in MiB.
	pub memory_mib: u32,
}

/// A registered miner.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct MinerInfo<Balance, BlockNumber> {
	/// The sr25519 key the miner's worker signs attestations with (a hot key, not the
	/// account's).
	pub worker_key: [u8; 32],
	/// What it offers.
	pub capabilities: Capabilities,
	/// Registration deposit, on hold.
	pub deposit: Balance,
	/// Claims not yet settled.
	pub active_claims: u32,
	/// Results that passed the judge and were paid.
	pub completed: u32,
	/// Results judged fraud or below the bar, or never delivered.
	pub failed: u32,
	/// When it registered.
	pub registered_at: BlockNumber,
}

/// What a miner signs with its worker key when it delivers. Bound to the job, the chain
/// (its genesis hash) and the miner, so it cannot be replayed anywhere else.
///
/// The signed message is `ATTESTATION_CONTEXT ++ SCALE(attestation)`, the fields encoded
/// in this order: `job_id: u64`, `genesis_hash: [u8; 32]`, `miner: AccountId (32 bytes)`,
/// `recipe_sha256: [u8; 32]`, `result_sha256: [u8; 32]`, `result_uri: Vec<u8>` (compact
/// length prefix), `checkpoint_root: [u8; 32]`, `steps: u32`, `checkpoint_interval: u32`,
/// `final_train_loss_ppm: u32` (little endian).
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct Attestation<AccountId, Hash> {
	/// The job delivered.
	pub job_id: JobId,
	/// Genesis hash of the chain the job lives on.
	pub genesis_hash: Hash,
	/// The miner's account (who is paid).
	pub miner: AccountId,
	/// SHA-256 of the recipe trained (the job's, or the miner's own in a contest).
	pub recipe_sha256: [u8; 32],
	/// SHA-256 of the result (the adapter).
	pub result_sha256: [u8; 32],
	/// Where owners and validators fetch the result.
	pub result_uri: Uri,
	/// Merkle root over the state hashes of the checkpoints taken during training.
	pub checkpoint_root: [u8; 32],
	/// Steps trained (the job's, or within a contest's bound).
	pub steps: u32,
	/// Steps between checkpoints (the job's, or within a contest's bound).
	pub checkpoint_interval: u32,
	/// Final training loss, in millionths.
	pub final_train_loss_ppm: u32,
}

/// Domain separation of attestation signatures from any other use of a worker key.
pub const ATTESTATION_CONTEXT: &[u8] = b"molting/attestation/v3";

/// The context of a worker key's proof of possession (see [`key_proof_message`]).
pub const WORKER_KEY_CONTEXT: &[u8] = b"molting/worker-key/v1";

/// What a hot key signs to be registered for `account`: `context ++ SCALE(account)` (for
/// a 32-byte account id, its 32 bytes). Only whoever holds a key's secret can make this
/// signature, so nobody can register someone else's key first and lock its owner out.
pub fn key_proof_message<AccountId: Encode>(context: &[u8], account: &AccountId) -> alloc::vec::Vec<u8> {
	let mut message = context.to_vec();
	account.encode_to(&mut message);
	message
}

/// Whether `proof` is `key`'s signature of [`key_proof_message`]`(context, account)`.
pub fn verify_key_proof<AccountId: Encode>(context: &[u8], account: &AccountId, key: &[u8; 32], proof: &[u8; 64]) -> bool {
	sp_io::crypto::sr25519_verify(
		&sp_core::sr25519::Signature::from_raw(*proof),
		&key_proof_message(context, account),
		&sp_core::sr25519::Public::from_raw(*key),
	)
}

/// A delivered result, as stored.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct Delivery<BlockNumber> {
	/// The recipe trained.
	pub recipe_sha256: [u8; 32],
	/// The result blob.
	pub result: ContentRef,
	/// Merkle root over the checkpoint state hashes.
	pub checkpoint_root: [u8; 32],
	/// Steps trained.
	pub steps: u32,
	/// Steps between checkpoints.
	pub checkpoint_interval: u32,
	/// Final training loss, in millionths.
	pub final_train_loss_ppm: u32,
	/// When it was submitted.
	pub submitted_at: BlockNumber,
}

impl<B> Delivery<B> {
	/// How many checkpoint segments the training has (`ceil(steps / interval)`); segment
	/// `s` goes from checkpoint `s` to `s + 1`.
	pub fn segments(&self) -> u32 {
		self.steps.div_ceil(self.checkpoint_interval.max(1))
	}
}

/// The judge's grade of one delivered result.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum Grade {
	/// Replays, and meets the quality bar (or no eval set was revealed: `loss_ppm` None).
	Pass {
		/// The consensus eval loss, in millionths of a nat per predicted token.
		loss_ppm: Option<u32>,
	},
	/// Replays, but misses the quality bar: not paid, not slashed.
	BelowBar,
	/// The replay failed: collateral slashed, owner refunded.
	Fraud,
	/// The judge could not rule (no quorum): refunded, nobody slashed.
	Unjudged,
}

/// What settling one result left for the judge to hand out.
pub struct ResultSettlement<Credit> {
	/// The validators' fee of the result (zero unless `Pass` or `BelowBar`).
	pub validator_fee: Credit,
	/// The slashed collateral (zero unless `Fraud`).
	pub slashed: Credit,
}

/// Where one miner's claim on a job stands.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub enum ClaimState<Balance, BlockNumber> {
	/// Claimed; training.
	Working,
	/// Delivered; awaiting the judge.
	Submitted { delivery: Delivery<BlockNumber> },
	/// Judged and settled; `paid` is what the miner received.
	Judged { delivery: Delivery<BlockNumber>, grade: Grade, paid: Balance },
	/// Nothing delivered by the deadline: owner refunded, part of the collateral slashed.
	Expired,
}

impl<Ba, B> ClaimState<Ba, B> {
	/// Settled for good: nothing of this claim is on hold any more.
	pub fn is_terminal(&self) -> bool {
		matches!(self, ClaimState::Judged { .. } | ClaimState::Expired)
	}

	/// The delivery, if there is one.
	pub fn delivery(&self) -> Option<&Delivery<B>> {
		match self {
			ClaimState::Submitted { delivery } | ClaimState::Judged { delivery, .. } => Some(delivery),
			_ => None,
		}
	}
}

/// One miner's claim on a job.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct Claim<AccountId, Balance, BlockNumber> {
	/// The miner.
	pub miner: AccountId,
	/// The miner's collateral for this claim, on hold while the claim is live.
	pub collateral: Balance,
	/// When it was claimed.
	pub claimed_at: BlockNumber,
	/// Where it stands.
	pub state: ClaimState<Balance, BlockNumber>,
}

/// Where a job stands.
#[derive(Encode, Decode, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub enum JobStatus<BlockNumber> {
	/// Claims may come in (until `claim_by`), results until `submit_by`.
	Open,
	/// Submissions closed; the judge rules by `until` (the job's `judge_by`, or later once
	/// if the judge extended it).
	Judging { until: BlockNumber },
	/// Every claim settled and the rest of the escrow refunded, at `at`.
	Finished { at: BlockNumber },
	/// Cancelled by the owner before any claim, at `at`; fully refunded.
	Cancelled { at: BlockNumber },
}

impl<B> JobStatus<B> {
	/// Finished or cancelled: nothing is held for it any more.
	pub fn is_over(&self) -> bool {
		matches!(self, JobStatus::Finished { .. } | JobStatus::Cancelled { .. })
	}
}

/// A job as stored. Records are pruned [`Config::RetainFinished`] blocks after the job
/// ends; the events are the lasting record.
///
/// [`Config::RetainFinished`]: crate::Config::RetainFinished
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
#[scale_info(skip_type_params(MaxClaims))]
#[codec(mel_bound(AccountId: MaxEncodedLen, Balance: MaxEncodedLen, BlockNumber: MaxEncodedLen))]
pub struct Job<AccountId, Balance, BlockNumber, MaxClaims: Get<u32>> {
	/// Who posted (and pays for) it.
	pub owner: AccountId,
	/// What to do.
	pub spec: JobSpec,
	/// The whole budget, as posted.
	pub budget: Balance,
	/// One result's share of the budget (`budget / replication`).
	pub reward_per_result: Balance,
	/// The part of the budget still on hold for this job: always `budget - released`.
	pub escrow: Balance,
	/// What has left the escrow so far (paid, refunded, fees).
	pub released: Balance,
	/// Its deadlines.
	pub deadlines: Deadlines<BlockNumber>,
	/// When it was posted.
	pub posted_at: BlockNumber,
	/// Where it stands.
	pub status: JobStatus<BlockNumber>,
	/// The block whose due queue holds this job (its next deadline, or its pruning).
	pub next_due: BlockNumber,
	/// The claims, in the order they were made.
	pub claims: BoundedVec<Claim<AccountId, Balance, BlockNumber>, MaxClaims>,
}
