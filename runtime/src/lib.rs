//! # Molting runtime
//!
//! The parachain runtime of Molting: the MOLT token (12 decimals), Aura block production by
//! invulnerable and candidate collators, transaction fees paid to the treasury account, and
//! sudo for development and test networks, and the fine-tuning market: `pallet-jobs` (job
//! escrow, claims, signed results, settlement).
//!
//! Layout: `configs` holds each pallet's configuration, `apis` the runtime APIs the node and
//! clients call, `genesis_config_presets` the `development` and `local_testnet` presets.

#![cfg_attr(not(feature = "std"), no_std)]
#![recursion_limit = "256"]

// The wasm build of this crate, embedded for the node and the chain-spec tooling.
#[cfg(feature = "std")]
include!(concat!(env!("OUT_DIR"), "/wasm_binary.rs"));

extern crate alloc;

mod apis;
#[cfg(feature = "runtime-benchmarks")]
mod benchmarks;
pub mod configs;
pub mod genesis_config_presets;

use alloc::{borrow::Cow, vec::Vec};
use sp_runtime::{
	generic, impl_opaque_keys,
	traits::{BlakeTwo256, IdentifyAccount, Verify},
	MultiAddress, MultiSignature,
};
use sp_version::RuntimeVersion;

pub use configs::TreasuryAccount;
pub use sp_consensus_aura::sr25519::AuthorityId as AuraId;

/// Signature type of transactions: sr25519, ed25519 or ecdsa, as wallets produce them.
pub type Signature = MultiSignature;
/// An account: the public key behind [`Signature`].
pub type AccountId = <<Signature as Verify>::Signer as IdentifyAccount>::AccountId;
/// Balance of an account, in planck (10^-12 MOLT).
pub type Balance = u128;
/// Transaction counter of an account.
pub type Nonce = u32;
/// Block hash.
pub type Hash = sp_core::H256;
/// Block number.
pub type BlockNumber = u32;
/// How accounts are addressed in calls.
pub type Address = MultiAddress<AccountId, ()>;
/// Block header.
pub type Header = generic::Header<BlockNumber, BlakeTwo256>;
/// Block.
pub type Block = generic::Block<Header, UncheckedExtrinsic>;

/// The transaction extensions, all of them standard ones that polkadot.js, subxt and
/// wallets know, so no client needs custom type definitions to sign.
pub type TxExtension = (
	frame_system::CheckNonZeroSender<Runtime>,
	frame_system::CheckSpecVersion<Runtime>,
	frame_system::CheckTxVersion<Runtime>,
	frame_system::CheckGenesis<Runtime>,
	frame_system::CheckEra<Runtime>,
	frame_system::CheckNonce<Runtime>,
	frame_system::CheckWeight<Runtime>,
	pallet_transaction_payment::ChargeTransactionPayment<Runtime>,
);

/// An extrinsic as it arrives from outside.
pub type UncheckedExtrinsic =
	generic::UncheckedExtrinsic<Address, RuntimeCall, Signature, TxExtension>;

/// Dispatches extrinsics to the pallets.
pub type Executive = frame_executive::Executive<
	Runtime,
	Block,
	frame_system::ChainContext<Runtime>,
	Runtime,
	AllPalletsWithSystem,
>;

impl_opaque_keys! {
	/// The session keys of a collator.
	pub struct SessionKeys {
		pub aura: Aura,
	}
}

/// Types the node needs without knowing the runtime's call types.
pub mod opaque {
	use super::*;
	pub use sp_runtime::OpaqueExtrinsic as UncheckedExtrinsic;
	/// Opaque block header.
	pub type Header = generic::Header<BlockNumber, BlakeTwo256>;
	/// Opaque block.
	pub type Block = generic::Block<Header, UncheckedExtrinsic>;
}

