//! Genesis presets: `development` (one collator, Alice) and `local_testnet` (Alice and Bob
//! as collators). Both endow the well-known dev accounts and make Alice sudo.

use crate::{
	configs::{PotId, TreasuryAccount},
	currency::{EXISTENTIAL_DEPOSIT, MOLT},
	AccountId, AuraId, Balance, BalancesConfig, CollatorSelectionConfig, ParachainInfoConfig,
	RuntimeGenesisConfig, SessionConfig, SessionKeys, SudoConfig,
};
use alloc::{vec, vec::Vec};
use cumulus_primitives_core::ParaId;
use frame_support::build_struct_json_patch;
use sp_genesis_builder::{PresetId, DEV_RUNTIME_PRESET, LOCAL_TESTNET_RUNTIME_PRESET};
use sp_keyring::Sr25519Keyring;
use sp_runtime::traits::AccountIdConversion;

/// The parachain id the presets use (a non-system parachain id on a local relay chain).
pub const PARA_ID: u32 = 2000;
/// What each well-known dev account starts with.
pub const DEV_ENDOWMENT: Balance = 1_000_000 * MOLT;
/// Bond a collator candidate puts up.
pub const CANDIDACY_BOND: Balance = 1_000 * MOLT;

fn molting_genesis(
	collators: Vec<(AccountId, AuraId)>,
	endowed: Vec<AccountId>,
	root: AccountId,
	id: ParaId,
) -> serde_json::Value {
	// The treasury and the collators' pot exist from genesis, so that fees paid into them
	// are never below the existential deposit (and so never burned).
	let system_accounts = [TreasuryAccount::get(), PotId::get().into_account_truncating()];
	let balances = endowed
		.into_iter()
		.map(|who| (who, DEV_ENDOWMENT))
		.chain(system_accounts.into_iter().map(|who| (who, EXISTENTIAL_DEPOSIT)))
		.collect::<Vec<_>>();

	build_struct_json_patch!(RuntimeGenesisConfig {
		balances: BalancesConfig { balances },
		parachain_info: ParachainInfoConfig { parachain_id: id },
		collator_selection: CollatorSelectionConfig {
			invulnerables: collators.iter().map(|(who, _)| who.clone()).collect(),
			candidacy_bond: CANDIDACY_BOND,
		},
		session: SessionConfig {
			keys: collators
				.into_iter()
				.map(|(who, aura)| (who.clone(), who, SessionKeys { aura }))
				.collect(),
		},
		sudo: SudoConfig { key: Some(root) },
	})
}

fn collator(key: Sr25519Keyring) -> (AccountId, AuraId) {
	(key.to_account_id(), key.public().into())
}

/// The genesis config patch of a preset, as JSON bytes; `None` for an unknown name.
pub fn get_preset(id: &PresetId) -> Option<Vec<u8>> {
	let endowed: Vec<AccountId> = Sr25519Keyring::well_known().map(|k| k.to_account_id()).collect();
	let root = Sr25519Keyring::Alice.to_account_id();
	let patch = match id.as_ref() {
		DEV_RUNTIME_PRESET => molting_genesis(
			vec![collator(Sr25519Keyring::Alice)],
			endowed,
			root,
			PARA_ID.into(),
		),
		LOCAL_TESTNET_RUNTIME_PRESET => molting_genesis(
			vec![collator(Sr25519Keyring::Alice), collator(Sr25519Keyring::Bob)],
			endowed,
			root,
			PARA_ID.into(),
		),
		_ => return None,
	};
	Some(
		serde_json::to_string(&patch)
			.expect("a JSON value always serialises; qed")
			.into_bytes(),
	)
}

/// The presets this runtime offers.
pub fn preset_names() -> Vec<PresetId> {
	vec![PresetId::from(DEV_RUNTIME_PRESET), PresetId::from(LOCAL_TESTNET_RUNTIME_PRESET)]
}
