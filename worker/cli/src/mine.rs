//! `molt-worker mine`: the miner's loop, in one place.
//!
//! ```text
//!  connect (backoff) ──► register if needed ──► rediscover my claims (all jobs)
//!        ▲                                      + open_jobs (view function)
//!        │ any RPC error                                │
//!        └───────────── follow finalised blocks ◄───────┘
//!                       │  JobPosted        -> consider: requirements, reward/step,
//!                       │                      fetch + check recipe and every input
//!                       │                      (a contest: --contest-choice over the
//!                       │                      bounds' suggestion, within the bounds),
//!                       │                      probe one step, fits before submit_by?
//!                       │                      -> claim_job
//!                       │  each tracked job -> Working: train (resume from the last
//!                       │                      checkpoint on disk), publish, sign,
//!                       │                      submit_result; Submitted: wait;
//!                       │                      settled: log, metrics, forget
//! ```
//!
//! Everything the miner knows is either on chain or in its data directory, so `kill -9` at
//! any moment and a restart lose nothing: `jobs/<id>/claim.json` and `jobs/<id>/recipe.json`
//! (written before the claim is sent; a contest's recipe stays the one chosen), `jobs/<id>/run/` (the training run: checkpoints, resumed from the last),
//! `jobs/<id>/delivery.json` (the signed attestation, written before it is submitted),
//! `jobs/<id>/gave_up.txt` (why it stopped). Training runs on its own threads, so the node
//! restarting does not stop it; the loop reconnects and carries on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use molting_chain::keystore::Keystore;
use molting_chain::{account_of, bounded, format_molt, jobs, runtime, Attestation, Chain, ChainError, JobEvent};
use molting_engine::backend::Backend;
use molting_engine::checkpoint::Manifest;
use molting_engine::bounds::Bounds;
use molting_engine::recipe::{miner_seed, LocalInputs, Recipe};
use molting_engine::train::{self, Job, RunOptions};
use molting_store::{Cache, FetchError, Publisher};
use serde::{Deserialize, Serialize};
use subxt::utils::AccountId32;

use crate::metrics::Metrics;

pub struct MineOptions {
	pub node: String,
	pub keystore: PathBuf,
	pub store: String,
	pub store_token: Option<String>,
	pub data: PathBuf,
	/// Least reward per training step accepted, in planck.
	pub min_reward_per_step: u128,
	pub prometheus_port: Option<u16>,
	/// Largest input blob fetched.
	pub max_blob: u64,
	/// Exit once this many jobs are settled (tests and demos); run forever without it.
	pub exit_after: Option<usize>,
	/// Accept `file://` URIs in recipes from the chain (dev chains and tests only: a
	/// stranger's recipe could otherwise make the miner read this machine's files).
	pub allow_file_uris: bool,
	/// Tests only: train to this step, then fabricate the rest (a lazy miner).
	pub fake_after: Option<u64>,
	/// Tests only: train nothing, attest this account's delivery of the same job as ours
	/// (a copier).
	pub copy_from: Option<AccountId32>,
	/// In contests, the fields laid over the bounds' suggested recipe (a JSON object).
	pub contest_choice: serde_json::Value,
}

/// What `jobs/<id>/claim.json` records.
#[derive(Serialize, Deserialize)]
struct ClaimRecord {
	job_id: u64,
	recipe_sha256: String,
	seed: u64,
}

/// What `jobs/<id>/delivery.json` records: the attestation as submitted.
#[derive(Serialize, Deserialize, Clone)]
struct Delivery {
	job_id: u64,
	result_sha256: String,
	result_uri: String,
	checkpoint_root: String,
	steps: u32,
	checkpoint_interval: u32,
	final_train_loss_ppm: u32,
	/// The recipe the signature names (a contest's is the miner's own; older files lack it).
	#[serde(default)]
	recipe_sha256: String,
	signature: String,
}

/// A job this miner has claimed.
struct Tracked {
	dir: PathBuf,
	recipe: Recipe,
	seed: u64,
	/// Training and publishing, until it writes `delivery.json` (or fails).
	task: Option<tokio::task::JoinHandle<Result<()>>>,
	/// What has been logged about its chain state (so each state is logged once).
	logged: &'static str,
	/// After a passing failure (a store or input unreachable), not before this block.
	retry_at: u64,
	/// The block from which the chain shows this claim (its inclusion, or where it was
	/// found): the loop reads state as of its last handled block, which may be earlier.
	visible_from: u64,
}

impl Tracked {
	fn new(dir: PathBuf, recipe: Recipe, seed: u64, visible_from: u64) -> Tracked {
		Tracked { dir, recipe, seed, task: None, logged: "", retry_at: 0, visible_from }
	}

	/// Stops its training or publishing task, if one runs.
	fn stop(&mut self) {
		if let Some(task) = self.task.take() {
			task.abort();
		}
	}
}

/// Records a claim in `dir/claim.json`, and the recipe it trains in `dir/recipe.json`
/// (before the claim is sent, so a kill -9 loses nothing, and a contest's recipe stays the
/// one chosen however `--contest-choice` changes).
fn record_claim(dir: &Path, job_id: u64, recipe: &Recipe, seed: u64) -> Result<()> {
	std::fs::create_dir_all(dir)?;
	molting_engine::checkpoint::write_atomic(&dir.join("recipe.json"), &recipe.to_canonical())?;
	let record = ClaimRecord { job_id, recipe_sha256: hex::encode(recipe.sha256()), seed };
	molting_engine::checkpoint::write_atomic(&dir.join("claim.json"), &serde_json::to_vec_pretty(&record)?)?;
	Ok(())
}

