//! The market's data: what a job asks for, what a miner offers, what a miner attests.
//!
//! Everything here is SCALE-encoded on chain and bounded. Call arguments are plain types
//! that polkadot.js and subxt decode from the metadata alone.

use codec::{Decode, DecodeWithMemTracking, Encode, MaxEncodedLen};
use frame_support::{pallet_prelude::*, BoundedVec};
use scale_info::TypeInfo;

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

/// A fine-tuning job, as the owner posts it.
///
/// Everything about how to train lives in the *recipe*, a canonical JSON document named
/// by its SHA-256 (the worker's README defines it): every input (model, tokenizer,
/// training set) by SHA-256 and URI, and every training parameter. The chain keeps only
/// what it needs itself; a worker refuses a recipe whose hash, steps or checkpoint
/// interval disagree with these fields.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct JobSpec {
	/// The recipe.
	pub recipe: ContentRef,
	/// SHA-256 of (eval set || salt): the eval set stays secret until it is revealed.
	pub eval_commitment: [u8; 32],
	/// Optimizer steps (the recipe's `train.steps`); attestations must claim exactly this.
	pub steps: u32,
	/// A checkpoint (and a Merkle leaf) every this many steps (the recipe's
	/// `train.checkpoint_every`).
	pub checkpoint_interval: u32,
	/// Who may claim it.
	pub requirements: Requirements,
	/// How many miners may work on it independently (each is paid its share).
	pub replication: u8,
}

/// Deadlines of a job, as absolute block numbers.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub struct Deadlines<BlockNumber> {
	/// Last block in which a miner may claim the job.
	pub claim_by: BlockNumber,
	/// Last block in which a claimer may submit its result.
	pub submit_by: BlockNumber,
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
	/// Results accepted and paid.
	pub completed: u32,
	/// Results rejected, or never delivered.
	pub failed: u32,
	/// When it registered.
	pub registered_at: BlockNumber,
}

/// What a miner signs with its worker key when it delivers. Bound to the job, the chain
/// (its genesis hash) and the miner, so it cannot be replayed anywhere else.
///
/// The signed message is `ATTESTATION_CONTEXT ++ SCALE(attestation)`, the fields encoded
/// in this order: `job_id: u64`, `genesis_hash: [u8; 32]`, `miner: AccountId (32 bytes)`,
/// `recipe_sha256: [u8; 32]`, `result_sha256: [u8; 32]`, `result_uri: Vec<u8>` (compact length prefix),
/// `checkpoint_root: [u8; 32]`, `steps: u32`, `final_train_loss_ppm: u32` (little endian).
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
	/// SHA-256 of the recipe trained (must be the job's).
	pub recipe_sha256: [u8; 32],
	/// SHA-256 of the result (the adapter).
	pub result_sha256: [u8; 32],
	/// Where owners and validators fetch the result.
	pub result_uri: Uri,
	/// Merkle root over the state hashes of the checkpoints taken during training.
	pub checkpoint_root: [u8; 32],
	/// Steps trained (must be the job's).
	pub steps: u32,
	/// Final training loss, in millionths.
	pub final_train_loss_ppm: u32,
}

/// Domain separation of attestation signatures from any other use of a worker key.
pub const ATTESTATION_CONTEXT: &[u8] = b"molting/attestation/v2";

/// A delivered result, as stored.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub struct Delivery<BlockNumber> {
	/// The result blob.
	pub result: ContentRef,
	/// Merkle root over the checkpoint state hashes.
	pub checkpoint_root: [u8; 32],
	/// Final training loss, in millionths.
	pub final_train_loss_ppm: u32,
	/// When it was submitted.
	pub submitted_at: BlockNumber,
}

/// How a judge rules on a result.
#[derive(
	Encode, Decode, DecodeWithMemTracking, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
)]
pub enum Verdict {
	/// The result is good: the miner is paid.
	Accept,
	/// The result is bad or fake: the owner is refunded, the miner's collateral slashed.
	Reject,
}

/// Where one miner's claim on a job stands.
#[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub enum ClaimState<BlockNumber> {
	/// Claimed; training.
	Working,
	/// Delivered; the judge has until `review_until`, after which `on_silence` applies.
	Submitted { delivery: Delivery<BlockNumber>, review_until: BlockNumber, on_silence: Verdict },
	/// The owner rejected it; the arbiter decides.
	Disputed { delivery: Delivery<BlockNumber> },
	/// Accepted and paid.
	Paid { delivery: Delivery<BlockNumber> },
	/// Rejected: owner refunded, collateral slashed.
	Rejected { delivery: Delivery<BlockNumber> },
	/// Nothing delivered by the deadline: owner refunded, part of the collateral slashed.
	Expired,
}

impl<B> ClaimState<B> {
	/// Settled for good: nothing of this claim is on hold any more.
	pub fn is_terminal(&self) -> bool {
		matches!(self, ClaimState::Paid { .. } | ClaimState::Rejected { .. } | ClaimState::Expired)
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
	pub state: ClaimState<BlockNumber>,
}

/// Where a job stands.
#[derive(Encode, Decode, Clone, Copy, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
pub enum JobStatus {
	/// Live: claims may come in (until `claim_by`), results are awaited or judged.
	Open,
	/// Every claim settled and the rest of the escrow refunded.
	Finished,
	/// Cancelled by the owner before any claim; fully refunded.
	Cancelled,
}

/// A job as stored.
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
	/// What one accepted result earns (budget / replication, before the protocol fee).
	pub reward_per_result: Balance,
	/// The part of the budget still on hold for this job.
	pub escrow: Balance,
	/// Its deadlines.
	pub deadlines: Deadlines<BlockNumber>,
	/// When it was posted.
	pub posted_at: BlockNumber,
	/// Where it stands.
	pub status: JobStatus,
	/// The claims, in the order they were made.
	pub claims: BoundedVec<Claim<AccountId, Balance, BlockNumber>, MaxClaims>,
}
