//! `molt-worker job ...` and `molt-worker recipe`: the developer's side.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use molting_chain::{account_of, bounded, format_molt, jobs, keystore, runtime, Chain, MOLT};
use molting_engine::bounds::{Bounds, Limits};
use molting_engine::recipe::{BlobRef, Recipe};
use molting_engine::spec::Spec;
use molting_store::{Cache, Publisher};
use sha2::Digest;
use subxt::utils::AccountId32;

/// The recipe `spec_path` writes; with a publisher, every local input is uploaded to it
/// and named by its store URI, and so is the recipe itself. Returns the recipe, its bytes
/// and (when published) its URI.
pub async fn recipe_of(spec_path: &Path, publisher: Option<&Publisher>) -> Result<(Recipe, Vec<u8>, Option<String>)> {
	let (spec, _) = Spec::load(spec_path)?;
	let mut recipe = spec.to_recipe(spec_path)?;
	let Some(publisher) = publisher else {
		let bytes = recipe.to_canonical();
		return Ok((recipe, bytes, None));
	};
	let publish = |blob: BlobRef| async move {
		match blob.uri.strip_prefix("file://") {
			Some(path) => {
				let (sha, uri) = publisher.put_file(Path::new(path)).await?;
				if sha != blob.sha256 {
					bail!("{path} changed while it was being published");
				}
				Ok(BlobRef { uri, ..blob })
			},
			None => Ok(blob),
		}
	};
	let mut files = std::collections::BTreeMap::new();
	for (name, blob) in std::mem::take(&mut recipe.model.files) {
		files.insert(name, publish(blob).await?);
	}
	recipe.model.files = files;
	recipe.data.train = publish(recipe.data.train.clone()).await?;
	if let Some(e) = recipe.data.eval.take() {
		recipe.data.eval = Some(publish(e).await?);
	}
	let bytes = recipe.to_canonical();
	let (_, uri) = publisher.put(bytes.clone()).await?;
	Ok((recipe, bytes, Some(uri)))
}

/// An account from an SS58 address or a secret URI (`//Bob`).
pub fn parse_account(s: &str) -> Result<AccountId32> {
	if let Ok(a) = s.parse::<AccountId32>() {
		return Ok(a);
	}
	keystore::parse(s).map(|k| account_of(&k)).ok_or_else(|| anyhow!("the account given is neither an SS58 address nor a secret URI"))
}

/// MOLT as a decimal string (`100`, `0.5`) to planck.
pub fn parse_molt(s: &str) -> Result<u128> {
	let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
	if frac.len() > 12 || whole.is_empty() && frac.is_empty() {
		bail!("`{s}` is not an amount of MOLT (at most 12 decimals)");
	}
	let w: u128 = if whole.is_empty() { 0 } else { whole.parse().with_context(|| format!("`{s}` is not an amount of MOLT"))? };
	let f: u128 = if frac.is_empty() { 0 } else { format!("{frac:0<12}").parse().with_context(|| format!("`{s}` is not an amount of MOLT"))? };
	w.checked_mul(MOLT).and_then(|p| p.checked_add(f)).ok_or_else(|| anyhow!("`{s}` MOLT is too much"))
}

pub struct PostArgs<'a> {
	pub node: &'a str,
	pub spec: &'a Path,
	pub budget: u128,
	pub store: &'a str,
	pub store_token: Option<&'a str>,
	pub account: &'a str,
	pub replication: u8,
	pub claim_blocks: u32,
	pub submit_blocks: u32,
	pub reveal_blocks: u32,
	pub judge_blocks: u32,
	pub backend: Option<&'a str>,
	/// The hidden eval set (JSONL conversations), committed to now and revealed later.
	pub eval: Option<&'a Path>,
	/// Where the eval set's salt is kept until `job reveal`.
	pub secrets: &'a Path,
	/// The quality bar: the adapter's eval loss must be this part below the base model's.
	pub min_improvement_ppb: u32,
	pub ranked: bool,
	/// A contest: the limits (a JSON file, `molting_engine::bounds::Limits`) within which
	/// each miner writes its own recipe; the spec's inputs are the contest's and its
	/// sections the suggested recipe.
	pub contest: Option<&'a Path>,
}

/// `~/.cache/molting/owner`: where `job post` keeps eval salts by default.
pub fn default_secrets() -> std::path::PathBuf {
	std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| ".".into()).join(".cache/molting/owner")
}