/// 32 bytes from hex (`what` names it in the error).
fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
	hex::decode(s).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| anyhow!("{what}: `{s}` is not 32 bytes of hex"))
}

struct Miner {
	opts: MineOptions,
	keys: Keystore,
	me: AccountId32,
	cache: Cache,
	publisher: Publisher,
	metrics: Arc<Metrics>,
	tracked: BTreeMap<u64, Tracked>,
	/// Jobs looked at and passed over, with the block to look again at (`None`: never).
	passed: BTreeMap<u64, Option<u64>>,
	/// Jobs settled (paid, rejected, expired) since start.
	settled: BTreeSet<u64>,
	last_block: u64,
	/// The chain's genesis hash (hex): job directories are per chain, so a reset dev chain's
	/// job 0 never meets another chain's job 0.
	genesis: String,
	/// Measured seconds per step, by recipe hash (from the probe or from training).
	step_seconds: Arc<std::sync::Mutex<BTreeMap<String, f64>>>,
}

/// The memory this machine offers, in MiB (`MemTotal`).
fn memory_mib() -> u32 {
	std::fs::read_to_string("/proc/meminfo")
		.ok()
		.and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_string))
		.and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
		.map(|kb| (kb / 1024).min(u32::MAX as u64) as u32)
		.unwrap_or(0)
}

pub async fn mine(opts: MineOptions) -> Result<()> {
	let keys = Keystore::open(&opts.keystore)?;
	let me = account_of(&keys.account);
	let cache = Cache::new(opts.data.join("cache"), opts.max_blob);
	let publisher = Publisher::new(&opts.store, opts.store_token.as_deref())?;
	let metrics = Arc::new(Metrics::new());
	if let Some(port) = opts.prometheus_port {
		let addr = crate::metrics::serve(metrics.clone(), port).await.context("prometheus port")?;
		tracing::info!("metrics on http://{addr}/metrics");
	}
	std::fs::create_dir_all(opts.data.join("jobs")).with_context(|| opts.data.display().to_string())?;
	tracing::info!(account = %me, worker_key = %hex::encode(keys.worker.public_key().0), "miner starting");
	let mut miner = Miner {
		opts,
		keys,
		me,
		cache,
		publisher,
		metrics,
		tracked: BTreeMap::new(),
		passed: BTreeMap::new(),
		settled: BTreeSet::new(),
		last_block: 0,
		genesis: String::new(),
		step_seconds: Default::default(),
	};
	loop {
		let chain = Chain::connect_with_backoff(&miner.opts.node, Duration::from_secs(u64::MAX / 4)).await?;
		tracing::info!(node = %miner.opts.node, "connected");
		match miner.session(&chain).await {
			Ok(()) => return Ok(()),
			Err(e) => {
				tracing::warn!("{e:#}; reconnecting");
				tokio::time::sleep(Duration::from_secs(1)).await;
			},
		}
	}
}

/// Bounds a chain call: a node that went away mid-call must not hang the loop.
async fn timed<T>(what: &str, f: impl std::future::Future<Output = Result<T, ChainError>>) -> Result<T> {
	match tokio::time::timeout(Duration::from_secs(90), f).await {
		Ok(r) => r.map_err(anyhow::Error::from),
		Err(_) => Err(ChainError::Rpc { call: what.into(), reason: "no answer from the node in 90 s".into() }.into()),
	}
}

fn my_claim<'a>(job: &'a molting_chain::Job, me: &AccountId32) -> Option<&'a jobs::Claim<AccountId32, u128, u32>> {
	job.claims.0.iter().find(|c| &c.miner == me)
}

fn state_name<Ba, B>(s: &jobs::ClaimState<Ba, B>) -> &'static str {
	match s {
		jobs::ClaimState::Working => "working",
		jobs::ClaimState::Submitted { .. } => "submitted",
		jobs::ClaimState::Judged { grade, .. } => molting_chain::grade_name(grade),
		jobs::ClaimState::Expired => "expired",
	}
}

/// The backend a recipe trains on here, and its class.
fn backend_for_recipe(recipe: &Recipe) -> Result<std::sync::Arc<dyn Backend>> {
	crate::backend_for(recipe.train.precision)
}

impl Miner {
	async fn session(&mut self, chain: &Chain) -> Result<()> {
		let genesis = hex::encode(chain.genesis_hash());
		if self.genesis != genesis {
			// Another chain than before (or the first): nothing known carries over.
			if !self.genesis.is_empty() {
				tracing::warn!("the node is on another chain (genesis {genesis}); forgetting the old one's jobs");
				std::mem::take(&mut self.tracked).values_mut().for_each(Tracked::stop);
				self.passed.clear();
				self.last_block = 0;
			}
			self.genesis = genesis;
		}
		self.ensure_registered(chain).await?;
		self.rediscover(chain).await?;
		if self.last_block == 0 {
			let head = timed("finalized head", chain.finalized_number()).await?;
			self.last_block = head;
			for (id, job) in timed("open_jobs", chain.open_jobs(Some(self.me.clone()))).await? {
				self.consider(chain, id, &job).await?;
			}
		}
		loop {
			// Blocks in order, each one's events handled before the next; then every claimed
			// job is moved on as of the last handled block (state and events agree).
			let head = timed("finalized head", chain.finalized_number()).await?;
			while self.last_block < head {
				let n = self.last_block + 1;
				for event in timed("events", chain.job_events(n)).await? {
					self.on_event(chain, event).await?;
				}
				self.last_block = n;
				if n % 100 == 0 {
					self.rediscover(chain).await?;
				}
			}
			let ids: Vec<u64> = self.tracked.keys().copied().collect();
			for id in ids {
				self.tick(chain, id).await?;
			}
			// Jobs passed over for a passing reason (busy, an input not reachable yet) are
			// looked at again.
			let retry: Vec<u64> = self
				.passed
				.iter()
				.filter(|(_, at)| at.is_some_and(|b| b <= self.last_block))
				.map(|(id, _)| *id)
				.collect();
			for id in retry {
				self.passed.remove(&id);
				if let Some(job) = timed("Jobs", chain.job_at(id, self.last_block)).await? {
					self.consider(chain, id, &job).await?;
				}
			}
			if self.opts.exit_after.is_some_and(|n| self.settled.len() >= n) {
				tracing::info!("{} jobs settled; exiting as asked", self.settled.len());
				return Ok(());
			}
			tokio::time::sleep(Duration::from_millis(500)).await;
		}
	}

