//! `molt-worker job ...` and `molt-worker recipe`: the developer's side.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use molting_chain::{account_of, bounded, format_molt, jobs, keystore, runtime, Chain, MOLT};
use molting_engine::recipe::{BlobRef, Recipe};
use molting_engine::spec::Spec;
use molting_store::{Cache, Publisher};
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
	pub backend: Option<&'a str>,
}

/// Uploads the inputs and the recipe, posts the job, returns its id.
pub async fn post(a: PostArgs<'_>) -> Result<u64> {
	let signer = keystore::parse(a.account).ok_or_else(|| anyhow!("--account is not a valid secret URI"))?;
	let publisher = Publisher::new(a.store, a.store_token)?;
	let (recipe, bytes, uri) = recipe_of(a.spec, Some(&publisher)).await?;
	let uri = uri.expect("published");
	let sha: [u8; 32] = molting_engine::recipe::Recipe::sha256(&recipe);
	debug_assert_eq!(molting_store::sha256_hex(&bytes), hex::encode(sha));
	let chain = Chain::connect(a.node).await?;
	let head = chain.finalized_number().await? as u32;
	let spec = jobs::JobSpec {
		recipe: jobs::ContentRef { sha256: sha, uri: bounded(uri.as_bytes()) },
		// No hidden eval set yet (proof of contribution reveals one): the commitment is zero.
		eval_commitment: [0; 32],
		steps: u32::try_from(recipe.train.steps).context("steps")?,
		checkpoint_interval: u32::try_from(recipe.train.checkpoint_every).context("checkpoint_every")?,
		requirements: jobs::Requirements {
			backend: a.backend.map(|b| bounded(b.as_bytes())),
			min_memory_mib: 0,
			min_completed_jobs: 0,
		},
		replication: a.replication,
	};
	let deadlines = jobs::Deadlines {
		claim_by: head + a.claim_blocks,
		submit_by: head + a.claim_blocks + a.submit_blocks,
	};
	let (claim_by, submit_by) = (deadlines.claim_by, deadlines.submit_by);
	let call = runtime::tx().jobs().post_job(spec, a.budget, deadlines);
	let (block, events) = chain.submit("Jobs.post_job", &call, &signer).await?;
	let posted = events
		.find_first::<runtime::jobs::events::JobPosted>()
		.ok_or_else(|| anyhow!("post_job succeeded but no JobPosted event"))??;
	eprintln!(
		"posted job {} in block {block}: recipe {} ({uri}), budget {}, claim by block {}, submit by block {}",
		posted.job_id,
		hex::encode(sha),
		format_molt(a.budget),
		claim_by,
		submit_by
	);
	Ok(posted.job_id)
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
	println!("  recipe   {} {}", hex::encode(job.spec.recipe.sha256), String::from_utf8_lossy(&job.spec.recipe.uri.0));
	println!(
		"  budget   {} (escrow left {}), {} per result, {} replica(s)",
		format_molt(job.budget),
		format_molt(job.escrow),
		format_molt(job.reward_per_result),
		job.spec.replication
	);
	println!("  steps    {}, checkpoint every {}", job.spec.steps, job.spec.checkpoint_interval);
	println!("  deadlines claim by #{}, submit by #{}", job.deadlines.claim_by, job.deadlines.submit_by);
	for c in &job.claims.0 {
		let (state, result) = claim_state(&c.state);
		println!("  claim    {}: {state}{}", c.miner, result.map(|(h, u)| format!(", result {h} {u}")).unwrap_or_default());
	}
	Ok(())
}