/// What the owner keeps to reveal a job's eval set: the set's path and hash, and the
/// salt of the commitment (`<secrets>/job-<id>.json`, mode 0600).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EvalSecret {
	pub path: std::path::PathBuf,
	pub sha256: String,
	pub salt: String,
}

/// Uploads the inputs and the recipe, commits to the eval set, posts the job, returns its
/// id. The eval set itself stays on this machine until `job reveal`.
pub async fn post(a: PostArgs<'_>) -> Result<u64> {
	let signer = keystore::parse(a.account).ok_or_else(|| anyhow!("--account is not a valid secret URI"))?;
	let publisher = Publisher::new(a.store, a.store_token)?;
	let (recipe, bytes, uri) = recipe_of(a.spec, Some(&publisher)).await?;
	let uri = uri.expect("published");
	let sha: [u8; 32] = molting_engine::recipe::Recipe::sha256(&recipe);
	debug_assert_eq!(molting_store::sha256_hex(&bytes), hex::encode(sha));
	let eval = match a.eval {
		None => None,
		Some(path) => {
			let data = std::fs::read(path).with_context(|| format!("{}: the eval set", path.display()))?;
			let set: [u8; 32] = sha2::Sha256::digest(&data).into();
			let salt = keystore::random_seed().context("no randomness for the eval salt")?;
			Some((path.to_path_buf(), set, salt))
		},
	};
	let (work, what) = match a.contest {
		None => (
			jobs::Work::Compute {
				recipe: jobs::ContentRef { sha256: sha, uri: bounded(uri.as_bytes()) },
				steps: u32::try_from(recipe.train.steps).context("steps")?,
				checkpoint_interval: u32::try_from(recipe.train.checkpoint_every).context("checkpoint_every")?,
			},
			format!("recipe {} ({uri})", hex::encode(sha)),
		),
		Some(path) => {
			let text = std::fs::read(path).with_context(|| format!("{}: the contest's limits", path.display()))?;
			let limits: Limits = serde_json::from_slice(&text).with_context(|| format!("{}: not a contest's limits", path.display()))?;
			let bounds = Bounds::new(&recipe, limits);
			bounds.validate(&path.display().to_string())?;
			let bytes = bounds.to_canonical();
			let (bounds_sha, bounds_uri) = publisher.put(bytes).await?;
			let l = &bounds.limits;
			(
				jobs::Work::Contest {
					bounds: jobs::ContentRef { sha256: bounds.sha256(), uri: bounded(bounds_uri.as_bytes()) },
					max_steps: u32::try_from(l.max_steps).context("max_steps")?,
					max_checkpoint_interval: u32::try_from(l.max_checkpoint_every).context("max_checkpoint_every")?,
				},
				format!("a contest within bounds {bounds_sha} ({bounds_uri})"),
			)
		},
	};
	let chain = Chain::connect(a.node).await?;
	let head = chain.finalized_number().await? as u32;
	let spec = jobs::JobSpec {
		work,
		// Without an eval set nobody can reveal one (zero has no preimage we know of): the
		// results are judged on replay alone.
		eval_commitment: eval.as_ref().map(|(_, set, salt)| molting_chain::eval_commitment(set, salt)).unwrap_or([0; 32]),
		min_improvement: runtime::runtime_types::sp_arithmetic::per_things::Perbill(a.min_improvement_ppb),
		payout: if a.ranked { jobs::PayoutRule::Ranked } else { jobs::PayoutRule::Equal },
		requirements: jobs::Requirements {
			backend: a.backend.map(|b| bounded(b.as_bytes())),
			min_memory_mib: 0,
			min_completed_jobs: 0,
		},
		replication: a.replication,
	};
	let claim_by = head + a.claim_blocks;
	let submit_by = claim_by + a.submit_blocks;
	let reveal_by = submit_by + a.reveal_blocks.max(1);
	let deadlines = jobs::Deadlines { claim_by, submit_by, reveal_by, judge_by: reveal_by + a.judge_blocks };
	let judge_by = deadlines.judge_by;
	// The salt is kept before the job is posted: a crash after posting must not lose it.
	let pending = match &eval {
		None => None,
		Some((path, set, salt)) => {
			let secret = EvalSecret { path: path.clone(), sha256: hex::encode(set), salt: hex::encode(salt) };
			std::fs::create_dir_all(a.secrets).with_context(|| a.secrets.display().to_string())?;
			let file = a.secrets.join(format!("pending-{}.json", hex::encode(molting_chain::eval_commitment(set, salt))));
			molting_chain::keystore::write_secret(&file, serde_json::to_string_pretty(&secret)?.as_bytes())?;
			Some(file)
		},
	};
	let call = runtime::tx().jobs().post_job(spec, a.budget, deadlines);
	let (block, events) = chain.submit("Jobs.post_job", &call, &signer).await?;
	let posted = events
		.find_first::<runtime::jobs::events::JobPosted>()
		.ok_or_else(|| anyhow!("post_job succeeded but no JobPosted event"))??;
	if let Some(pending) = pending {
		let file = a.secrets.join(format!("job-{}.json", posted.job_id));
		std::fs::rename(&pending, &file).with_context(|| format!("{} -> {}", pending.display(), file.display()))?;
		eprintln!("job {}: the eval set's salt is in {} (reveal it with `job reveal {}` by block {reveal_by})", posted.job_id, file.display(), posted.job_id);
	}
	eprintln!(
		"posted job {} in block {block}: {what}, budget {}, claim by #{claim_by}, submit by #{submit_by}, reveal by #{reveal_by}, judged by #{judge_by}",
		posted.job_id,
		format_molt(a.budget),
	);
	Ok(posted.job_id)
}