	/// Claims on chain are the truth: finds every unsettled claim of ours (after kill -9,
	/// with a lost data directory, or a claim whose transaction outlived its timeout).
	async fn rediscover(&mut self, chain: &Chain) -> Result<()> {
		let head = timed("finalized head", chain.finalized_number()).await?;
		for (id, job) in timed("Jobs", chain.all_jobs()).await? {
			if let Some(c) = my_claim(&job, &self.me) {
				if !c.state_is_terminal() && !self.tracked.contains_key(&id) && !self.job_dir(id).join("gave_up.txt").exists()
				{
					tracing::info!(job = id, state = state_name(&c.state), "found my claim on chain");
					self.track_or_give_up(id, &job, head).await?;
				}
			}
		}
		Ok(())
	}

	/// Starts tracking a claim of ours; a recipe that is bad for good gives the job up, one
	/// that cannot be fetched now is tried again later.
	async fn track_or_give_up(&mut self, id: u64, job: &molting_chain::Job, visible_from: u64) -> Result<()> {
		match self.track(id, job, visible_from).await {
			Ok(()) => Ok(()),
			Err(e) if is_connection(&e) => Err(e),
			Err(e) if is_passing(&e) => {
				tracing::warn!(job = id, "cannot fetch its recipe yet: {e:#}; trying again later");
				Ok(())
			},
			Err(e) => {
				self.give_up(id, &format!("{e:#}"));
				Ok(())
			},
		}
	}

	async fn ensure_registered(&self, chain: &Chain) -> Result<()> {
		let class = crate::backend_for(molting_engine::spec::Precision::Fp32)?.class();
		let caps = jobs::Capabilities { backend: bounded(class.as_bytes()), memory_mib: memory_mib() };
		let key = self.keys.worker.public_key().0;
		match timed("Jobs.Miners", chain.miner(&self.me)).await? {
			Some(m) if m.worker_key == self.keys.worker.public_key().0 && m.capabilities.backend.0 == caps.backend.0 && m.capabilities.memory_mib == caps.memory_mib => Ok(()),
			Some(_) => {
				let proof = molting_chain::key_proof(molting_chain::WORKER_KEY_CONTEXT, &self.keys.worker, &self.me.0);
				let call = runtime::tx().jobs().update_miner(Some((key, proof)), Some(caps));
				timed("update_miner", chain.submit("Jobs.update_miner", &call, &self.keys.account)).await?;
				tracing::info!(class, "updated my worker key and capabilities");
				Ok(())
			},
			None => {
				let proof = molting_chain::key_proof(molting_chain::WORKER_KEY_CONTEXT, &self.keys.worker, &self.me.0);
				let call = runtime::tx().jobs().register_miner(key, proof, caps);
				timed("register_miner", chain.submit("Jobs.register_miner", &call, &self.keys.account)).await?;
				tracing::info!(class, memory_mib = memory_mib(), "registered as a miner");
				Ok(())
			},
		}
	}

	async fn on_event(&mut self, chain: &Chain, event: JobEvent) -> Result<()> {
		match event {
			JobEvent::Posted { job_id } => {
				if let Some(job) = timed("Jobs", chain.job_at(job_id, self.last_block + 1)).await? {
					self.consider(chain, job_id, &job).await?;
				}
			},
			JobEvent::Claimed { job_id, miner } if miner == self.me && !self.tracked.contains_key(&job_id) => {
				// Ours, though we did not see the claim go through (a timed-out submission, or
				// one sent just before a kill -9).
				if let Some(job) = timed("Jobs", chain.job_at(job_id, self.last_block + 1)).await? {
					self.track_or_give_up(job_id, &job, self.last_block + 1).await?;
				}
			},
			JobEvent::Settled { job_id, miner, grade: "pass", paid, .. } if miner == self.me => {
				self.metrics.jobs_paid.inc();
				self.metrics.earnings_planck.add(paid as f64);
				tracing::info!(job = job_id, "the committee passed my result: paid {}", format_molt(paid));
				self.settle(job_id);
			},
			JobEvent::Settled { job_id, miner, grade, slashed, .. } if miner == self.me => {
				tracing::warn!(job = job_id, "the committee judged my result {grade}; {} of my collateral slashed", format_molt(slashed));
				self.settle(job_id);
			},
			JobEvent::Expired { job_id, miner, slashed, .. } if miner == self.me => {
				tracing::warn!(job = job_id, "claim expired undelivered; {} of my collateral slashed", format_molt(slashed));
				self.settle(job_id);
			},
			_ => {},
		}
		Ok(())
	}