#[sp_version::runtime_version]
pub const VERSION: RuntimeVersion = RuntimeVersion {
	spec_name: Cow::Borrowed("molting"),
	impl_name: Cow::Borrowed("molting"),
	authoring_version: 1,
	spec_version: 1,
	impl_version: 0,
	apis: apis::RUNTIME_API_VERSIONS,
	transaction_version: 1,
	system_version: 1,
};

/// The token: MOLT, 12 decimals. Amounts on chain are in planck.
pub mod currency {
	use super::Balance;
	/// Symbol shown by wallets (chain-spec property `tokenSymbol`).
	pub const TOKEN_SYMBOL: &str = "MOLT";
	/// Decimals shown by wallets (chain-spec property `tokenDecimals`).
	pub const TOKEN_DECIMALS: u8 = 12;
	/// One MOLT.
	pub const MOLT: Balance = 1_000_000_000_000;
	/// 10^-3 MOLT.
	pub const MILLI_MOLT: Balance = MOLT / 1_000;
	/// 10^-6 MOLT.
	pub const MICRO_MOLT: Balance = MILLI_MOLT / 1_000;
	/// The smallest balance an account may hold.
	pub const EXISTENTIAL_DEPOSIT: Balance = MILLI_MOLT;
}

/// Block timing. Blocks every 6 s, one per relay-chain slot (async backing).
pub mod time {
	use super::BlockNumber;
	/// Target block time.
	pub const MILLISECS_PER_BLOCK: u64 = 6000;
	/// Aura slot duration; equals the block time.
	pub const SLOT_DURATION: u64 = MILLISECS_PER_BLOCK;
	/// Blocks per minute.
	pub const MINUTES: BlockNumber = 60_000 / (MILLISECS_PER_BLOCK as BlockNumber);
	/// Blocks per hour.
	pub const HOURS: BlockNumber = MINUTES * 60;
	/// Blocks per day.
	pub const DAYS: BlockNumber = HOURS * 24;
}

#[frame_support::runtime]
mod runtime {
	#[runtime::runtime]
	#[runtime::derive(
		RuntimeCall,
		RuntimeEvent,
		RuntimeError,
		RuntimeOrigin,
		RuntimeFreezeReason,
		RuntimeHoldReason,
		RuntimeSlashReason,
		RuntimeLockId,
		RuntimeTask,
		RuntimeViewFunction
	)]
	pub struct Runtime;

	// System support.
	#[runtime::pallet_index(0)]
	pub type System = frame_system;
	#[runtime::pallet_index(1)]
	pub type ParachainSystem = cumulus_pallet_parachain_system;
	#[runtime::pallet_index(2)]
	pub type Timestamp = pallet_timestamp;
	#[runtime::pallet_index(3)]
	pub type ParachainInfo = parachain_info;

	// Monetary.
	#[runtime::pallet_index(10)]
	pub type Balances = pallet_balances;
	#[runtime::pallet_index(11)]
	pub type TransactionPayment = pallet_transaction_payment;

	// Collators. The order matters: Authorship before Session, Aura after Session.
	#[runtime::pallet_index(20)]
	pub type Authorship = pallet_authorship;
	#[runtime::pallet_index(21)]
	pub type CollatorSelection = pallet_collator_selection;
	#[runtime::pallet_index(22)]
	pub type Session = pallet_session;
	#[runtime::pallet_index(23)]
	pub type Aura = pallet_aura;
	#[runtime::pallet_index(24)]
	pub type AuraExt = cumulus_pallet_aura_ext;

	// Utilities and governance for dev/test networks.
	#[runtime::pallet_index(30)]
	pub type Utility = pallet_utility;
	#[runtime::pallet_index(31)]
	pub type Sudo = pallet_sudo;

	// The fine-tuning market.
	#[runtime::pallet_index(40)]
	pub type Jobs = pallet_jobs;
	#[runtime::pallet_index(41)]
	pub type Contribution = pallet_contribution;
}

cumulus_pallet_parachain_system::register_validate_block! {
	Runtime = Runtime,
	BlockExecutor = cumulus_pallet_aura_ext::BlockExecutor::<Runtime, Executive>,
}