/// Publishes job `id`'s eval set to the store and reveals it (with its salt) on chain.
pub async fn reveal(node: &str, id: u64, store: &str, store_token: Option<&str>, account: &str, secrets: &Path) -> Result<()> {
	let signer = keystore::parse(account).ok_or_else(|| anyhow!("--account is not a valid secret URI"))?;
	let mut file = secrets.join(format!("job-{id}.json"));
	let chain = Chain::connect(node).await?;
	if !file.exists() {
		// Posted, but the poster died before naming the salt's file by the job's id.
		let job = chain.job(id).await?.ok_or_else(|| anyhow!("no job {id} on {node}"))?;
		file = secrets.join(format!("pending-{}.json", hex::encode(job.spec.eval_commitment)));
	}
	let secret: EvalSecret = serde_json::from_slice(&std::fs::read(&file).with_context(|| format!("{}: no eval secret for job {id}", file.display()))?)
		.with_context(|| file.display().to_string())?;
	let data = std::fs::read(&secret.path).with_context(|| secret.path.display().to_string())?;
	if molting_store::sha256_hex(&data) != secret.sha256 {
		bail!("{}: the eval set changed since job {id} committed to it (sha256 {})", secret.path.display(), secret.sha256);
	}
	let publisher = Publisher::new(store, store_token)?;
	let (sha, uri) = publisher.put(data).await?;
	let salt: [u8; 32] = hex::decode(&secret.salt).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| anyhow!("{}: a bad salt", file.display()))?;
	let set = jobs::ContentRef {
		sha256: hex::decode(&sha).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| anyhow!("the store answered a bad hash"))?,
		uri: bounded(uri.as_bytes()),
	};
	let (block, _) = chain.submit("Contribution.reveal_eval", &runtime::tx().contribution().reveal_eval(id, set, salt), &signer).await?;
	eprintln!("job {id}: eval set {sha} revealed in block {block} ({uri})");
	Ok(())
}

pub async fn status(node: &str, id: u64, json: bool) -> Result<()> {
	let chain = Chain::connect(node).await?;
	let job = chain.job(id).await?.ok_or_else(|| anyhow!("no job {id} on {node}"))?;
	if json {
		println!("{}", serde_json::to_string(&status_json(id, &job))?);
		return Ok(());
	}
	let status = format!("{:?}", job.status);
	println!("job {id}: {status}, owner {}", job.owner);
	let (steps, interval) = match &job.spec.work {
		jobs::Work::Compute { recipe, steps, checkpoint_interval } => {
			println!("  recipe   {} {}", hex::encode(recipe.sha256), String::from_utf8_lossy(&recipe.uri.0));
			(format!("{steps}"), format!("{checkpoint_interval}"))
		},
		jobs::Work::Contest { bounds, max_steps, max_checkpoint_interval } => {
			println!("  contest  bounds {} {} ({:?} payout)", hex::encode(bounds.sha256), String::from_utf8_lossy(&bounds.uri.0), job.spec.payout);
			(format!("at most {max_steps}"), format!("at most {max_checkpoint_interval}"))
		},
	};
	println!(
		"  budget   {} (escrow left {}), {} per result, {} replica(s)",
		format_molt(job.budget),
		format_molt(job.escrow),
		format_molt(job.reward_per_result),
		job.spec.replication
	);
	println!("  steps    {steps}, checkpoint every {interval}");
	let d = &job.deadlines;
	println!("  deadlines claim by #{}, submit by #{}, reveal by #{}, judged by #{}", d.claim_by, d.submit_by, d.reveal_by, d.judge_by);
	for c in &job.claims.0 {
		let (state, result) = claim_state(&c.state);
		println!("  claim    {}: {state}{}", c.miner, result.map(|(h, u)| format!(", result {h} {u}")).unwrap_or_default());
	}
	Ok(())
}