	fn settle(&mut self, job_id: u64) {
		if let Some(mut t) = self.tracked.remove(&job_id) {
			t.stop();
			let _ = std::fs::write(t.dir.join("settled"), b"");
		}
		self.settled.insert(job_id);
	}

	fn job_dir(&self, id: u64) -> PathBuf {
		let chain: String = self.genesis.chars().take(16).collect();
		self.opts.data.join("chains").join(chain).join("jobs").join(id.to_string())
	}

	fn give_up(&mut self, id: u64, reason: &str) {
		tracing::warn!(job = id, "giving up this job: {reason}");
		let dir = self.job_dir(id);
		let _ = std::fs::create_dir_all(&dir);
		let _ = std::fs::write(dir.join("gave_up.txt"), reason);
		self.metrics.jobs_given_up.inc();
		if let Some(t) = self.tracked.get_mut(&id) {
			t.stop();
		}
	}

	/// The recipe this miner trains for job `id`: a compute job's, fetched and checked
	/// against the chain's fields; in a contest, its own within the bounds: for a claim on
	/// chain (`claimed`), the one recorded at claim time; otherwise `--contest-choice` over
	/// the bounds' suggestion (a record left by a claim that never landed is not reused).
	async fn fetch_recipe(&self, id: u64, job: &molting_chain::Job, claimed: bool) -> Result<Recipe> {
		let (steps, interval) = match &job.spec.work {
			jobs::Work::Contest { bounds, max_steps, max_checkpoint_interval } => {
				let bounds = self.fetch_bounds(id, bounds).await?;
				let recorded = self.job_dir(id).join("recipe.json");
				let recipe = match std::fs::read(&recorded).ok().filter(|_| claimed) {
					Some(bytes) => {
						let what = recorded.display().to_string();
						let recipe = Recipe::parse(&bytes, &what)?;
						bounds.check(&recipe, &what)?;
						recipe
					},
					None => bounds.choose(&self.opts.contest_choice, "--contest-choice").with_context(|| format!("job {id}"))?,
				};
				let t = &recipe.train;
				if t.steps > u64::from(*max_steps) || t.checkpoint_every > u64::from(*max_checkpoint_interval) {
					bail!(
						"job {id}: my recipe trains {} steps with a checkpoint every {}, but the chain allows at most {max_steps} and {max_checkpoint_interval}",
						t.steps,
						t.checkpoint_every
					);
				}
				return Ok(recipe);
			},
			jobs::Work::Compute { steps, checkpoint_interval, .. } => (*steps, *checkpoint_interval),
		};
		let (recipe_ref, _, _) = crate::job::compute_work(job).with_context(|| format!("job {id}"))?;
		let sha = hex::encode(recipe_ref.sha256);
		let uri = String::from_utf8_lossy(&recipe_ref.uri.0).into_owned();
		self.check_scheme(&uri)?;
		let path = self.cache.fetch(&uri, &sha, None).await.with_context(|| format!("job {id}: the recipe"))?;
		let bytes = std::fs::read(&path)?;
		let recipe = Recipe::parse(&bytes, &uri)?;
		let t = &recipe.train;
		if t.steps != u64::from(steps) || t.checkpoint_every != u64::from(interval) {
			bail!(
				"job {id}: the recipe trains {} steps with a checkpoint every {}, but the chain says {steps} and {interval}",
				t.steps,
				t.checkpoint_every,
			);
		}
		Ok(recipe)
	}

	/// A contest's bounds document, fetched by the hash the chain names.
	async fn fetch_bounds(&self, id: u64, bounds: &jobs::ContentRef) -> Result<Bounds> {
		let (sha, uri) = (hex::encode(bounds.sha256), String::from_utf8_lossy(&bounds.uri.0).into_owned());
		self.check_scheme(&uri)?;
		let path = self.cache.fetch(&uri, &sha, None).await.with_context(|| format!("job {id}: the contest's bounds"))?;
		let bytes = std::fs::read(&path).with_context(|| format!("job {id}: the contest's bounds, {}", path.display()))?;
		Ok(Bounds::parse(&bytes, &uri).with_context(|| format!("job {id}"))?)
	}

	/// `file://` URIs from a stranger's recipe are refused unless `--allow-file-uris`.
	fn check_scheme(&self, uri: &str) -> Result<()> {
		if uri.starts_with("file://") && !self.opts.allow_file_uris {
			bail!("{uri}: file:// URIs are refused from the chain (start the miner with --allow-file-uris on a dev chain)");
		}
		Ok(())
	}

	/// Fetches (and verifies) every input of `recipe` into the cache.
	async fn fetch_inputs(&self, recipe: &Recipe) -> Result<()> {
		for (what, blob) in recipe.inputs() {
			self.check_scheme(&blob.uri)?;
			self.cache.fetch(&blob.uri, &blob.sha256, Some(blob.size)).await.with_context(|| what.clone())?;
		}
		Ok(())
	}

	/// Decides whether to claim job `id`, and claims it. Only a lost connection is an
	/// error; anything else about the job passes it over (for good, or until a later block).
	async fn consider(&mut self, chain: &Chain, id: u64, job: &molting_chain::Job) -> Result<()> {
		if self.tracked.contains_key(&id) || self.passed.contains_key(&id) || self.settled.contains(&id) {
			return Ok(());
		}
		match self.consider_inner(chain, id, job).await {
			Ok(()) => Ok(()),
			Err(e) if is_connection(&e) => Err(e),
			Err(e) => {
				let retry = is_passing(&e).then_some(self.last_block + 10);
				tracing::info!(job = id, "not claiming: {e:#}");
				self.passed.insert(id, retry);
				Ok(())
			},
		}
	}

