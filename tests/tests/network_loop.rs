//! The network loop end to end, with the real binaries on loopback: `molting-node --dev`,
//! the store server (`molt-worker store serve`), the miner (`molt-worker mine`) and three
//! validators (`molt-worker validate`). Jobs are posted from JavaScript with
//! `@polkadot/api` (`examples/js/post-job.mjs`); balances and events are read with subxt.
//!
//! - a job with a hidden eval set is claimed, trained, published and attested; the owner
//!   reveals the eval set; three validators replay every segment, score the adapter,
//!   commit and reveal; the miner and the validators are paid, every planck accounted for,
//!   the market's try_state checks hold on the chain, and the owner fetches an adapter
//!   that the worker's `eval` loads and scores as the committee did;
//! - a miner SIGKILLed mid-training, and the node crashed and restarted while the miner
//!   trains, still deliver the result hash of an uninterrupted run (on another chain);
//! - a training set whose bytes do not match the recipe is never claimed, and a claimed job
//!   whose input turns bad is given up, the owner refunded at the deadline.
//! - a lazy miner (4 of 12 steps trained, the rest fabricated) is judged fraud and
//!   slashed, the owner refunded and the reporters paid; a validator that says honest work
//!   does not replay is out-voted and loses 10% of its bond; an owner that never reveals
//!   its eval set pays for the work that replays.
//! - a contest: Bob and Ferdie each train their own recipe within Alice's bounds, the
//!   ranked payout gives 2/3 of the pool to the lower hidden-eval loss; a copier (a miner
//!   process run with `--copy-from` Bob) that re-signs Bob's result as its own, and a
//!   rogue (by hand, with subxt) that republishes it under a recipe outside the bounds,
//!   are judged fraud and slashed; a validator killed after committing
//!   reveals after its restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use molting_chain::{runtime, Chain};
use molting_e2e::{free_port, fresh_dir, worker_binary, DevNode, Proc};
use subxt::utils::AccountId32;
use subxt_signer::sr25519::dev;

const MOLT: u128 = 1_000_000_000_000;
const BLOCK_MS: u64 = 500;

fn repo() -> PathBuf {
	Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repo").to_path_buf()
}

fn worker(args: &[&str]) -> Command {
	let mut c = Command::new(worker_binary());
	c.args(args);
	c
}