/// The recipe, steps and checkpoint interval of a compute job (a contest has no single
/// recipe: each miner writes its own within the bounds).
pub fn compute_work(job: &molting_chain::Job) -> Result<(&jobs::ContentRef, u32, u32)> {
	match &job.spec.work {
		jobs::Work::Compute { recipe, steps, checkpoint_interval } => Ok((recipe, *steps, *checkpoint_interval)),
		jobs::Work::Contest { .. } => bail!("a contest: each miner brings its own recipe within the job's bounds"),
	}
}

fn claim_state<Ba, B>(s: &jobs::ClaimState<Ba, B>) -> (&'static str, Option<(String, String)>) {
	let r = |d: &jobs::Delivery<B>| Some((hex::encode(d.result.sha256), String::from_utf8_lossy(&d.result.uri.0).into_owned()));
	match s {
		jobs::ClaimState::Working => ("working", None),
		jobs::ClaimState::Submitted { delivery } => ("submitted", r(delivery)),
		jobs::ClaimState::Judged { delivery, grade, .. } => (molting_chain::grade_name(grade), r(delivery)),
		jobs::ClaimState::Expired => ("expired", None),
	}
}

fn status_json(id: u64, job: &molting_chain::Job) -> serde_json::Value {
	let claims: Vec<_> = job
		.claims
		.0
		.iter()
		.map(|c| {
			let (state, result) = claim_state(&c.state);
			serde_json::json!({"miner": c.miner.to_string(), "state": state,
				"result": result.map(|(h, u)| serde_json::json!({"sha256": h, "uri": u}))})
		})
		.collect();
	let recipe = compute_work(job).map(|(r, _, _)| hex::encode(r.sha256)).ok();
	let bounds = match &job.spec.work {
		jobs::Work::Contest { bounds, .. } => Some(hex::encode(bounds.sha256)),
		jobs::Work::Compute { .. } => None,
	};
	serde_json::json!({
		"job_id": id, "status": format!("{:?}", job.status), "owner": job.owner.to_string(),
		"recipe": recipe, "bounds": bounds, "budget": job.budget.to_string(),
		"escrow": job.escrow.to_string(), "claims": claims,
	})
}

/// Downloads and verifies the adapter a miner delivered for job `id` (the first result
/// that passed, or is awaiting judgement; or `miner`'s).
pub async fn fetch(node: &str, id: u64, miner: Option<&str>, out: &Path) -> Result<crate::result::ResultManifest> {
	let chain = Chain::connect(node).await?;
	let job = chain.job(id).await?.ok_or_else(|| anyhow!("no job {id} on {node}"))?;
	let want = miner.map(parse_account).transpose()?;
	// A result that passed, or is being judged; never one judged fraud or below the bar.
	let delivery = job
		.claims
		.0
		.iter()
		.filter(|c| want.as_ref().is_none_or(|w| &c.miner == w))
		.find_map(|c| match &c.state {
			jobs::ClaimState::Judged { delivery, grade: jobs::Grade::Pass { .. }, .. } | jobs::ClaimState::Submitted { delivery } => Some(delivery),
			_ => None,
		})
		.ok_or_else(|| anyhow!("job {id} has no result that passed or awaits judgement{}", miner.map(|m| format!(" from {m}")).unwrap_or_default()))?;
	let (sha, uri) = (hex::encode(delivery.result.sha256), String::from_utf8_lossy(&delivery.result.uri.0).into_owned());
	let expected = crate::result::Expected {
		job_id: id,
		recipe_sha256: hex::encode(delivery.recipe_sha256),
		checkpoint_root: hex::encode(delivery.checkpoint_root),
	};
	let cache = Cache::new(molting_engine::recipe::cache_dir(), 16 << 30);
	let manifest = crate::result::fetch_result(&cache, &uri, &sha, &expected, out).await?;
	eprintln!("job {id}: result {sha} verified; adapter in {}/adapter (PEFT) and {}/adapter.gguf", out.display(), out.display());
	Ok(manifest)
}