	async fn consider_inner(&mut self, chain: &Chain, id: u64, job: &molting_chain::Job) -> Result<()> {
		self.metrics.jobs_seen.inc();
		if my_claim(job, &self.me).is_some() {
			return self.track_or_give_up(id, job, self.last_block).await;
		}
		if !matches!(job.status, jobs::JobStatus::Open) || self.last_block > u64::from(job.deadlines.claim_by) {
			bail!("it is no longer open for claims");
		}
		if job.claims.0.len() >= usize::from(job.spec.replication) {
			bail!("every replica is claimed");
		}
		// One job at a time: the time estimate below assumes this machine is otherwise idle.
		let training = |t: &Tracked| !t.dir.join("delivery.json").exists() && !t.dir.join("gave_up.txt").exists();
		if let Some(busy) = self.tracked.iter().find(|(_, t)| training(t)).map(|(id, _)| *id) {
			tracing::info!(job = id, "not claiming: busy with job {busy}; looking again in 5 blocks");
			self.passed.insert(id, Some(self.last_block + 5));
			return Ok(());
		}
		// Never claim what cannot be fetched and checked first.
		let recipe = self.fetch_recipe(id, job, false).await?;
		let per_step = job.reward_per_result / u128::from(recipe.train.steps.max(1));
		if per_step < self.opts.min_reward_per_step {
			bail!(
				"it pays {} per step, below my --min-reward of {}",
				format_molt(per_step),
				format_molt(self.opts.min_reward_per_step)
			);
		}
		let req = &job.spec.requirements;
		if req.min_memory_mib > memory_mib() {
			bail!("it needs {} MiB, this machine has {}", req.min_memory_mib, memory_mib());
		}
		let backend = backend_for_recipe(&recipe)?;
		if let Some(class) = &req.backend {
			if class.0 != backend.class().as_bytes() {
				let want = String::from_utf8_lossy(&class.0).into_owned();
				bail!("it requires class {want}; this worker trains its recipe on {}", backend.class());
			}
		}
		train::check_rows(&recipe.train, backend.as_ref())?;
		self.fetch_inputs(&recipe).await?;
		// Will it finish in time? One real step, timed. A probe that never came back (the
		// recipe crashed or hung this process) is not tried again.
		let dir = self.job_dir(id);
		std::fs::create_dir_all(&dir)?;
		let probing = dir.join("probing");
		if probing.exists() {
			bail!("a probe of its recipe did not finish before (it crashed or hung this miner)");
		}
		std::fs::write(&probing, b"")?;
		let seed = miner_seed(recipe.train.seed, id, &self.keys.account.public_key().0);
		let sha = hex::encode(recipe.sha256());
		let secs_per_step = self.probe(&recipe, &sha, seed).await.context("the recipe does not train here")?;
		let _ = std::fs::remove_file(&probing);
		let block_ms = timed("block time", chain.block_time_ms()).await?.unwrap_or(6000).max(1);
		// The deadline as of now (fetching and probing took time), training plus a margin
		// for evaluation and publishing.
		let now = timed("finalized head", chain.finalized_number()).await?;
		let left_s = u64::from(job.deadlines.submit_by).saturating_sub(now) as f64 * block_ms as f64 / 1000.0;
		let need_s = recipe.train.steps as f64 * secs_per_step * 1.25 + 30.0;
		if need_s > left_s {
			bail!("it needs about {need_s:.0} s here ({secs_per_step:.2} s/step), {left_s:.0} s are left before submit_by");
		}
		if now > u64::from(job.deadlines.claim_by) {
			bail!("its claim period ended while it was being checked");
		}
		record_claim(&dir, id, &recipe, seed)?;
		let call = runtime::tx().jobs().claim_job(id);
		match timed("claim_job", chain.submit("Jobs.claim_job", &call, &self.keys.account)).await {
			Ok((block, _)) => {
				let visible_from = block;
				self.metrics.jobs_claimed.inc();
				tracing::info!(
					job = id,
					block,
					"claimed: {} steps, reward {}, about {need_s:.0} s of training",
					recipe.train.steps,
					format_molt(job.reward_per_result)
				);
				self.tracked.insert(id, Tracked::new(dir, recipe, seed, visible_from));
			},
			Err(e) => match e.downcast_ref::<ChainError>() {
				Some(ChainError::Dispatch { error, .. }) if error.contains("AlreadyClaimed") => {
					let visible_from = timed("finalized head", chain.finalized_number()).await?;
					self.tracked.insert(id, Tracked::new(dir, recipe, seed, visible_from));
				},
				Some(ChainError::Dispatch { error, .. }) => {
					// recipe.json stays: a claim that did land after all (an earlier, timed-out
					// try filled the job) trains it; a later look at an unclaimed job ignores it
					// and records afresh before claiming.
					let _ = std::fs::remove_file(dir.join("claim.json"));
					bail!("the claim failed: {error}");
				},
				// Not known whether it landed: the JobClaimed event (or the next look) tells.
				_ => {
					tracing::warn!(job = id, "claim_job: {e:#}; looking again in 3 blocks");
					self.passed.insert(id, Some(self.last_block + 3));
				},
			},
		}
		Ok(())
	}

