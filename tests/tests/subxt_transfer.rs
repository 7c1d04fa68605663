//! subxt (code generated from the runtime's metadata) against a real dev node: Alice pays
//! Bob, the transfer is finalised, and every planck is accounted for: Alice pays the
//! amount plus the fee, Bob receives the amount, the treasury receives the fee, and the
//! total issuance does not move.

use molting_e2e::DevNode;
use subxt::{utils::AccountId32, OnlineClient, PolkadotConfig};
use subxt_signer::sr25519::dev;

#[subxt::subxt(runtime_metadata_path = "metadata/molting.scale")]
mod molting {}

type Client = OnlineClient<PolkadotConfig>;

/// 1 MOLT in planck (12 decimals).
const MOLT: u128 = 1_000_000_000_000;

struct Balances {
	alice: u128,
	bob: u128,
	treasury: u128,
	issuance: u128,
}

async fn free_balance(api: &Client, block: u64, who: &AccountId32) -> u128 {
	let at = api.at_block(block).await.expect("block exists");
	let account = at
		.storage()
		.entry(molting::storage().system().account())
		.expect("System.Account is in the metadata")
		.fetch((who.clone(),))
		.await
		.expect("account fetched")
		.decode()
		.expect("account decodes");
	account.data.free
}

async fn balances_at(api: &Client, block: u64, treasury: &AccountId32) -> Balances {
	let at = api.at_block(block).await.expect("block exists");
	let issuance = at
		.storage()
		.entry(molting::storage().balances().total_issuance())
		.expect("Balances.TotalIssuance is in the metadata")
		.fetch(())
		.await
		.expect("issuance fetched")
		.decode()
		.expect("issuance decodes");
	Balances {
		alice: free_balance(api, block, &dev::alice().public_key().into()).await,
		bob: free_balance(api, block, &dev::bob().public_key().into()).await,
		treasury: free_balance(api, block, treasury).await,
		issuance,
	}
}

/// The treasury account: `PalletId(*b"mlt/trsy")` as an account ("modl" + id, zero-padded).
fn treasury_account() -> AccountId32 {
	let mut raw = [0u8; 32];
	raw[..4].copy_from_slice(b"modl");
	raw[4..12].copy_from_slice(b"mlt/trsy");
	AccountId32(raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_pays_bob_and_the_fee_goes_to_the_treasury() {
	let node = DevNode::start(1000);
	let api = Client::from_insecure_url(node.ws_url()).await.expect("subxt connects");
	let treasury = treasury_account();

	let amount = 12 * MOLT + 345_678;
	let bob: AccountId32 = dev::bob().public_key().into();
	let transfer =
		molting::tx().balances().transfer_keep_alive(subxt::utils::MultiAddress::Id(bob.clone()), amount);

	let in_block = api
		.tx()
		.await
		.expect("transactions client")
		.sign_and_submit_then_watch_default(&transfer, &dev::alice())
		.await
		.expect("transfer submitted")
		.wait_for_finalized()
		.await
		.expect("transfer finalised");
	let events = in_block.wait_for_success().await.expect("transfer succeeded");

	let moved = events
		.find_first::<molting::balances::events::Transfer>()
		.expect("a Transfer event")
		.expect("Transfer decodes");
	assert_eq!(moved.from, dev::alice().public_key().into());
	assert_eq!(moved.to, bob);
	assert_eq!(moved.amount, amount);

	let fee = events
		.find_first::<molting::transaction_payment::events::TransactionFeePaid>()
		.expect("a TransactionFeePaid event")
		.expect("TransactionFeePaid decodes");
	assert!(fee.actual_fee > 0, "a signed transfer pays a fee");
	assert_eq!(fee.tip, 0);

	// Compare the state just before and just after the block that holds the transfer.
	let block = api.at_block(in_block.block_hash()).await.expect("inclusion block").block_number();
	let before = balances_at(&api, block - 1, &treasury).await;
	let after = balances_at(&api, block, &treasury).await;

	assert_eq!(before.alice - after.alice, amount + fee.actual_fee, "Alice pays amount + fee");
	assert_eq!(after.bob - before.bob, amount, "Bob receives exactly the amount");
	assert_eq!(after.treasury - before.treasury, fee.actual_fee, "the fee goes to the treasury");
	assert_eq!(after.issuance, before.issuance, "a transfer creates and destroys nothing");
	drop(node);
}