/// Runs `molt-worker args` to completion; its stdout, or a panic with its stderr.
fn worker_output(args: &[&str]) -> String {
	let out = worker(args).output().expect("molt-worker runs");
	assert!(out.status.success(), "molt-worker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
	String::from_utf8(out.stdout).expect("utf-8")
}

struct Store {
	_proc: Proc,
	url: String,
}

fn start_store(dir: &Path) -> Store {
	let port = free_port();
	let mut proc = Proc::start(
		"store",
		worker(&["store", "serve", "--dir", dir.join("blobs").to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")]),
		dir.join("store.log"),
	);
	proc.wait_for_log("serving", Duration::from_secs(30));
	Store { _proc: proc, url: format!("http://127.0.0.1:{port}") }
}

/// A keystore for //Bob (a fresh worker key).
fn bob_keystore(dir: &Path) -> PathBuf {
	let ks = dir.join("bob-keys");
	worker_output(&["keys", "new", "--keystore", ks.to_str().unwrap(), "--account", "//Bob"]);
	ks
}

fn start_miner(ws: &str, keystore: &Path, store: &str, log: PathBuf, extra: &[&str]) -> Proc {
	let mut args = vec!["mine", "--node", ws, "--keystore", keystore.to_str().unwrap(), "--store", store];
	args.extend_from_slice(extra);
	let mut c = worker(&args);
	c.env("RUST_LOG", "info");
	Proc::start("miner", c, log)
}

/// `molt-worker recipe SPEC [--store URL] --json`: (sha256, uri, steps, checkpoint interval, recipe).
fn recipe(spec: &Path, store: Option<&str>) -> (String, Option<String>, u64, u64, serde_json::Value) {
	let mut args = vec!["recipe", spec.to_str().unwrap(), "--json"];
	if let Some(s) = store {
		args.extend(["--store", s]);
	}
	let v: serde_json::Value = serde_json::from_str(&worker_output(&args)).expect("recipe --json prints JSON");
	(
		v["sha256"].as_str().unwrap().to_string(),
		v["uri"].as_str().map(str::to_string),
		v["steps"].as_u64().unwrap(),
		v["checkpoint_interval"].as_u64().unwrap(),
		v["recipe"].clone(),
	)
}

/// Posts a job with `examples/js/post-job.mjs`; returns its JSON lines.
fn post_js(node: &DevNode, sha: &str, uri: &str, steps: u64, interval: u64, budget: &str, extra: &[&str]) -> Vec<serde_json::Value> {
	let script = repo().join("examples/js/post-job.mjs");
	let out = Command::new("node")
		.arg(&script)
		.args(["--node", &node.ws_url(), "--account", "//Alice", "--recipe-sha256", sha, "--recipe-uri", uri])
		.args(["--steps", &steps.to_string(), "--checkpoint-interval", &interval.to_string(), "--budget", budget])
		.args(extra)
		.output()
		.expect("node runs examples/js/post-job.mjs");
	assert!(out.status.success(), "post-job.mjs failed: {}", String::from_utf8_lossy(&out.stderr));
	String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn event<'a>(lines: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
	lines.iter().find(|l| l["event"] == name).unwrap_or_else(|| panic!("no `{name}` line in {lines:?}"))
}

async fn job(chain: &Chain, id: u64) -> molting_chain::Job {
	chain.job(id).await.expect("the node answers").expect("the job exists")
}

fn treasury() -> AccountId32 {
	let mut raw = [0u8; 32];
	raw[..12].copy_from_slice(b"modlmlt/trsy");
	AccountId32(raw)
}

struct Account {
	free: u128,
	reserved: u128,
}

async fn account(chain: &Chain, who: &AccountId32, block: u64) -> Account {
	let at = chain.api.at_block(block).await.expect("block");
	let v = at
		.storage()
		.entry(runtime::storage().system().account())
		.expect("System.Account")
		.fetch((who.clone(),))
		.await
		.expect("fetched")
		.decode()
		.expect("decodes");
	Account { free: v.data.free, reserved: v.data.reserved }
}

async fn issuance(chain: &Chain, block: u64) -> u128 {
	let at = chain.api.at_block(block).await.expect("block");
	at.storage()
		.entry(runtime::storage().balances().total_issuance())
		.expect("TotalIssuance")
		.fetch(())
		.await
		.expect("fetched")
		.decode()
		.expect("decodes")
}

/// Transaction fees `who` paid in blocks `from..=to`.
async fn fees_paid(chain: &Chain, who: &AccountId32, from: u64, to: u64) -> u128 {
	let mut sum = 0;
	for n in from..=to {
		let at = chain.api.at_block(n).await.expect("block");
		let events = at.events().fetch().await.expect("events");
		for e in events.find::<runtime::transaction_payment::events::TransactionFeePaid>().flatten() {
			if &e.who == who {
				sum += e.actual_fee;
			}
		}
	}
	sum
}

/// A miner's directory for job `id` (`<keystore>/data/chains/<genesis prefix>/jobs/<id>`;
/// every dev chain has the same genesis).
fn job_dir(keystore: &Path, id: u64) -> PathBuf {
	let chains = keystore.join("data/chains");
	let chain = std::fs::read_dir(&chains).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).map(|e| e.path());
	chain.unwrap_or_else(|| chains.join("unknown")).join("jobs").join(id.to_string())
}

fn tiny_job(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
	std::fs::create_dir_all(dir).unwrap();
	molting_engine::testing::write_tiny_job(dir, edit)
}

/// A keystore for `//Name` (a fresh hot key: a miner's worker key, a validator's report key).
fn keystore_of(dir: &Path, name: &str) -> PathBuf {
	let ks = dir.join(format!("{}-keys", name.to_lowercase()));
	worker_output(&["keys", "new", "--keystore", ks.to_str().unwrap(), "--account", &format!("//{name}")]);
	ks
}

fn start_validator(ws: &str, keystore: &Path, log: PathBuf, extra: &[&str]) -> Proc {
	let mut args = vec!["validate", "--node", ws, "--keystore", keystore.to_str().unwrap(), "--bond", "100"];
	args.extend_from_slice(extra);
	let mut c = worker(&args);
	c.env("RUST_LOG", "info");
	Proc::start("validator", c, log)
}

/// Keeps `eval`'s salt where `molt-worker job reveal` looks for it (what `job post --eval`
/// writes); returns the commitment to post.
fn commit_eval(secrets: &Path, job_id: u64, eval: &Path, salt: [u8; 32]) -> String {
	use sha2::Digest;
	let set: [u8; 32] = sha2::Sha256::digest(std::fs::read(eval).unwrap()).into();
	std::fs::create_dir_all(secrets).unwrap();
	let secret = serde_json::json!({"path": eval, "sha256": hex::encode(set), "salt": hex::encode(salt)});
	std::fs::write(secrets.join(format!("job-{job_id}.json")), secret.to_string()).unwrap();
	hex::encode(molting_chain::eval_commitment(&set, &salt))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_posted_from_js_is_mined_judged_by_three_validators_paid_and_fetched() {
	let dir = fresh_dir("loop");
	let node = DevNode::start(BLOCK_MS);
	let store = start_store(&dir);
	let keystore = bob_keystore(&dir);
	let spec = tiny_job(&dir.join("job"), |s| s);
	let (sha, uri, steps, interval, _) = recipe(&spec, Some(&store.url));
	let chain = Chain::connect(&node.ws_url()).await.expect("subxt connects");
	let names = ["Charlie", "Dave", "Eve"];
	let pairs = [dev::charlie(), dev::dave(), dev::eve()];
	let validators: Vec<AccountId32> = pairs.iter().map(|k| AccountId32::from(k.public_key())).collect();
	let (alice, bob) = (AccountId32::from(dev::alice().public_key()), AccountId32::from(dev::bob().public_key()));
	let start = chain.finalized_number().await.unwrap();
	let (alice0, bob0, treasury0, issuance0) = (
		account(&chain, &alice, start).await,
		account(&chain, &bob, start).await,
		account(&chain, &treasury(), start).await,
		issuance(&chain, start).await,
	);
	let mut validators0 = Vec::new();
	for v in &validators {
		validators0.push(account(&chain, v, start).await);
	}

	let metrics_port = free_port().to_string();
	let mut miner = start_miner(
		&node.ws_url(),
		&keystore,
		&store.url,
		dir.join("miner.log"),
		&["--exit-after", "1", "--prometheus-port", &metrics_port],
	);
	let mut judges: Vec<Proc> = names
		.iter()
		.map(|n| start_validator(&node.ws_url(), &keystore_of(&dir, n), dir.join(format!("{n}.log")), &["--exit-after", "1"]))
		.collect();
	miner.wait_for_log("registered as a miner", Duration::from_secs(120));
	for j in &mut judges {
		j.wait_for_log("registered as a validator", Duration::from_secs(120));
	}
	// Alice's hidden eval set: the tiny persona's conversations (what it is trained on, so
	// the adapter must beat the base model on them).
	let eval_set = dir.join("job/tiny.jsonl");
	let secrets = dir.join("alice-secrets");
	let job_id = chain.api.at_current_block().await.unwrap().storage().entry(runtime::storage().jobs().next_job_id()).unwrap().fetch(()).await.unwrap().decode().unwrap();
	let commitment = commit_eval(&secrets, job_id, &eval_set, [0x5a; 32]);
	let lines = post_js(
		&node,
		&sha,
		uri.as_deref().unwrap(),
		steps,
		interval,
		"100",
		&["--wait-result", "--timeout-s", "300", "--claim-blocks", "30", "--submit-blocks", "90", "--reveal-blocks", "6", "--judge-blocks", "16", "--eval-commitment", &commitment],
	);
	let id = event(&lines, "posted")["jobId"].as_u64().unwrap();
	assert_eq!(id, job_id);
	let submitted = event(&lines, "submitted");
	assert_eq!(submitted["miner"].as_str().unwrap(), bob.to_string());
	// The miner's metrics while its result waits for the committee.
	let metrics = molting_e2e::http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").expect("the miner serves /metrics");
	for (name, value) in [
		("molting_miner_jobs_seen_total", 1),
		("molting_miner_jobs_claimed_total", 1),
		("molting_miner_jobs_delivered_total", 1),
		("molting_miner_training_steps_total", steps),
	] {
		assert!(metrics.lines().any(|l| l == format!("{name} {value}")), "`{name} {value}` in:\n{metrics}");
	}
	// Submissions close as soon as the only replica is in; then Alice reveals her eval set
	// with the worker's job CLI.
	let mut waited = 0;
	while !matches!(job(&chain, id).await.status, molting_chain::jobs::JobStatus::Judging { .. }) {
		assert!(waited < 600, "the case never opened");
		tokio::time::sleep(Duration::from_millis(100)).await;
		waited += 1;
	}
	worker_output(&[
		"job", "--node", &node.ws_url(), "reveal", &id.to_string(), "--store", &store.url, "--account", "//Alice",
		"--secrets", secrets.to_str().unwrap(),
	]);
	for j in &mut judges {
		assert!(j.wait_exit(Duration::from_secs(300)).success(), "a validator exits once it has revealed:\n{}", j.log());
		for line in ["judging", "result 0", "): replays; eval loss", "base model: eval loss", "committed to my report", "revealed my report"] {
			assert!(j.log().contains(line), "the validator logs `{line}`:\n{}", j.log());
		}
	}
	assert!(miner.wait_exit(Duration::from_secs(120)).success(), "the miner exits once its job is settled");
	for line in ["claimed", "training", "trained and published", "attestation landed", "the committee passed my result"] {
		assert!(miner.log().contains(line), "the miner logs `{line}`:\n{}", miner.log());
	}

	// The money, to the planck.
	let end = chain.finalized_number().await.unwrap();
	let (mut settled, mut to_validators) = (None, Vec::new());
	for n in start + 1..=end {
		let events = chain.api.at_block(n).await.unwrap().events().fetch().await.unwrap();
		for e in events.find::<runtime::jobs::events::ResultSettled>().flatten() {
			assert_eq!((e.job_id, &e.miner), (id, &bob));
			settled = Some(e);
		}
		for e in events.find::<runtime::contribution::events::ValidatorPaid>().flatten() {
			to_validators.push((e.validator, e.amount));
		}
	}
	let settled = settled.expect("the result was settled");
	assert!(matches!(settled.grade, molting_chain::jobs::Grade::Pass { loss_ppm: Some(_) }), "{:?}", settled.grade);
	let j = job(&chain, id).await;
	assert!(matches!(j.status, molting_chain::jobs::JobStatus::Finished { .. }), "{:?}", j.status);
	let reward = j.reward_per_result;
	assert_eq!(reward, 100 * MOLT);
	let constants = chain.api.at_current_block().await.unwrap();
	let rate = |c: runtime::runtime_types::sp_arithmetic::per_things::Perbill| u128::from(c.0);
	let fee_rate = rate(constants.constants().entry(runtime::constants().jobs().protocol_fee()).unwrap());
	let validator_rate = rate(constants.constants().entry(runtime::constants().jobs().validator_fee()).unwrap());
	let validator_fee = reward * validator_rate / 1_000_000_000;
	let fee = (reward - validator_fee) * fee_rate / 1_000_000_000;
	assert_eq!((settled.validator_fee, settled.fee, settled.paid), (validator_fee, fee, reward - validator_fee - fee));
	assert_eq!(to_validators.iter().map(|(_, a)| a).sum::<u128>(), validator_fee, "the validators' fee, all of it, to the seats");
	let deposit = constants.constants().entry(runtime::constants().jobs().miner_deposit()).unwrap();
	let bond = 100 * MOLT;
	let mut all_fees = 0;
	for (i, v) in validators.iter().enumerate() {
		let fees = fees_paid(&chain, v, start + 1, end).await;
		assert!(fees > 0, "registering, committing and revealing pay fees");
		all_fees += fees;
		let earned: u128 = to_validators.iter().filter(|(w, _)| w == v).map(|(_, a)| a).sum();
		assert!(earned > 0, "{} sat on the committee and earned a share", names[i]);
		let now = account(&chain, v, end).await;
		assert_eq!(now.free, validators0[i].free - bond - fees + earned, "{}: bond held, fees paid, share earned", names[i]);
		assert_eq!(now.reserved, validators0[i].reserved + bond, "{}: only the bond is held", names[i]);
	}
	let (alice_fees, bob_fees) = (fees_paid(&chain, &alice, start + 1, end).await, fees_paid(&chain, &bob, start + 1, end).await);
	assert!(alice_fees > 0 && bob_fees > 0, "posting, revealing, registering, claiming, submitting pay fees");
	let (alice1, bob1, treasury1) =
		(account(&chain, &alice, end).await, account(&chain, &bob, end).await, account(&chain, &treasury(), end).await);
	assert_eq!(alice1.free, alice0.free - reward - alice_fees, "Alice paid the reward and her fees, nothing else");
	assert_eq!(alice1.reserved, alice0.reserved, "no escrow left on hold");
	assert_eq!(bob1.free, bob0.free + settled.paid - deposit - bob_fees, "Bob got the reward less the fees; his deposit is held");
	assert_eq!(bob1.reserved, bob0.reserved + deposit, "only the registration deposit is held (collateral released)");
	all_fees += alice_fees + bob_fees;
	assert_eq!(treasury1.free, treasury0.free + fee + all_fees, "the treasury got the protocol fee and every tx fee");
	assert_eq!(issuance(&chain, end).await, issuance0, "nothing was minted or burned");
	assert_eq!(chain.check_market_invariants().await.unwrap(), Ok(()), "the market's try_state checks hold on the chain");

	// The owner fetches the adapter: the attested hash, and the worker's eval loads it.
	let attested = match &j.claims.0[0].state {
		molting_chain::jobs::ClaimState::Judged { delivery, .. } => hex::encode(delivery.result.sha256),
		other => panic!("the claim is judged, not {other:?}"),
	};
	assert_eq!(submitted["resultSha256"].as_str().unwrap().trim_start_matches("0x"), attested);
	let out = dir.join("fetched");
	worker_output(&["job", "--node", &node.ws_url(), "fetch", &id.to_string(), "--out", out.to_str().unwrap()]);
	let manifest = std::fs::read(out.join("result.json")).unwrap();
	assert_eq!(molting_store::sha256_hex(&manifest), attested, "the fetched result is the attested one");
	let eval: serde_json::Value = serde_json::from_str(&worker_output(&[
		"eval",
		"--spec",
		spec.to_str().unwrap(),
		"--adapter",
		out.join("adapter").to_str().unwrap(),
		"--json",
	]))
	.unwrap();
	let (base, tuned) = (eval["base"]["loss"].as_f64().unwrap(), eval["adapter"]["loss"].as_f64().unwrap());
	assert!(tuned < base, "the fetched adapter lowers the eval loss ({base} -> {tuned})");
	// The committee's consensus loss is the one the worker's own eval finds, to the ppm.
	let Some(molting_chain::jobs::Grade::Pass { loss_ppm: Some(consensus) }) = Some(settled.grade) else { unreachable!() };
	assert_eq!(u64::from(consensus), (tuned * 1e6).round() as u64, "the committee scored the adapter as `eval` does");
	drop(store);
	let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `spec` as job 0 on a fresh chain with Bob mining, `fault` applied while it trains;
/// returns the attested result hash.
async fn mined_result(store: &str, spec: &Path, dir: &Path, fault: impl Fn(&mut DevNode, &mut Proc, &dyn Fn() -> Proc)) -> String {
	let mut node = DevNode::start(BLOCK_MS);
	let keystore = bob_keystore(dir);
	let (sha, uri, steps, interval, _) = recipe(spec, Some(store));
	let log = dir.join("miner.log");
	let ws = node.ws_url();
	let restart = || start_miner(&ws, &keystore, store, log.clone(), &[]);
	let mut miner = start_miner(&node.ws_url(), &keystore, store, log.clone(), &[]);
	miner.wait_for_log("registered as a miner", Duration::from_secs(120));
	let lines = post_js(&node, &sha, uri.as_deref().unwrap(), steps, interval, "100", &["--submit-blocks", "600"]);
	let id = event(&lines, "posted")["jobId"].as_u64().unwrap();
	assert_eq!(id, 0);
	miner.wait_for_log("claimed", Duration::from_secs(120));
	fault(&mut node, &mut miner, &restart);
	miner.wait_for_log("attestation landed", Duration::from_secs(300));
	let chain = Chain::connect(&node.ws_url()).await.expect("subxt connects");
	let j = job(&chain, id).await;
	match &j.claims.0[0].state {
		molting_chain::jobs::ClaimState::Submitted { delivery } | molting_chain::jobs::ClaimState::Judged { delivery, .. } => {
			hex::encode(delivery.result.sha256)
		},
		other => panic!("the claim is submitted, not {other:?}"),
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_killed_mid_training_and_a_crashed_node_still_deliver_the_uninterrupted_result() {
	let dir = fresh_dir("faults");
	let store = start_store(&dir);
	// Long enough to kill in the middle (tens of seconds; a checkpoint every 50 steps).
	let spec = tiny_job(&dir.join("job"), |s| {
		s.replace("steps = 12", "steps = 1000").replace("checkpoint_every = 4", "checkpoint_every = 50")
	});
	let clean = mined_result(&store.url, &spec, &dir.join("a"), |_, _, _| {}).await;
	let keystore_b = dir.join("b/bob-keys");
	let faulty = mined_result(&store.url, &spec, &dir.join("b"), |node, miner, restart| {
		// kill -9 once a few checkpoints are on disk, then restart the miner.
		let checkpoints = || job_dir(&keystore_b, 0).join("run/checkpoints");
		wait_for(|| std::fs::read_dir(checkpoints()).map(|d| d.count() >= 4).unwrap_or(false), "4 checkpoints");
		miner.kill9();
		*miner = restart();
		miner.wait_for_log("resuming from the last checkpoint", Duration::from_secs(120));
		// The node crashes while the miner trains, and comes back.
		node.crash_and_restart(Duration::from_secs(3));
	})
	.await;
	assert_eq!(faulty, clean, "the interrupted run attests the uninterrupted run's result");
	drop(store);
	let _ = std::fs::remove_dir_all(&dir);
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
	let start = std::time::Instant::now();
	while !f() {
		assert!(start.elapsed() < Duration::from_secs(180), "timed out waiting for {what}");
		std::thread::sleep(Duration::from_millis(100));
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_training_bytes_are_never_claimed_and_a_claimed_job_gone_bad_is_given_up_and_refunded() {
	let dir = fresh_dir("badinput");
	let node = DevNode::start(BLOCK_MS);
	let store = start_store(&dir);
	let keystore = bob_keystore(&dir);
	let chain = Chain::connect(&node.ws_url()).await.expect("subxt connects");
	// The recipe names its inputs by file:// URI (no store), and is itself a file.
	let post_file_recipe = |spec: &Path, budget: &str, extra: &[&str]| -> (u64, PathBuf) {
		let (sha, _, steps, interval, recipe) = recipe(spec, None);
		let path = spec.with_extension("recipe.json");
		std::fs::write(&path, worker_output(&["recipe", spec.to_str().unwrap()]).trim_end()).unwrap();
		assert_eq!(molting_store::sha256_hex(&std::fs::read(&path).unwrap()), sha);
		let train = PathBuf::from(recipe["data"]["train"]["uri"].as_str().unwrap().trim_start_matches("file://"));
		let lines = post_js(&node, &sha, &format!("file://{}", path.display()), steps, interval, budget, extra);
		(event(&lines, "posted")["jobId"].as_u64().unwrap(), train)
	};
	let mut miner = start_miner(&node.ws_url(), &keystore, &store.url, dir.join("miner.log"), &["--allow-file-uris"]);
	miner.wait_for_log("registered as a miner", Duration::from_secs(120));

	// 1. The training set changed after the recipe was written: never claimed.
	let spec = tiny_job(&dir.join("bad"), |s| s);
	let (sha, _, steps, interval, recipe_json) = recipe(&spec, None);
	let recipe_path = dir.join("bad/recipe.json");
	std::fs::write(&recipe_path, worker_output(&["recipe", spec.to_str().unwrap()]).trim_end()).unwrap();
	let train = PathBuf::from(recipe_json["data"]["train"]["uri"].as_str().unwrap().trim_start_matches("file://"));
	let mut text = std::fs::read_to_string(&train).unwrap();
	text = text.replacen("lighthouse", "lightship", 1);
	std::fs::write(&train, text).unwrap();
	let lines = post_js(&node, &sha, &format!("file://{}", recipe_path.display()), steps, interval, "50", &[]);
	let bad = event(&lines, "posted")["jobId"].as_u64().unwrap();
	miner.wait_for_log(&format!("job={bad}"), Duration::from_secs(60));
	miner.wait_for_log("not claiming", Duration::from_secs(60));
	assert!(miner.log().contains("hashes to"), "the reason names the hash mismatch:\n{}", miner.log());
	assert!(job(&chain, bad).await.claims.0.is_empty(), "nobody claimed the job with bad bytes");

	// 2. Claimed, then the miner dies; on restart its input no longer matches: it gives up,
	//    and the owner is refunded at the deadline.
	let spec = tiny_job(&dir.join("good"), |s| {
		s.replace("steps = 12", "steps = 1000").replace("checkpoint_every = 4", "checkpoint_every = 50")
	});
	let alice = AccountId32::from(dev::alice().public_key());
	let held0 = account(&chain, &alice, chain.finalized_number().await.unwrap()).await.reserved;
	let (id, train) = post_file_recipe(&spec, "70", &["--claim-blocks", "40", "--submit-blocks", "200"]);
	miner.wait_for_log("claimed", Duration::from_secs(120));
	let checkpoints = || job_dir(&keystore, id).join("run/checkpoints");
	wait_for(|| std::fs::read_dir(checkpoints()).map(|d| d.count() >= 2).unwrap_or(false), "2 checkpoints");
	miner.kill9();
	let _ = std::fs::remove_dir_all(keystore.join("data/cache"));
	let mut text = std::fs::read_to_string(&train).unwrap();
	text = text.replacen("lighthouse", "lightship", 1);
	std::fs::write(&train, text).unwrap();
	let mut miner = start_miner(&node.ws_url(), &keystore, &store.url, dir.join("miner2.log"), &["--allow-file-uris"]);
	miner.wait_for_log("found my claim on chain", Duration::from_secs(120));
	miner.wait_for_log("giving up this job", Duration::from_secs(120));
	assert!(miner.log().contains("hashes to"), "{}", miner.log());
	let j = job(&chain, id).await;
	let submit_by = u64::from(j.deadlines.submit_by);
	wait_for(|| node.finalized_number().is_some_and(|n| n > submit_by + 2), "the deadline to pass");
	let j = job(&chain, id).await;
	assert!(matches!(j.claims.0[0].state, molting_chain::jobs::ClaimState::Expired), "{:?}", j.claims.0[0].state);
	assert!(matches!(j.status, molting_chain::jobs::JobStatus::Finished { .. }), "{:?}", j.status);
	assert_eq!(j.escrow, 0);
	let held = account(&chain, &alice, chain.finalized_number().await.unwrap()).await.reserved;
	// The first job (never claimed) holds its 50 MOLT until its own deadline, as before.
	assert_eq!(held, held0, "Alice's escrow for the given-up job is released; only the first job's is held");
	drop(store);
	let _ = std::fs::remove_dir_all(&dir);
}

/// Validators' processes: Charlie and Dave honest, Eve reporting every replay as failed.
fn start_committee(node: &DevNode, dir: &Path) -> Vec<Proc> {
	let mut procs: Vec<Proc> = [("Charlie", false), ("Dave", false), ("Eve", true)]
		.iter()
		.map(|(n, lie)| {
			let extra: &[&str] = if *lie { &["--report-fail"] } else { &[] };
			start_validator(&node.ws_url(), &keystore_of(dir, n), dir.join(format!("{n}.log")), extra)
		})
		.collect();
	for p in &mut procs {
		p.wait_for_log("registered as a validator", Duration::from_secs(120));
	}
	procs
}

/// The `ResultSettled` of job `id` and the validators' rewards and penalties in blocks
/// `from..=to`.
async fn ruling(chain: &Chain, id: u64, from: u64, to: u64) -> (runtime::jobs::events::ResultSettled, u128, Vec<(AccountId32, u128)>) {
	let (mut settled, mut paid, mut penalised) = (None, 0, Vec::new());
	for n in from..=to {
		let events = chain.api.at_block(n).await.unwrap().events().fetch().await.unwrap();
		for e in events.find::<runtime::jobs::events::ResultSettled>().flatten() {
			if e.job_id == id {
				settled = Some(e);
			}
		}
		for e in events.find::<runtime::contribution::events::ValidatorPaid>().flatten() {
			if e.job_id == id {
				paid += e.amount;
			}
		}
		for e in events.find::<runtime::contribution::events::ValidatorPenalised>().flatten() {
			if e.job_id == id {
				penalised.push((e.validator, e.slashed));
			}
		}
	}
	(settled.expect("the result was settled"), paid, penalised)
}

async fn wait_finished(chain: &Chain, id: u64) {
	for _ in 0..3000 {
		if matches!(job(chain, id).await.status, molting_chain::jobs::JobStatus::Finished { .. }) {
			return;
		}
		tokio::time::sleep(Duration::from_millis(100)).await;
	}
	panic!("job {id} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_miner_is_slashed_a_lying_validator_penalised_and_withholding_the_eval_refunds_nothing() {
	let dir = fresh_dir("judges");
	let node = DevNode::start(BLOCK_MS);
	let store = start_store(&dir);
	let chain = Chain::connect(&node.ws_url()).await.expect("subxt connects");
	let _committee = start_committee(&node, &dir);
	let spec = tiny_job(&dir.join("job"), |s| s);
	let (sha, uri, steps, interval, _) = recipe(&spec, Some(&store.url));
	let alice = AccountId32::from(dev::alice().public_key());
	let eve = AccountId32::from(dev::eve().public_key());
	let windows = ["--claim-blocks", "30", "--submit-blocks", "90", "--reveal-blocks", "6", "--judge-blocks", "16"];

	// 1. Bob trains 4 of the 12 steps and fabricates the last two checkpoints.
	let start = chain.finalized_number().await.unwrap();
	let issuance0 = issuance(&chain, start).await;
	let alice0 = account(&chain, &alice, start).await;
	let mut lazy = start_miner(&node.ws_url(), &bob_keystore(&dir), &store.url, dir.join("lazy.log"), &["--fake-after", "4", "--exit-after", "1"]);
	lazy.wait_for_log("registered as a miner", Duration::from_secs(120));
	let secrets = dir.join("alice-secrets");
	let commitment = commit_eval(&secrets, 0, &dir.join("job/tiny.jsonl"), [7; 32]);
	let mut args = vec!["--wait-result", "--timeout-s", "300", "--eval-commitment", &commitment];
	args.extend(windows);
	let lines = post_js(&node, &sha, uri.as_deref().unwrap(), steps, interval, "100", &args);
	assert_eq!(event(&lines, "posted")["jobId"].as_u64(), Some(0));
	while !matches!(job(&chain, 0).await.status, molting_chain::jobs::JobStatus::Judging { .. }) {
		tokio::time::sleep(Duration::from_millis(100)).await;
	}
	worker_output(&[
		"job", "--node", &node.ws_url(), "reveal", "0", "--store", &store.url, "--account", "//Alice",
		"--secrets", secrets.to_str().unwrap(),
	]);
	wait_finished(&chain, 0).await;
	assert!(lazy.wait_exit(Duration::from_secs(120)).success());
	assert!(lazy.log().contains("fabricating the checkpoints after step 4"), "{}", lazy.log());
	assert!(lazy.log().contains("judged my result fraud"), "{}", lazy.log());
	let end = chain.finalized_number().await.unwrap();
	let (settled, to_validators, penalised) = ruling(&chain, 0, start + 1, end).await;
	assert!(matches!(settled.grade, molting_chain::jobs::Grade::Fraud), "{:?}", settled.grade);
	let collateral = 10 * MOLT; // 10% of the 100 MOLT reward
	assert_eq!((settled.paid, settled.refunded, settled.slashed), (0, 100 * MOLT, collateral));
	assert_eq!(to_validators, collateral / 2, "half the slash to the seats that reported the fraud");
	assert!(penalised.is_empty(), "every seat said fail: nobody against the majority");
	let log = std::fs::read_to_string(dir.join("Charlie.log")).unwrap();
	assert!(log.contains("segment") && log.contains("replays to"), "Charlie names the segment that does not replay:\n{log}");
	let alice_fees = fees_paid(&chain, &alice, start + 1, end).await;
	assert_eq!(account(&chain, &alice, end).await.free, alice0.free - alice_fees, "Alice is refunded in full");
	assert_eq!(issuance(&chain, end).await, issuance0 - collateral / 2, "the other half of the slash is burned");

	// 2. Ferdie trains honestly; Alice never reveals her eval set.
	let start = end;
	let (alice0, issuance0) = (account(&chain, &alice, start).await, issuance(&chain, start).await);
	let eve_bond = chain.validator(&eve).await.unwrap().unwrap().bond;
	let mut honest = start_miner(&node.ws_url(), &keystore_of(&dir, "Ferdie"), &store.url, dir.join("honest.log"), &["--exit-after", "1"]);
	honest.wait_for_log("registered as a miner", Duration::from_secs(120));
	let mut args = vec!["--wait-result", "--timeout-s", "300", "--eval-commitment", "11".repeat(32).leak()];
	args.extend(windows);
	let lines = post_js(&node, &sha, uri.as_deref().unwrap(), steps, interval, "100", &args);
	let id = event(&lines, "posted")["jobId"].as_u64().unwrap();
	wait_finished(&chain, id).await;
	assert!(honest.wait_exit(Duration::from_secs(120)).success());
	let end = chain.finalized_number().await.unwrap();
	let (settled, to_validators, penalised) = ruling(&chain, id, start + 1, end).await;
	assert!(matches!(settled.grade, molting_chain::jobs::Grade::Pass { loss_ppm: None }), "judged on replay alone: {:?}", settled.grade);
	assert_eq!(settled.refunded, 0);
	let alice_fees = fees_paid(&chain, &alice, start + 1, end).await;
	assert_eq!(account(&chain, &alice, end).await.free, alice0.free - 100 * MOLT - alice_fees, "withholding the eval set wins nothing back");
	assert_eq!(to_validators, settled.validator_fee, "the validators' fee to the honest seats");
	// Eve said the honest training does not replay: against the majority, 10% of her bond.
	assert_eq!(penalised, vec![(eve.clone(), eve_bond / 10)]);
	assert_eq!(chain.validator(&eve).await.unwrap().unwrap().bond, eve_bond - eve_bond / 10);
	assert_eq!(issuance(&chain, end).await, issuance0 - eve_bond / 10, "Eve's penalty is burned");
	assert_eq!(chain.check_market_invariants().await.unwrap(), Ok(()), "the market's try_state checks hold on the chain");
	drop(store);
	let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `who`'s claim on job `id` is delivered; its delivery.
async fn delivery_of(chain: &Chain, id: u64, who: &AccountId32) -> molting_chain::jobs::Delivery<u32> {
	for _ in 0..3000 {
		let j = job(chain, id).await;
		if let Some(molting_chain::jobs::ClaimState::Submitted { delivery }) = j.claims.0.into_iter().find(|c| &c.miner == who).map(|c| c.state) {
			return delivery;
		}
		tokio::time::sleep(Duration::from_millis(100)).await;
	}
	panic!("{who} never delivered job {id}");
}

/// Alice sends `who` 1,000 MOLT (a cheat's account, which the dev chain does not endow).
async fn fund(chain: &Chain, who: &AccountId32) {
	let fund = runtime::tx().balances().transfer_keep_alive(subxt::utils::MultiAddress::Id(who.clone()), 1_000 * MOLT);
	chain.submit("Balances.transfer_keep_alive", &fund, &dev::alice()).await.expect("Alice funds the cheat");
}

/// A cheater outside the worker: funded by Alice, registered with `caps` (its worker key's
/// proof of possession made properly), it claims a replica of job `id` by hand.
struct Cheat {
	account: subxt_signer::sr25519::Keypair,
	worker: subxt_signer::sr25519::Keypair,
}

impl Cheat {
	async fn join(chain: &Chain, name: &str, caps: molting_chain::jobs::Capabilities) -> Cheat {
		let account = molting_chain::keystore::parse(&format!("//{name}")).unwrap();
		let worker = molting_chain::keystore::parse(&format!("//{name}//worker")).unwrap();
		let me = AccountId32::from(account.public_key());
		fund(chain, &me).await;
		let proof = molting_chain::key_proof(molting_chain::WORKER_KEY_CONTEXT, &worker, &me.0);
		let register = runtime::tx().jobs().register_miner(worker.public_key().0, proof, caps);
		chain.submit("Jobs.register_miner", &register, &account).await.expect("the cheat registers");
		Cheat { account, worker }
	}

	fn id(&self) -> AccountId32 {
		AccountId32::from(self.account.public_key())
	}

	/// Attests, as its own, `from`'s training record with the given recipe and result.
	async fn submit(&self, chain: &Chain, id: u64, from: &molting_chain::jobs::Delivery<u32>, recipe: [u8; 32], result: [u8; 32], uri: &str) {
		let a = molting_chain::Attestation {
			job_id: id,
			genesis_hash: chain.genesis_hash(),
			miner: self.id().0,
			recipe_sha256: recipe,
			result_sha256: result,
			result_uri: uri.as_bytes().to_vec(),
			checkpoint_root: from.checkpoint_root,
			steps: from.steps,
			checkpoint_interval: from.checkpoint_interval,
			final_train_loss_ppm: from.final_train_loss_ppm,
		};
		let signature = self.worker.sign(&molting_chain::attestation_message(&a));
		let attestation = molting_chain::jobs::Attestation {
			job_id: id,
			genesis_hash: subxt::utils::H256(a.genesis_hash),
			miner: self.id(),
			recipe_sha256: a.recipe_sha256,
			result_sha256: a.result_sha256,
			result_uri: molting_chain::bounded(a.result_uri.clone()),
			checkpoint_root: a.checkpoint_root,
			steps: a.steps,
			checkpoint_interval: a.checkpoint_interval,
			final_train_loss_ppm: a.final_train_loss_ppm,
		};
		let submit = runtime::tx().jobs().submit_result(id, attestation, signature.0);
		chain.submit("Jobs.submit_result", &submit, &self.account).await.expect("the attestation is accepted for judging");
	}
}

/// A store blob's bytes, by its `http://host:port/path` URI.
fn fetch_text(uri: &str) -> String {
	let (addr, path) = uri.strip_prefix("http://").and_then(|r| r.split_once('/')).expect("an http:// URI");
	molting_e2e::http_get(addr, &format!("/{path}")).unwrap_or_else(|| panic!("the store serves {uri}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contest_is_won_by_the_better_hidden_eval_loss_and_a_copier_is_caught() {
	use molting_chain::jobs::{ClaimState, Grade};
	let dir = fresh_dir("contest");
	let node = DevNode::start(BLOCK_MS);
	let store = start_store(&dir);
	let chain = Chain::connect(&node.ws_url()).await.expect("subxt connects");
	let names = ["Charlie", "Dave", "Eve"];
	let keystores: Vec<PathBuf> = names.iter().map(|n| keystore_of(&dir, n)).collect();
	let committee: Vec<Proc> =
		names.iter().zip(&keystores).map(|(n, ks)| start_validator(&node.ws_url(), ks, dir.join(format!("{n}.log")), &[])).collect();
	// Alice's contest: the tiny job's inputs, and within these limits each miner writes its
	// own recipe.
	let spec = tiny_job(&dir.join("job"), |s| s);
	let limits = dir.join("limits.json");
	std::fs::write(
		&limits,
		serde_json::json!({
			"ranks": [2, 4], "targets": ["q", "k", "v", "o", "gate"], "lr_min": 0.0001, "lr_max": 0.02,
			"max_steps": 12, "max_checkpoint_every": 4, "max_seq_len": 256, "max_tokens_per_step": 1024, "precision": "fp32"
		})
		.to_string(),
	)
	.unwrap();
	// Bob a bolder learning rate than suggested, Ferdie a smaller adapter and a timid rate.
	let choice = |name: &str, v: serde_json::Value| {
		let p = dir.join(format!("{name}-choice.json"));
		std::fs::write(&p, v.to_string()).unwrap();
		p
	};
	let bob_choice = choice("bob", serde_json::json!({"train": {"lr": 0.015, "seed": 5}}));
	let ferdie_choice = choice("ferdie", serde_json::json!({"lora": {"rank": 2}, "train": {"lr": 0.002}}));
	let (alice, bob, ferdie) = (
		AccountId32::from(dev::alice().public_key()),
		AccountId32::from(dev::bob().public_key()),
		AccountId32::from(dev::ferdie().public_key()),
	);
	// The copier: a miner process that trains nothing and attests Bob's delivery as its own.
	let copier_id = AccountId32::from(molting_chain::keystore::parse("//Copier").unwrap().public_key());
	fund(&chain, &copier_id).await;
	let miners = [
		start_miner(&node.ws_url(), &bob_keystore(&dir), &store.url, dir.join("bob.log"), &["--exit-after", "1", "--contest-choice", bob_choice.to_str().unwrap()]),
		start_miner(&node.ws_url(), &keystore_of(&dir, "Ferdie"), &store.url, dir.join("ferdie.log"), &["--exit-after", "1", "--contest-choice", ferdie_choice.to_str().unwrap()]),
		start_miner(&node.ws_url(), &keystore_of(&dir, "Copier"), &store.url, dir.join("copier.log"), &["--exit-after", "1", "--copy-from", &bob.to_string()]),
	];
	let mut miners = miners;
	for p in miners.iter_mut() {
		p.wait_for_log("registered as a miner", Duration::from_secs(120));
	}
	let mut committee = committee;
	for p in committee.iter_mut() {
		p.wait_for_log("registered as a validator", Duration::from_secs(120));
	}
	// A cheat by hand, registered like Bob (his backend class), claiming a replica and
	// training nothing: the rogue republishes Bob's result under a recipe outside the bounds
	// (rank 8: the bounds allow 2 and 4).
	let rogue = Cheat::join(&chain, "Rogue", chain.miner(&bob).await.unwrap().expect("Bob is registered").capabilities).await;
	let rogue_id = rogue.id();

	let start = chain.finalized_number().await.unwrap();
	let issuance0 = issuance(&chain, start).await;
	let mut before = Vec::new();
	for who in [&alice, &bob, &ferdie, &copier_id, &rogue_id] {
		before.push(account(&chain, who, start).await);
	}
	let secrets = dir.join("alice-secrets");
	let posted = worker_output(&[
		"job", "--node", &node.ws_url(), "post", "--recipe", spec.to_str().unwrap(), "--budget", "400", "--store", &store.url,
		"--account", "//Alice", "--replication", "4", "--claim-blocks", "30", "--submit-blocks", "90", "--reveal-blocks", "6",
		"--judge-blocks", "16", "--eval", dir.join("job/tiny.jsonl").to_str().unwrap(), "--secrets", secrets.to_str().unwrap(),
		"--min-improvement", "0", "--ranked", "--contest", limits.to_str().unwrap(),
	]);
	let id: u64 = posted.trim().parse().expect("job post prints the job's id");
	let j = job(&chain, id).await;
	assert!(
		matches!(j.spec.work, molting_chain::jobs::Work::Contest { max_steps: 12, max_checkpoint_interval: 4, .. }),
		"{:?}",
		j.spec.work
	);
	chain.submit("Jobs.claim_job", &runtime::tx().jobs().claim_job(id), &rogue.account).await.expect("the rogue claims");
	let original = delivery_of(&chain, id, &bob).await;
	let bob_uri = String::from_utf8(original.result.uri.0.clone()).unwrap();
	let copy = delivery_of(&chain, id, &copier_id).await;
	assert_eq!(
		(copy.result.sha256, copy.recipe_sha256, copy.checkpoint_root),
		(original.result.sha256, original.recipe_sha256, original.checkpoint_root),
		"the copier attests Bob's result, recipe and checkpoints"
	);
	// The rogue: Bob's recipe with rank 8, Bob's manifest naming it, Bob's training record.
	let mut manifest: serde_json::Value = serde_json::from_str(&fetch_text(&bob_uri)).unwrap();
	let bob_recipe = fetch_text(manifest["recipe_uri"].as_str().expect("a contest's manifest names its recipe"));
	let mut recipe = molting_engine::recipe::Recipe::parse(bob_recipe.as_bytes(), "Bob's recipe").unwrap();
	recipe.lora.rank = 8;
	let publisher = molting_store::Publisher::new(&store.url, None).unwrap();
	let (recipe_sha, recipe_uri) = publisher.put(recipe.to_canonical()).await.unwrap();
	manifest["recipe"] = recipe_sha.clone().into();
	manifest["recipe_uri"] = recipe_uri.into();
	let (result_sha, result_uri) = publisher.put(molting_engine::recipe::canonical_json(&manifest)).await.unwrap();
	let hex32 = |h: &str| -> [u8; 32] { hex::decode(h).unwrap().try_into().unwrap() };
	rogue.submit(&chain, id, &original, hex32(&recipe_sha), hex32(&result_sha), &result_uri).await;
	// Two recipes, as chosen, and both within the bounds.
	let ferdie_delivery = delivery_of(&chain, id, &ferdie).await;
	assert_ne!(ferdie_delivery.recipe_sha256, original.recipe_sha256, "Bob and Ferdie trained different recipes");
	while !matches!(job(&chain, id).await.status, molting_chain::jobs::JobStatus::Judging { .. }) {
		tokio::time::sleep(Duration::from_millis(100)).await;
	}
	worker_output(&[
		"job", "--node", &node.ws_url(), "reveal", &id.to_string(), "--store", &store.url, "--account", "//Alice",
		"--secrets", secrets.to_str().unwrap(),
	]);
	// Charlie is killed (-9) once it has committed, and restarted: it reveals the report it
	// kept on disk, and is not penalised for a missing reveal.
	committee[0].wait_for_log("committed to my report", Duration::from_secs(120));
	committee[0].kill9();
	committee[0] = start_validator(&node.ws_url(), &keystores[0], dir.join("Charlie-2.log"), &[]);
	wait_finished(&chain, id).await;
	for m in miners.iter_mut() {
		assert!(m.wait_exit(Duration::from_secs(120)).success(), "{}", m.log());
	}
	let copier_log = miners[2].log();
	assert!(copier_log.contains("--copy-from") && !copier_log.contains("trained and published"), "the copier trained nothing:\n{copier_log}");
	assert!(copier_log.contains("judged my result fraud"), "{copier_log}");
	let end = chain.finalized_number().await.unwrap();

	// The rulings: the copy fails replay under the copier's seed; the two honest results
	// pass with their hidden-eval losses.
	let mut settled = std::collections::BTreeMap::new();
	let (mut to_validators, mut penalised) = (0, 0);
	for n in start + 1..=end {
		let events = chain.api.at_block(n).await.unwrap().events().fetch().await.unwrap();
		for e in events.find::<runtime::jobs::events::ResultSettled>().flatten() {
			assert_eq!(e.job_id, id);
			settled.insert(e.miner.to_string(), e);
		}
		to_validators += events.find::<runtime::contribution::events::ValidatorPaid>().flatten().map(|e| e.amount).sum::<u128>();
		penalised += events.find::<runtime::contribution::events::ValidatorPenalised>().flatten().count();
	}
	let (b, f) = (&settled[&bob.to_string()], &settled[&ferdie.to_string()]);
	let collateral = 10 * MOLT;
	for (who, s) in [("the copy", &settled[&copier_id.to_string()]), ("the rogue's", &settled[&rogue_id.to_string()])] {
		assert!(matches!(s.grade, Grade::Fraud), "{who}: {:?}", s.grade);
		assert_eq!((s.paid, s.refunded, s.slashed), (0, 100 * MOLT, collateral), "{who}: collateral slashed, its share refunded");
	}
	for v in names {
		let log = std::fs::read_to_string(dir.join(format!("{v}.log"))).unwrap() + &std::fs::read_to_string(dir.join(format!("{v}-2.log"))).unwrap_or_default();
		assert!(log.contains("checkpoint 0 is not the recipe's initial state under the miner's seed"), "{v} says why the copy fails:\n{log}");
		assert!(log.contains("`lora.rank` is 8, not one of [2, 4], outside the contest's bounds"), "{v} says why the rogue fails:\n{log}");
	}
	let (Grade::Pass { loss_ppm: Some(lb) }, Grade::Pass { loss_ppm: Some(lf) }) = (&b.grade, &f.grade) else {
		panic!("both honest results pass with a loss: {:?} {:?}", b.grade, f.grade);
	};
	assert_ne!(lb, lf, "two recipes, two losses");
	// Each loss is what the worker's `eval` finds for that miner's fetched adapter.
	for (who, loss, rank) in [(&bob, lb, 4), (&ferdie, lf, 2)] {
		let out = dir.join(format!("fetched-{who}"));
		worker_output(&["job", "--node", &node.ws_url(), "fetch", &id.to_string(), "--miner", &who.to_string(), "--out", out.to_str().unwrap()]);
		let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
		assert_eq!(config["r"], rank, "{who} trained the rank it chose");
		let eval: serde_json::Value = serde_json::from_str(&worker_output(&[
			"eval", "--spec", spec.to_str().unwrap(), "--adapter", out.join("adapter").to_str().unwrap(), "--json",
		]))
		.unwrap();
		assert_eq!(u64::from(*loss), (eval["adapter"]["loss"].as_f64().unwrap() * 1e6).round() as u64, "{who}'s consensus loss is its adapter's eval loss");
	}
	// Ranked: the pool of the two passing shares (95 MOLT each, after the validators' 5%),
	// 2/3 to the lower loss, the rest to the other.
	let validator_fee = 5 * MOLT;
	let pool = 2 * (100 * MOLT - validator_fee);
	let gross = |s: &runtime::jobs::events::ResultSettled| s.paid + s.fee;
	let (winner, loser) = if lb < lf { (b, f) } else { (f, b) };
	assert_eq!(gross(winner) + gross(loser), pool, "the pool, all of it");
	assert_eq!(gross(loser), pool / 3, "1/3 of the pool (floored) to the worse loss, the rest to the better");
	for s in [b, f] {
		assert_eq!(s.validator_fee, validator_fee);
		assert!(s.fee.abs_diff(gross(s) / 20) <= 1, "the protocol fee, 5% of what the rank earns (to the nearest planck)");
	}
	assert_eq!(to_validators, 2 * validator_fee + collateral, "the validators' fees and half of each cheat's slash");
	assert_eq!(penalised, 0, "every seat agreed and revealed, Charlie's after its restart");
	let restarted = std::fs::read_to_string(dir.join("Charlie-2.log")).unwrap();
	assert!(restarted.contains("connected"), "Charlie came back:\n{restarted}");
	let charlie = std::fs::read_to_string(dir.join("Charlie.log")).unwrap();
	assert!(
		charlie.contains("revealed my report") || restarted.contains("revealed my report"),
		"Charlie revealed (after its restart, unless it was quicker than the kill)"
	);
	assert!(!restarted.contains("judging"), "the restarted Charlie did not judge again: its report was on disk");
	let mut after = Vec::new();
	let mut fees = Vec::new();
	for who in [&alice, &bob, &ferdie, &copier_id, &rogue_id] {
		after.push(account(&chain, who, end).await);
		fees.push(fees_paid(&chain, who, start + 1, end).await);
	}
	// Everyone registered before `start`: the deposits were held already.
	assert_eq!(after[0].free, before[0].free - 200 * MOLT - fees[0], "Alice pays for the two honest results only");
	assert_eq!(after[1].free, before[1].free + b.paid - fees[1], "Bob: his rank's payout");
	assert_eq!(after[2].free, before[2].free + f.paid - fees[2], "Ferdie: her rank's payout");
	assert_eq!(after[3].free, before[3].free - collateral - fees[3], "the copier loses its collateral");
	assert_eq!(after[4].free, before[4].free - collateral - fees[4], "the rogue loses its collateral");
	for (a, b) in after.iter().zip(&before) {
		assert_eq!(a.reserved, b.reserved, "no escrow or collateral left on hold");
	}
	assert_eq!(issuance(&chain, end).await, issuance0 - collateral, "the other halves of the slashes are burned");
	assert_eq!(chain.check_market_invariants().await.unwrap(), Ok(()), "the market's try_state checks hold on the chain");
	let j = job(&chain, id).await;
	assert!(j.claims.0.iter().all(|c| matches!(c.state, ClaimState::Judged { .. })));
	drop(committee);
	drop(store);
	let _ = std::fs::remove_dir_all(&dir);
}