	/// Seconds one training step of `recipe` takes here (measured once per recipe).
	async fn probe(&self, recipe: &Recipe, sha: &str, seed: u64) -> Result<f64> {
		if let Some(s) = self.step_seconds.lock().unwrap_or_else(|e| e.into_inner()).get(sha) {
			return Ok(*s);
		}
		let recipe = recipe.clone();
		let cache = self.cache.dir().to_path_buf();
		let secs = tokio::task::spawn_blocking(move || -> Result<f64> {
			let job = Job::from_recipe(recipe, seed, &LocalInputs { cache })?;
			let backend = backend_for_recipe(&job.recipe)?;
			let mut state = job.initial_state(backend.as_ref());
			let t0 = Instant::now();
			job.step(backend.as_ref(), &mut state);
			Ok(t0.elapsed().as_secs_f64())
		})
		.await??;
		self.step_seconds.lock().unwrap_or_else(|e| e.into_inner()).insert(sha.to_string(), secs);
		Ok(secs)
	}

	/// Starts tracking a claim of ours found on chain.
	async fn track(&mut self, id: u64, job: &molting_chain::Job, visible_from: u64) -> Result<()> {
		let recipe = self.fetch_recipe(id, job, true).await?;
		let seed = miner_seed(recipe.train.seed, id, &self.keys.account.public_key().0);
		let dir = self.job_dir(id);
		record_claim(&dir, id, &recipe, seed)?;
		self.tracked.insert(id, Tracked::new(dir, recipe, seed, visible_from));
		Ok(())
	}

	/// Moves one claimed job on, as of the last handled block.
	async fn tick(&mut self, chain: &Chain, id: u64) -> Result<()> {
		if self.tracked.get(&id).is_some_and(|t| self.last_block < t.visible_from) {
			return Ok(());
		}
		let job = timed("Jobs", chain.job_at(id, self.last_block)).await?;
		let Some(job) = job.filter(|j| my_claim(j, &self.me).is_some()) else {
			tracing::warn!(job = id, "no claim of mine on chain any more; forgetting it");
			if let Some(mut t) = self.tracked.remove(&id) {
				t.stop();
			}
			return Ok(());
		};
		let claim = my_claim(&job, &self.me).expect("filtered above");
		let state = state_name(&claim.state);
		let Some(t) = self.tracked.get_mut(&id) else { return Ok(()) };
		if t.logged != state {
			if !t.logged.is_empty() || state != "working" {
				tracing::info!(job = id, "claim is {state}");
			}
			t.logged = state;
		}
		match &claim.state {
			jobs::ClaimState::Working => {},
			jobs::ClaimState::Judged { .. } | jobs::ClaimState::Expired => {
				self.settle(id);
				return Ok(());
			},
			_ => return Ok(()),
		}
		let dir = t.dir.clone();
		if dir.join("gave_up.txt").exists() || self.last_block < t.retry_at {
			return Ok(());
		}
		if self.last_block > u64::from(job.deadlines.submit_by) {
			self.give_up(id, "the submission deadline passed");
			return Ok(());
		}
		if let Ok(bytes) = std::fs::read(dir.join("delivery.json")) {
			let d: Delivery = serde_json::from_slice(&bytes).context("delivery.json")?;
			// The hash signed, not the tracked recipe's: they differ only if recipe.json was
			// lost or changed after the signature, and the chain checks the signed bytes.
			let recipe_sha256 = match d.recipe_sha256.as_str() {
				"" => t.recipe.sha256(),
				h => hex32(h, "delivery.json recipe_sha256")?,
			};
			return self.submit(chain, id, recipe_sha256, d).await;
		}
		// Training (or publishing) in flight?
		if let Some(task) = &t.task {
			if !task.is_finished() {
				return Ok(());
			}
			let task = t.task.take().expect("checked above");
			match task.await {
				Ok(Ok(())) => {},
				Ok(Err(e)) if is_passing(&e) => self.retry_later(id, &format!("{e:#}")),
				Ok(Err(e)) => self.give_up(id, &format!("{e:#}")),
				Err(e) if e.is_cancelled() => {},
				Err(e) => self.give_up(id, &format!("the training task failed: {e}")),
			}
			return Ok(());
		}
		if let Some(original) = self.opts.copy_from.clone() {
			return self.copy_delivery(chain, id, &job, &original, &dir).await;
		}
		// Inputs first (a restart may find the cache gone): a bad input gives the job up, and
		// the owner is refunded at the deadline; an unreachable one is tried again.
		let recipe = t.recipe.clone();
		let seed = t.seed;
		if let Err(e) = self.fetch_inputs(&recipe).await {
			if is_passing(&e) {
				self.retry_later(id, &format!("{e:#}"));
			} else {
				self.give_up(id, &format!("{e:#}"));
			}
			return Ok(());
		}
		let task = tokio::spawn(work(WorkContext {
			job_id: id,
			dir,
			recipe_sha256: hex::encode(recipe.sha256()),
			publish_recipe: matches!(job.spec.work, jobs::Work::Contest { .. }),
			recipe,
			seed,
			cache: self.cache.dir().to_path_buf(),
			publisher: self.publisher.clone(),
			worker: self.keys.worker.clone(),
			miner: self.keys.account.public_key().0,
			genesis: chain.genesis_hash(),
			metrics: self.metrics.clone(),
			step_seconds: self.step_seconds.clone(),
			fake_after: self.opts.fake_after,
		}));
		if let Some(t) = self.tracked.get_mut(&id) {
			t.task = Some(task);
		}
		Ok(())
	}