/// What job `id` cost its owner in MOLT, beside what the same training costs on rented
/// machines: the run's measured time (`run/metrics.jsonl`) times each listed hourly price
/// (`prices`: CSV `provider,instance,vcpus,cpu,usd_per_hour,region,source`, `#` comments).
pub async fn cost(node: &str, id: u64, run: &Path, prices: &Path) -> Result<()> {
	let chain = Chain::connect(node).await?;
	let job = chain.job(id).await?.ok_or_else(|| anyhow!("no job {id} on {node}"))?;
	let constant = |c: runtime::runtime_types::sp_arithmetic::per_things::Perbill| c.0;
	let at = chain.api.at_current_block().await.map_err(|e| anyhow!("{e}"))?;
	let validator_rate = constant(at.constants().entry(runtime::constants().jobs().validator_fee()).map_err(|e| anyhow!("{e}"))?);
	let validator_fee = job.reward_per_result * u128::from(validator_rate) / 1_000_000_000;
	// What left the escrow for each judged result: a passing one's whole share (payout,
	// protocol fee, validators' fee), a result below the bar the validators' fee only.
	let (mut spent, mut to_miners, mut judged) = (0u128, 0u128, 0u128);
	for c in &job.claims.0 {
		if let jobs::ClaimState::Judged { grade, paid, .. } = &c.state {
			match grade {
				jobs::Grade::Pass { .. } => {
					spent += job.reward_per_result;
					to_miners += paid;
					judged += 1;
				},
				jobs::Grade::BelowBar => {
					spent += validator_fee;
					judged += 1;
				},
				_ => {},
			}
		}
	}
	let to_validators = judged * validator_fee;
	let fee = spent.saturating_sub(to_miners).saturating_sub(to_validators);
	println!(
		"job {id} cost its owner {} of its {} budget: {} to the miner(s), {} to the validators, {} protocol fee to the treasury (plus transaction fees)",
		format_molt(spent),
		format_molt(job.budget),
		format_molt(to_miners),
		format_molt(to_validators),
		format_molt(fee)
	);
	let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).with_context(|| run.display().to_string())?;
	let (mut tokens, mut seconds) = (0f64, 0f64);
	for line in metrics.lines().filter(|l| !l.trim().is_empty()) {
		let v: serde_json::Value = serde_json::from_str(line)?;
		tokens += v["tokens"].as_f64().unwrap_or(0.0);
		seconds += v["seconds"].as_f64().unwrap_or(0.0);
	}
	let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("summary.json"))?)?;
	println!(
		"training: {tokens:.0} tokens in {seconds:.1} s on {} ({:.0} tokens/s, measured in this run)",
		summary["backend"].as_str().unwrap_or("?"),
		tokens / seconds.max(1e-9)
	);
	println!("the same training on rented machines ({}; on-demand list prices, see the file for dates):", prices.display());
	let mut cheapest = f64::INFINITY;
	for line in std::fs::read_to_string(prices).with_context(|| prices.display().to_string())?.lines() {
		if line.trim().is_empty() || line.starts_with('#') {
			continue;
		}
		let f: Vec<&str> = line.split(',').collect();
		let [provider, instance, vcpus, cpu, usd, region, ..] = f.as_slice() else {
			bail!("{}: `{line}` is not provider,instance,vcpus,cpu,usd_per_hour,region,source", prices.display());
		};
		let per_hour: f64 = usd.parse().with_context(|| format!("{}: `{usd}` is not a price", prices.display()))?;
		let usd_cost = per_hour * seconds / 3600.0;
		cheapest = cheapest.min(usd_cost);
		println!("  {provider} {instance} ({vcpus} vCPU, {cpu}, {region}) at ${per_hour}/h: ${usd_cost:.5}");
	}
	if cheapest.is_finite() && spent > 0 {
		let molt = spent as f64 / MOLT as f64;
		println!(
			"break-even: at ${:.8} per MOLT this job cost its owner what the cheapest of those machines would (MOLT has no market price on a dev chain)",
			cheapest / molt
		);
	}
	Ok(())
}