fn claim_state<B>(s: &jobs::ClaimState<B>) -> (&'static str, Option<(String, String)>) {
	let r = |d: &jobs::Delivery<B>| Some((hex::encode(d.result.sha256), String::from_utf8_lossy(&d.result.uri.0).into_owned()));
	match s {
		jobs::ClaimState::Working => ("working", None),
		jobs::ClaimState::Submitted { delivery, .. } => ("submitted", r(delivery)),
		jobs::ClaimState::Disputed { delivery } => ("disputed", r(delivery)),
		jobs::ClaimState::Paid { delivery } => ("paid", r(delivery)),
		jobs::ClaimState::Rejected { delivery } => ("rejected", r(delivery)),
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
	serde_json::json!({
		"job_id": id, "status": format!("{:?}", job.status), "owner": job.owner.to_string(),
		"recipe": hex::encode(job.spec.recipe.sha256), "budget": job.budget.to_string(),
		"escrow": job.escrow.to_string(), "claims": claims,
	})
}

pub async fn review(node: &str, id: u64, miner: &str, account: &str, accept: bool) -> Result<()> {
	let signer = keystore::parse(account).ok_or_else(|| anyhow!("--account is not a valid secret URI"))?;
	let miner = parse_account(miner)?;
	let chain = Chain::connect(node).await?;
	let (block, events) = if accept {
		chain.submit("Jobs.accept_result", &runtime::tx().jobs().accept_result(id, miner.clone()), &signer).await?
	} else {
		chain.submit("Jobs.reject_result", &runtime::tx().jobs().reject_result(id, miner.clone()), &signer).await?
	};
	if let Some(Ok(e)) = events.find_first::<runtime::jobs::events::ResultAccepted>() {
		eprintln!("job {id}: accepted in block {block}; {} paid {} (fee {})", e.miner, format_molt(e.paid), format_molt(e.fee));
	} else {
		eprintln!("job {id}: {} in block {block}", if accept { "accepted" } else { "rejected (disputed)" });
	}
	Ok(())
}

/// Downloads and verifies the adapter a miner delivered for job `id` (the first result
/// paid or under review, or `miner`'s).
pub async fn fetch(node: &str, id: u64, miner: Option<&str>, out: &Path) -> Result<crate::result::ResultManifest> {
	let chain = Chain::connect(node).await?;
	let job = chain.job(id).await?.ok_or_else(|| anyhow!("no job {id} on {node}"))?;
	let want = miner.map(parse_account).transpose()?;
	// A result paid, or under review; never one rejected or disputed.
	let delivery = job
		.claims
		.0
		.iter()
		.filter(|c| want.as_ref().is_none_or(|w| &c.miner == w))
		.find_map(|c| match &c.state {
			jobs::ClaimState::Paid { delivery } | jobs::ClaimState::Submitted { delivery, .. } => Some(delivery),
			_ => None,
		})
		.ok_or_else(|| anyhow!("job {id} has no result paid or under review{}", miner.map(|m| format!(" from {m}")).unwrap_or_default()))?;
	let (sha, uri) = (hex::encode(delivery.result.sha256), String::from_utf8_lossy(&delivery.result.uri.0).into_owned());
	let expected = crate::result::Expected {
		job_id: id,
		recipe_sha256: hex::encode(job.spec.recipe.sha256),
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
	let paid: Vec<u128> = job
		.claims
		.0
		.iter()
		.filter(|c| matches!(c.state, jobs::ClaimState::Paid { .. }))
		.map(|_| job.reward_per_result)
		.collect();
	let spent: u128 = paid.iter().sum();
	let fee_rate = chain
		.api
		.at_current_block()
		.await
		.map_err(|e| anyhow!("{e}"))?
		.constants()
		.entry(runtime::constants().jobs().protocol_fee())
		.map_err(|e| anyhow!("{e}"))?
		.0;
	let fee: u128 = paid.iter().map(|r| r * u128::from(fee_rate) / 1_000_000_000).sum();
	println!(
		"job {id} cost its owner {} of its {} budget: {} to the miner(s), {} protocol fee to the treasury (plus transaction fees)",
		format_molt(spent),
		format_molt(job.budget),
		format_molt(spent - fee),
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