	/// `--copy-from`: once `original` has delivered job `id`, signs its attestation with
	/// this miner's worker key as this miner's own, records it in `delivery.json` and
	/// submits it. Its recipe, root and result are the original's; the seed the validators
	/// replay under is this miner's, so checkpoint 0 cannot match.
	async fn copy_delivery(&mut self, chain: &Chain, id: u64, job: &molting_chain::Job, original: &AccountId32, dir: &Path) -> Result<()> {
		let delivered = job.claims.0.iter().find(|c| &c.miner == original).and_then(|c| match &c.state {
			jobs::ClaimState::Submitted { delivery } => Some(delivery),
			_ => None,
		});
		let Some(d) = delivered else { return Ok(()) };
		let attestation = Attestation {
			job_id: id,
			genesis_hash: chain.genesis_hash(),
			miner: self.me.0,
			recipe_sha256: d.recipe_sha256,
			result_sha256: d.result.sha256,
			result_uri: d.result.uri.0.clone(),
			checkpoint_root: d.checkpoint_root,
			steps: d.steps,
			checkpoint_interval: d.checkpoint_interval,
			final_train_loss_ppm: d.final_train_loss_ppm,
		};
		let signature = self.keys.worker.sign(&molting_chain::attestation_message(&attestation));
		let delivery = Delivery {
			job_id: id,
			result_sha256: hex::encode(d.result.sha256),
			result_uri: String::from_utf8_lossy(&d.result.uri.0).into_owned(),
			checkpoint_root: hex::encode(d.checkpoint_root),
			steps: d.steps,
			checkpoint_interval: d.checkpoint_interval,
			final_train_loss_ppm: d.final_train_loss_ppm,
			recipe_sha256: hex::encode(d.recipe_sha256),
			signature: hex::encode(signature.0),
		};
		tracing::warn!(job = id, "attesting {original}'s result as mine (--copy-from)");
		molting_engine::checkpoint::write_atomic(&dir.join("delivery.json"), &serde_json::to_vec_pretty(&delivery)?)?;
		self.submit(chain, id, d.recipe_sha256, delivery).await
	}

	fn retry_later(&mut self, id: u64, reason: &str) {
		tracing::warn!(job = id, "{reason}; trying again in 5 blocks");
		let at = self.last_block + 5;
		if let Some(t) = self.tracked.get_mut(&id) {
			t.retry_at = at;
		}
	}

	async fn submit(&mut self, chain: &Chain, id: u64, recipe_sha256: [u8; 32], d: Delivery) -> Result<()> {
		let signature: [u8; 64] = hex::decode(&d.signature)
			.ok()
			.and_then(|b| b.try_into().ok())
			.ok_or_else(|| anyhow!("delivery.json: bad signature"))?;
		let attestation = jobs::Attestation {
			job_id: id,
			genesis_hash: subxt::utils::H256(chain.genesis_hash()),
			miner: self.me.clone(),
			recipe_sha256,
			result_sha256: hex32(&d.result_sha256, "delivery.json")?,
			result_uri: bounded(d.result_uri.as_bytes()),
			checkpoint_root: hex32(&d.checkpoint_root, "delivery.json")?,
			steps: d.steps,
			checkpoint_interval: d.checkpoint_interval,
			final_train_loss_ppm: d.final_train_loss_ppm,
		};
		let call = runtime::tx().jobs().submit_result(
			id,
			attestation,
			signature,
		);
		match timed("submit_result", chain.submit("Jobs.submit_result", &call, &self.keys.account)).await {
			Ok((block, _)) => {
				self.metrics.jobs_delivered.inc();
				tracing::info!(job = id, block, result = %d.result_sha256, "attestation landed");
				Ok(())
			},
			Err(e) => match e.downcast_ref::<ChainError>() {
				// An earlier submission landed after all (its wait timed out, or we were
				// killed while it was in the pool): the chain state says so next block.
				Some(ChainError::Dispatch { error, .. }) if error.contains("NotWorking") => {
					tracing::info!(job = id, "the result was submitted already");
					Ok(())
				},
				Some(ChainError::Dispatch { error, .. }) => {
					self.give_up(id, &format!("the chain refused the result: {error}"));
					Ok(())
				},
				_ => Err(e),
			},
		}
	}
}

/// Whether `e` is the connection to the node failing (reconnect and carry on).
fn is_connection(e: &anyhow::Error) -> bool {
	e.chain().any(|c| c.downcast_ref::<ChainError>().is_some_and(ChainError::is_connection))
}

/// Whether `e` may pass by itself (a store or server not reachable now), as opposed to a
/// verdict on the job (a hash that does not match, a recipe that is invalid or refused).
fn is_passing(e: &anyhow::Error) -> bool {
	e.chain().any(|c| {
		matches!(c.downcast_ref::<FetchError>(), Some(FetchError::Unreachable { .. } | FetchError::Io { .. }))
			|| c.downcast_ref::<molting_store::PublishError>().is_some()
	})
}

trait ClaimStateExt {
	fn state_is_terminal(&self) -> bool;
}

impl ClaimStateExt for jobs::Claim<AccountId32, u128, u32> {
	fn state_is_terminal(&self) -> bool {
		matches!(self.state, jobs::ClaimState::Judged { .. } | jobs::ClaimState::Expired)
	}
}

struct WorkContext {
	job_id: u64,
	dir: PathBuf,
	recipe: Recipe,
	recipe_sha256: String,
	/// A contest: the miner's own recipe goes to the store beside the result.
	publish_recipe: bool,
	seed: u64,
	cache: PathBuf,
	publisher: Publisher,
	worker: subxt_signer::sr25519::Keypair,
	miner: [u8; 32],
	genesis: [u8; 32],
	metrics: Arc<Metrics>,
	step_seconds: Arc<std::sync::Mutex<BTreeMap<String, f64>>>,
	fake_after: Option<u64>,
}

/// Trains (or resumes) a claimed job, publishes its outputs, signs the attestation and
/// writes `delivery.json`.
async fn work(cx: WorkContext) -> Result<()> {
	let run = cx.dir.join("run");
	let (recipe, seed, cache, metrics, id) = (cx.recipe.clone(), cx.seed, cx.cache.clone(), cx.metrics.clone(), cx.job_id);
	let step_seconds = cx.step_seconds.clone();
	let cx_fake_after = cx.fake_after;
	let sha = cx.recipe_sha256.clone();
	let run2 = run.clone();
	tokio::task::spawn_blocking(move || -> Result<()> {
		if run2.join("summary.json").exists() {
			// Trained before (publishing failed, or the miner died after training).
			return Ok(());
		}
		let inputs = LocalInputs { cache };
		let resuming = Manifest::path(&run2).exists();
		let job = if resuming {
			let job = Job::from_run_with(&run2, &inputs)?;
			if job.seed != seed || job.recipe != recipe {
				bail!("{}: a run of another recipe or seed is in the way", run2.display());
			}
			job
		} else {
			// A run killed before its first checkpoint left nothing worth keeping.
			let _ = std::fs::remove_dir_all(&run2);
			Job::from_recipe(recipe, seed, &inputs)?
		};
		let backend = backend_for_recipe(&job.recipe)?;
		let total = job.recipe.train.steps;
		let pb = crate::progress_if_terminal(total, if resuming { Manifest::load(&run2)?.steps.last().copied().unwrap_or(0) } else { 0 });
		let every = job.recipe.train.checkpoint_every;
		let mut on_step = |r: &train::StepReport| {
			metrics.training_steps.inc();
			metrics.tokens_per_second.set(r.tokens as f64 / r.seconds.max(1e-9));
			step_seconds.lock().unwrap_or_else(|e| e.into_inner()).insert(sha.clone(), r.seconds);
			if let Some(pb) = &pb {
				pb.set_position(r.step);
				pb.set_message(format!("loss {:.4}", r.loss));
			} else if r.step % every == 0 || r.step == total {
				tracing::info!(job = id, step = r.step, of = total, loss = format!("{:.4}", r.loss), "training");
			}
		};
		let opts = RunOptions { stop_after: cx_fake_after, on_step: Some(&mut on_step) };
		if resuming {
			tracing::info!(job = id, "resuming from the last checkpoint in {}", run2.display());
			train::resume_job(&job, &run2, backend.as_ref(), opts)?;
		} else {
			tracing::info!(job = id, steps = total, class = %backend.class(), "training");
			train::train(&job, &run2, backend.as_ref(), opts)?;
		}
		if let Some(pb) = pb {
			pb.finish_and_clear();
		}
		if cx_fake_after.is_some() && !run2.join("summary.json").exists() {
			tracing::warn!(job = id, "fabricating the checkpoints after step {} (--fake-after)", cx_fake_after.unwrap_or(0));
			molting_engine::testing::fabricate_rest(&job, &run2, backend.as_ref())?;
		}
		Ok(())
	})
	.await??;
	let summary: train::Summary = serde_json::from_slice(&std::fs::read(run.join("summary.json"))?)?;
	let recipe_uri = match cx.publish_recipe {
		true => Some(cx.publisher.put(cx.recipe.to_canonical()).await?.1),
		false => None,
	};
	let (_, blob) = crate::result::publish_run(&cx.publisher, &run, cx.job_id, &cx.recipe_sha256, recipe_uri).await?;
	let final_loss = last_loss(&run.join("metrics.jsonl")).unwrap_or(0.0);
	let root = hex32(&summary.merkle_root, "summary.json merkle_root")?;
	let result_sha256 = hex32(&blob.sha256, "the result's hash")?;
	let recipe_sha256 = hex32(&cx.recipe_sha256, "the recipe's hash")?;
	let attestation = Attestation {
		job_id: cx.job_id,
		genesis_hash: cx.genesis,
		miner: cx.miner,
		recipe_sha256,
		result_sha256,
		result_uri: blob.uri.as_bytes().to_vec(),
		checkpoint_root: root,
		steps: u32::try_from(summary.steps).context("steps")?,
		checkpoint_interval: u32::try_from(cx.recipe.train.checkpoint_every).context("checkpoint_every")?,
		final_train_loss_ppm: (final_loss * 1e6).round().clamp(0.0, u32::MAX as f64) as u32,
	};
	let signature = cx.worker.sign(&molting_chain::attestation_message(&attestation));
	let delivery = Delivery {
		job_id: cx.job_id,
		result_sha256: blob.sha256.clone(),
		result_uri: blob.uri.clone(),
		checkpoint_root: summary.merkle_root.clone(),
		steps: attestation.steps,
		checkpoint_interval: attestation.checkpoint_interval,
		final_train_loss_ppm: attestation.final_train_loss_ppm,
		recipe_sha256: cx.recipe_sha256.clone(),
		signature: hex::encode(signature.0),
	};
	tracing::info!(
		job = cx.job_id,
		result = %blob.sha256,
		merkle_root = %summary.merkle_root,
		final_state = %summary.final_state_hash,
		"trained and published; submitting"
	);
	molting_engine::checkpoint::write_atomic(&cx.dir.join("delivery.json"), &serde_json::to_vec_pretty(&delivery)?)?;
	Ok(())
}

fn last_loss(metrics: &Path) -> Option<f64> {
	let text = std::fs::read_to_string(metrics).ok()?;
	let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
	serde_json::from_str::<serde_json::Value>(last).ok()?["loss"].as_f64()
}
