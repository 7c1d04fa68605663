//! `molt-worker validate`: serves this validator's seats on committees
//! (pallet-contribution's README has the protocol).
//!
//! ```text
//!  every finalised block:
//!    registered? ── no ──▶ register_validator(report key, its proof of possession, --bond)
//!    for each case with a seat of mine (Contribution.Cases at that block):
//!      report.json on disk? ── no, and the eval set is out (or its reveal period over)
//!          ──▶ judge every result (below) ─▶ report.json + salt, written before anything is sent
//!      not committed and block <= commit_by ──▶ commit_report(H(report ‖ salt ‖ me), signed by my report key)
//!      committed, not revealed, block <= judge_by, and commit_by passed or every seat committed
//!          ──▶ reveal_report(report, salt)
//!
//!  judging result i (the job's delivered claims, in claim order):
//!    result manifest (job, recipe, root) ─▶ a contest's result: its own recipe, fetched by the attested
//!    hash from the manifest's recipe_uri, within the bounds (else OutOfBounds) ─▶ checkpoint manifest (its Merkle root is the attested one,
//!    one leaf per checkpoint, each file named by its leaf) ─▶ checkpoint 0 == the recipe's initial state
//!    under the miner's seed ─▶ every drawn segment s: checkpoint s replayed to s+1, bit for bit
//!    ─▶ the PEFT adapter == the export of the last checkpoint ─▶ eval loss and bits per byte of the
//!    base model and of the adapter on the revealed set
//! ```
//!
//! Everything a seat needs to finish lives under `<data>/chains/<genesis>/cases/<job>-<round>/`,
//! so a kill -9 at any point resumes where it stopped: the report and salt are never
//! recomputed once written (a second report would not match the commitment).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use molting_chain::contribution::{Fault, Replay, Report, ResultReport};
use molting_chain::keystore::{self, Keystore};
use molting_chain::{account_of, format_molt, jobs, runtime, Case, Chain, ChainError};
use molting_engine::bounds::Bounds;
use molting_engine::checkpoint::{merkle_root, Manifest};
use molting_engine::recipe::{miner_seed, LocalInputs, Recipe};
use molting_engine::train::{self, Job};
use molting_store::{Cache, FetchError};
use sha2::Digest;
use subxt::utils::AccountId32;

use crate::result::{ResultManifest, PEFT_FILES};

pub struct ValidateOptions {
	pub node: String,
	pub keystore: PathBuf,
	pub data: PathBuf,
	/// Self-bond to register with, in planck.
	pub bond: u128,
	pub prometheus_port: Option<u16>,
	pub max_blob: u64,
	pub exit_after: Option<usize>,
	pub allow_file_uris: bool,
	/// Tests only: report every replay as failed (a validator lying about honest work).
	pub report_fail: bool,
}

/// Prometheus metrics of a validator (`molting_validator_*`).
pub struct Metrics {
	registry: prometheus::Registry,
	seats: prometheus::IntCounter,
	results_judged: prometheus::IntCounter,
	replay_failures: prometheus::IntCounter,
	commits: prometheus::IntCounter,
	reveals: prometheus::IntCounter,
	segments_replayed: prometheus::IntCounter,
}

impl Metrics {
	fn new() -> Metrics {
		let registry = prometheus::Registry::new_custom(Some("molting_validator".into()), None).expect("a valid prefix");
		let counter = |name: &str, help: &str| {
			let c = prometheus::IntCounter::new(name, help).expect("a valid metric");
			registry.register(Box::new(c.clone())).expect("registered once");
			c
		};
		Metrics {
			seats: counter("seats_total", "Seats on committees served."),
			results_judged: counter("results_judged_total", "Results replayed and scored."),
			replay_failures: counter("replay_failures_total", "Results whose replay failed a check."),
			commits: counter("commits_total", "Report commitments landed."),
			reveals: counter("reveals_total", "Reports revealed."),
			segments_replayed: counter("segments_replayed_total", "Checkpoint segments replayed."),
			registry,
		}
	}
}

impl crate::metrics::Gather for Metrics {
	fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
		self.registry.gather()
	}
}

/// What a seat keeps on disk: its report and salt, once computed.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedReport {
	job_id: u64,
	round: u8,
	/// [`fingerprint`] of the case it was made for: a dev chain restarted with the same
	/// genesis has another case 0, and must not get this one's report.
	case: String,
	base_loss_ppm: Option<u32>,
	results: Vec<SavedEntry>,
	salt: String,
	/// For people: each result's verdict and why.
	findings: Vec<String>,
}

struct Validator {
	opts: ValidateOptions,
	keys: Keystore,
	me: AccountId32,
	cache: Cache,
	metrics: Arc<Metrics>,
	genesis: String,
	/// Seats revealed, and so done with (by case fingerprint).
	revealed: BTreeSet<String>,
	/// Seats found hopeless (too late, or a result this worker cannot judge), not retried.
	abandoned: BTreeSet<String>,
}

pub async fn validate(opts: ValidateOptions) -> Result<()> {
	let keys = Keystore::open(&opts.keystore)?;
	let me = account_of(&keys.account);
	let cache = Cache::new(opts.data.join("cache"), opts.max_blob);
	let metrics = Arc::new(Metrics::new());
	if let Some(port) = opts.prometheus_port {
		let addr = crate::metrics::serve(metrics.clone(), port).await.context("prometheus port")?;
		tracing::info!("metrics on http://{addr}/metrics");
	}
	tracing::info!(account = %me, report_key = %hex::encode(keys.worker.public_key().0), "validator starting");
	let mut v = Validator {
		opts,
		keys,
		me,
		cache,
		metrics,
		genesis: String::new(),
		revealed: BTreeSet::new(),
		abandoned: BTreeSet::new(),
	};
	loop {
		let chain = Chain::connect_with_backoff(&v.opts.node, Duration::from_secs(u64::MAX / 4)).await?;
		tracing::info!(node = %v.opts.node, "connected");
		match v.session(&chain).await {
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

fn is_connection(e: &anyhow::Error) -> bool {
	e.chain().any(|c| c.downcast_ref::<ChainError>().is_some_and(ChainError::is_connection))
}

/// Something that may pass by itself (a store or server not reachable now, this machine's
/// disk): the case is tried again on a later block, never reported as the miner's fault.
#[derive(Debug)]
struct NotNow(String);

impl std::fmt::Display for NotNow {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.write_str(&self.0)
	}
}

impl std::error::Error for NotNow {}

fn is_not_now(e: &anyhow::Error) -> bool {
	e.chain().any(|c| c.downcast_ref::<NotNow>().is_some())
}

/// Whether a fetch failed for a reason that may pass (or that is this machine's own: its
/// size cap), as opposed to a blob that is not what it is named.
fn transient(e: &FetchError) -> bool {
	matches!(e, FetchError::Unreachable { .. } | FetchError::Io { .. } | FetchError::TooLarge { .. })
}

/// What identifies a case: its job, round, eval commitment, deadlines and drawn segments.
fn fingerprint(genesis: &str, id: u64, case: &Case) -> String {
	let mut h = sha2::Sha256::new();
	h.update(genesis.as_bytes());
	h.update(id.to_le_bytes());
	h.update([case.round]);
	h.update(case.eval_commitment);
	for d in [case.reveal_by, case.commit_by, case.judge_by] {
		h.update(d.to_le_bytes());
	}
	for segments in &case.segments.0 {
		h.update((segments.0.len() as u32).to_le_bytes());
		for s in &segments.0 {
			h.update(s.to_le_bytes());
		}
	}
	hex::encode(h.finalize())
}

impl Validator {
	async fn session(&mut self, chain: &Chain) -> Result<()> {
		let genesis = hex::encode(chain.genesis_hash());
		if self.genesis != genesis {
			if !self.genesis.is_empty() {
				tracing::warn!("the node is on another chain (genesis {genesis}); forgetting the old one's cases");
				self.revealed.clear();
				self.abandoned.clear();
			}
			self.genesis = genesis;
		}
		self.ensure_registered(chain).await?;
		let mut last = 0u64;
		loop {
			let head = timed("finalized head", chain.finalized_number()).await?;
			if head != last {
				last = head;
				for (id, case) in timed("Contribution.Cases", chain.cases_at(head)).await? {
					if case.seats.0.iter().any(|s| s.validator == self.me) {
						// One case's trouble (a full disk, a bad file) must not keep the
						// others from being served; only a lost connection ends the session.
						if let Err(e) = self.serve(chain, id, &case, head).await {
							if is_connection(&e) {
								return Err(e);
							}
							tracing::error!(job = id, "{e:#}; trying again next block");
						}
					}
				}
			}
			if self.opts.exit_after.is_some_and(|n| self.revealed.len() >= n) {
				tracing::info!("{} reports revealed; exiting as asked", self.revealed.len());
				return Ok(());
			}
			tokio::time::sleep(Duration::from_millis(500)).await;
		}
	}

	async fn ensure_registered(&self, chain: &Chain) -> Result<()> {
		let key = self.keys.worker.public_key().0;
		match timed("Contribution.Validators", chain.validator(&self.me)).await? {
			Some(v) if v.report_key == key => {
				if !v.active {
					tracing::warn!("registered but not in the active set (left, displaced, or slashed below the minimum bond): no new seats");
				}
				Ok(())
			},
			Some(_) => bail!("{} is registered with another report key than this keystore's", self.me),
			None => {
				let proof = molting_chain::key_proof(molting_chain::REPORT_KEY_CONTEXT, &self.keys.worker, &self.me.0);
				let call = runtime::tx().contribution().register_validator(key, proof, self.opts.bond);
				timed("register_validator", chain.submit("Contribution.register_validator", &call, &self.keys.account)).await?;
				tracing::info!(bond = %format_molt(self.opts.bond), "registered as a validator");
				Ok(())
			},
		}
	}

	fn case_dir(&self, id: u64, round: u8) -> PathBuf {
		let chain: String = self.genesis.chars().take(16).collect();
		self.opts.data.join("chains").join(chain).join("cases").join(format!("{id}-{round}"))
	}

	/// Moves one seat on as far as block `head` allows.
	async fn serve(&mut self, chain: &Chain, id: u64, case: &Case, head: u64) -> Result<()> {
		let round = case.round;
		// Keyed by the case's fingerprint: a dev chain restarted under the same genesis has
		// another case with the same job id and round.
		let print = fingerprint(&self.genesis, id, case);
		let key = print.clone();
		if self.revealed.contains(&key) || self.abandoned.contains(&key) {
			return Ok(());
		}
		let Some(seat) = case.seats.0.iter().find(|s| s.validator == self.me) else { return Ok(()) };
		if seat.revealed {
			self.revealed.insert(key);
			return Ok(());
		}
		let dir = self.case_dir(id, round);
		let saved_path = dir.join("report.json");
		let (commit_by, judge_by, reveal_by) = (u64::from(case.commit_by), u64::from(case.judge_by), u64::from(case.reveal_by));
		if saved_path.exists() && seat.commitment.is_none() {
			let stale = serde_json::from_slice::<SavedReport>(&std::fs::read(&saved_path)?).map_or(true, |s| s.case != print);
			if stale {
				tracing::warn!(job = id, round, "{} is of another case (a restarted chain?); judging this one afresh", saved_path.display());
				std::fs::remove_file(&saved_path)?;
			}
		}
		if !saved_path.exists() {
			if seat.commitment.is_some() {
				// Committed by an earlier run whose report is gone: it cannot be revealed.
				tracing::error!(job = id, round, "committed, but {} is gone: this seat cannot reveal", saved_path.display());
				self.abandoned.insert(key);
				return Ok(());
			}
			if case.eval.is_none() && head <= reveal_by {
				return Ok(()); // the owner may still reveal its eval set
			}
			if head > commit_by {
				tracing::warn!(job = id, round, "the commit window closed before my report was ready");
				self.abandoned.insert(key);
				return Ok(());
			}
			// The last blocks of the commit window: what is unreachable now counts as such.
			let last_chance = head + 2 >= commit_by;
			tracing::info!(job = id, round, results = case.segments.0.len(), "judging");
			match self.judge(chain, id, case, head, &dir, last_chance, print).await {
				Ok(saved) => {
					self.metrics.seats.inc();
					std::fs::create_dir_all(&dir)?;
					keystore::write_secret(&saved_path, &serde_json::to_vec_pretty(&saved)?)?;
					for f in &saved.findings {
						tracing::info!(job = id, "{f}");
					}
				},
				Err(e) if is_connection(&e) => return Err(e),
				Err(e) if is_not_now(&e) => {
					tracing::warn!(job = id, round, "not judged yet: {e:#}; trying again next block");
					return Ok(());
				},
				Err(e) => {
					tracing::error!(job = id, round, "cannot judge this case: {e:#}");
					self.abandoned.insert(key);
					return Ok(());
				},
			}
		}
		let saved: SavedReport = serde_json::from_slice(&std::fs::read(&saved_path)?).with_context(|| saved_path.display().to_string())?;
		let report = from_saved(saved.base_loss_ppm, &saved.results)?;
		let salt: [u8; 32] = hex::decode(&saved.salt).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| anyhow!("{}: a bad salt", saved_path.display()))?;
		let me: [u8; 32] = self.me.0;
		let commitment = molting_chain::report_commitment(id, round, &me, &report, &salt);
		if seat.commitment.is_some_and(|c| c != commitment) {
			tracing::error!(
				job = id,
				round,
				"the commitment on chain is not of the report in {} (another process on this account?): this seat cannot reveal",
				saved_path.display()
			);
			self.abandoned.insert(key);
			return Ok(());
		}
		if seat.commitment.is_none() {
			if head > commit_by {
				tracing::warn!(job = id, round, "the commit window closed before my commitment landed");
				self.abandoned.insert(key);
				return Ok(());
			}
			let message = molting_chain::commit_message(&chain.genesis_hash(), id, round, &me, &commitment);
			let signature = self.keys.worker.sign(&message);
			let call = runtime::tx().contribution().commit_report(id, self.me.clone(), commitment, signature.0);
			match timed("commit_report", chain.submit("Contribution.commit_report", &call, &self.keys.account)).await {
				Ok((block, _)) => {
					self.metrics.commits.inc();
					tracing::info!(job = id, round, block, "committed to my report");
				},
				Err(e) if is_connection(&e) => return Err(e),
				Err(e) => tracing::warn!(job = id, round, "commit_report: {e:#}"),
			}
			return Ok(());
		}
		let all_committed = case.seats.0.iter().all(|s| s.commitment.is_some());
		if (head > commit_by || all_committed) && head <= judge_by {
			let call = runtime::tx().contribution().reveal_report(id, self.me.clone(), report, salt);
			match timed("reveal_report", chain.submit("Contribution.reveal_report", &call, &self.keys.account)).await {
				Ok((block, _)) => {
					self.metrics.reveals.inc();
					self.revealed.insert(key);
					tracing::info!(job = id, round, block, "revealed my report");
				},
				Err(e) if is_connection(&e) => return Err(e),
				Err(e) => tracing::warn!(job = id, round, "reveal_report: {e:#}"),
			}
		}
		Ok(())
	}

	/// Fetches, replays and scores every result of case `id`; returns the report to commit.
	/// What cannot be fetched now is [`NotNow`] (tried again later) until `last_chance`,
	/// when it is the result's fault (or, for the eval set, the owner's: the results are
	/// then judged on replay alone).
	#[allow(clippy::too_many_arguments)]
	async fn judge(&self, chain: &Chain, id: u64, case: &Case, head: u64, dir: &Path, last_chance: bool, print: String) -> Result<SavedReport> {
		let job = timed("Jobs", chain.job_at(id, head)).await?.ok_or_else(|| anyhow!("job {id} is gone"))?;
		let not_now = |what: &str| {
			let what = what.to_string();
			move |e: FetchError| -> anyhow::Error {
				if transient(&e) { NotNow(format!("{what}: {e}")).into() } else { anyhow::Error::from(e).context(what) }
			}
		};
		// What every result is judged against: a compute job's recipe; or a contest's bounds,
		// each result naming its own recipe within them (the bounds' suggestion stands in
		// for the base model's eval: evaluation reads only the model and the eval set).
		let (doc, what) = match &job.spec.work {
			jobs::Work::Compute { recipe, .. } => (recipe, "the recipe"),
			jobs::Work::Contest { bounds, .. } => (bounds, "the contest's bounds"),
		};
		let (doc_sha, doc_uri) = (hex::encode(doc.sha256), String::from_utf8_lossy(&doc.uri.0).into_owned());
		self.check_scheme(&doc_uri)?;
		let doc_path = self.cache.fetch(&doc_uri, &doc_sha, None).await.map_err(not_now(what))?;
		let doc_bytes = std::fs::read(&doc_path)?;
		let (recipe, bounds) = match &job.spec.work {
			jobs::Work::Compute { .. } => (Recipe::parse(&doc_bytes, &doc_uri)?, None),
			jobs::Work::Contest { .. } => {
				let bounds = Bounds::parse(&doc_bytes, &doc_uri)?;
				(bounds.recipe(&bounds.suggested), Some(bounds))
			},
		};
		for (what, blob) in recipe.inputs() {
			self.check_scheme(&blob.uri)?;
			self.cache.fetch(&blob.uri, &blob.sha256, Some(blob.size)).await.map_err(not_now(&what))?;
		}
		// The eval set is the owner's to serve: one it does not serve by the last chance (or
		// that does not read) costs it the quality check, not the miners their judgement.
		let mut notes = Vec::new();
		let eval = match &case.eval {
			None => None,
			Some(e) => {
				let (sha, uri) = (hex::encode(e.set.sha256), String::from_utf8_lossy(&e.set.uri.0).into_owned());
				let fetched = match self.check_scheme(&uri) {
					Err(e) => Err(FetchError::Scheme { uri: format!("{uri} ({e})") }),
					Ok(()) => self.cache.fetch(&uri, &sha, None).await,
				};
				match fetched {
					Ok(path) => Some((path, sha)),
					Err(e) if transient(&e) && !last_chance => return Err(NotNow(format!("the revealed eval set: {e}")).into()),
					Err(e) => {
						notes.push(format!("the revealed eval set cannot be had ({e}): judged on replay alone"));
						None
					},
				}
			},
		};
		let deliveries: Vec<(AccountId32, &jobs::Delivery<u32>)> = job
			.claims
			.0
			.iter()
			.filter_map(|c| match &c.state {
				jobs::ClaimState::Submitted { delivery } => Some((c.miner.clone(), delivery)),
				_ => None,
			})
			.collect();
		if deliveries.len() != case.segments.0.len() {
			bail!("{} results delivered but the case draws segments for {}", deliveries.len(), case.segments.0.len());
		}
		// Fetch what each result needs; a result whose blobs are missing or wrong fails
		// here, before any compute.
		let mut prepared = Vec::new();
		for (i, ((miner, d), segments)) in deliveries.iter().zip(&case.segments.0).enumerate() {
			let run = dir.join(format!("result-{i}"));
			let outcome = match fetch_result(&self.cache, self.opts.allow_file_uris, id, d, &segments.0, &run, bounds.as_ref()).await {
				Err(Fetch::NotNow(why)) if !last_chance => return Err(NotNow(format!("result {i}: {why}")).into()),
				Err(Fetch::NotNow(why)) => Err((LocalFault::Unavailable, why)),
				Err(Fetch::Fault(fault, why)) => Err((fault, why)),
				Ok(f) => Ok(f),
			};
			// The class the miner registered: its checkpoints must say the same.
			let class = timed("Jobs.Miners", chain.miner(miner)).await?.map(|m| String::from_utf8_lossy(&m.capabilities.backend.0).into_owned());
			prepared.push((miner.clone(), segments.0.clone(), run, outcome, class));
		}
		let report_fail = self.opts.report_fail;
		let cache_dir = self.cache.dir().to_path_buf();
		let metrics = self.metrics.clone();
		let (report, findings) = tokio::task::spawn_blocking(move || -> Result<(Report, Vec<String>)> {
			// Every eval on one backend (this validator's), so its scores rank alike; each
			// replay on the backend of the class its miner trained on.
			let backend = crate::backend_for(recipe.train.precision)?;
			let inputs = LocalInputs { cache: cache_dir };
			let mut base_job = Job::from_recipe(recipe.clone(), recipe.train.seed, &inputs)?;
			let mut eval = eval;
			let base = match &eval {
				None => None,
				Some((path, sha)) => match base_job.load_eval_set(path, sha) {
					Ok(set) => {
						base_job.eval = set;
						base_job.evaluate_with(backend.as_ref(), None)
					},
					Err(e) => {
						notes.push(format!("the revealed eval set does not read ({e}): judged on replay alone"));
						eval = None;
						None
					},
				},
			};
			let mut results = Vec::new();
			let mut findings = Vec::new();
			for (i, (miner, segments, run, fetched, class)) in prepared.into_iter().enumerate() {
				// A contest's result trains its own recipe: a job of its own (with the same
				// eval set), unless it is the suggestion itself.
				// It keeps within the bounds, so its inputs are the ones the suggestion loaded:
				// a failure to load it is this machine's (disk, cache), never the miner's fault:
				// tried again next block, and in the last blocks of the commit window the case
				// is left unreported rather than wrongly reported.
				let mut own = None;
				let job = match fetched.as_ref().ok().and_then(|f| f.recipe.clone()) {
					Some(r) if r.sha256() != base_job.recipe_hash => {
						let what = format!("result {i}: its recipe {}", hex::encode(r.sha256()));
						let mut j = Job::from_recipe(r, 0, &inputs).map_err(|e| -> anyhow::Error {
							if last_chance { anyhow::Error::from(e).context(what) } else { NotNow(format!("{what}: {e}")).into() }
						})?;
						j.eval = base_job.eval.clone();
						own.insert(j)
					},
					_ => &mut base_job,
				};
				job.seed = miner_seed(job.recipe.train.seed, id, &miner.0);
				let (verdict, adapter) = match fetched {
					Err(fault) => (Err(fault), None),
					Ok(f) => {
						let replayer = crate::backend_to_replay(job.recipe.train.precision, class.as_deref())?;
						check_training(job, replayer.as_ref(), &f, &segments, &run, class.as_deref(), &metrics)?
					},
				};
				let (replay, why) = match (&verdict, report_fail) {
					(_, true) => (Replay::Fail(Fault::Segment), "reported failed (--report-fail)".to_string()),
					(Ok(()), false) => (Replay::Pass, "replays".to_string()),
					(Err((fault, why)), false) => (Replay::Fail(fault_of(*fault)), why.clone()),
				};
				let score = match (&replay, &adapter, eval.is_some()) {
					(Replay::Pass, Some(a), true) => job.evaluate_with(backend.as_ref(), Some(a)),
					_ => None,
				};
				metrics.results_judged.inc();
				if matches!(replay, Replay::Fail(_)) {
					metrics.replay_failures.inc();
				}
				findings.push(format!(
					"result {i} ({miner}): {why}{}",
					score.map(|s| format!("; eval loss {:.6} ({:.4} bits/byte)", s.loss, s.bits_per_byte)).unwrap_or_default()
				));
				results.push(ResultReport {
					replay,
					loss_ppm: score.map(|s| ppm(s.loss)),
					bits_per_byte_ppm: score.map(|s| ppm(s.bits_per_byte)),
				});
			}
			if let Some(b) = base {
				findings.push(format!("base model: eval loss {:.6} ({:.4} bits/byte)", b.loss, b.bits_per_byte));
			}
			findings.extend(notes);
			let report = Report {
				base_loss_ppm: base.map(|b| ppm(b.loss)),
				results: runtime::runtime_types::bounded_collections::bounded_vec::BoundedVec(results),
			};
			Ok((report, findings))
		})
		.await??;
		let salt = keystore::random_seed().context("no randomness for the report's salt")?;
		let (base_loss_ppm, results) = to_saved(&report);
		Ok(SavedReport { job_id: id, round: case.round, case: print, base_loss_ppm, results, salt: hex::encode(salt), findings })
	}

	/// `file://` URIs from the chain are refused unless `--allow-file-uris`.
	fn check_scheme(&self, uri: &str) -> Result<()> {
		if uri.starts_with("file://") && !self.opts.allow_file_uris {
			bail!("{uri}: file:// URIs are refused from the chain (start the validator with --allow-file-uris on a dev chain)");
		}
		Ok(())
	}
}

/// Fetches result `d`'s manifests, the checkpoints segments `segments` need (and the
/// last) and its adapter files into a run directory at `run`; in a contest (`bounds`),
/// first the recipe it attests, which must keep within the bounds. A blob that is not
/// what its name says, or a manifest that does not hold together, is the result's fault;
/// one that cannot be had now (or this machine's disk) is [`Fetch::NotNow`]. `file://`
/// URIs only with `allow_file_uris` (dev chains).
async fn fetch_result(cache: &Cache, allow_file_uris: bool, id: u64, d: &jobs::Delivery<u32>, segments: &[u32], run: &Path, bounds: Option<&Bounds>) -> Result<Fetched, Fetch> {
	let fetch = |what: String, e: FetchError| if transient(&e) { Fetch::NotNow(format!("{what}: {e}")) } else { Fetch::Fault(LocalFault::BadManifest, format!("{what}: {e}")) };
	let local = |what: &str, e: &dyn std::fmt::Display| Fetch::NotNow(format!("{what}: {e}"));
	let bad = |why: String| Fetch::Fault(LocalFault::BadManifest, why);
	let get = |uri: String, sha: String, size: Option<u64>, what: String| async move {
		if uri.starts_with("file://") && !allow_file_uris {
			return Err(Fetch::Fault(LocalFault::Unavailable, format!("{what}: {uri}: a file:// URI from the chain")));
		}
		cache.fetch(&uri, &sha, size).await.map_err(|e| fetch(what, e))
	};
	let (sha, uri) = (hex::encode(d.result.sha256), String::from_utf8_lossy(&d.result.uri.0).into_owned());
	let path = get(uri.clone(), sha, None, "the result manifest".into()).await?;
	let bytes = std::fs::read(&path).map_err(|e| local("the result manifest", &e))?;
	let manifest = ResultManifest::parse(&bytes, &uri).map_err(|e| bad(format!("{e:#}")))?;
	let root = hex::encode(d.checkpoint_root);
	// The attested recipe: the job's (the chain checked it), or in a contest the miner's.
	let recipe_sha = hex::encode(d.recipe_sha256);
	if manifest.job_id != id || manifest.recipe != recipe_sha || manifest.merkle_root != root {
		return Err(bad(format!("the result manifest names job {}, recipe {}, root {}", manifest.job_id, manifest.recipe, manifest.merkle_root)));
	}
	let recipe = match bounds {
		None => None,
		Some(bounds) => {
			let uri = manifest.recipe_uri.clone().ok_or_else(|| bad("a contest's result manifest without `recipe_uri`".into()))?;
			let path = get(uri.clone(), recipe_sha.clone(), None, "the miner's recipe".into()).await?;
			let bytes = std::fs::read(&path).map_err(|e| local("the miner's recipe", &e))?;
			let recipe = Recipe::parse(&bytes, &uri).map_err(|e| bad(format!("{e}")))?;
			bounds.check(&recipe, &uri).map_err(|e| Fetch::Fault(LocalFault::OutOfBounds, e.to_string()))?;
			let t = &recipe.train;
			if t.steps != u64::from(d.steps) || t.checkpoint_every != u64::from(d.checkpoint_interval) {
				return Err(bad(format!(
					"its recipe trains {} steps every {}, the attestation says {} every {}",
					t.steps, t.checkpoint_every, d.steps, d.checkpoint_interval
				)));
			}
			Some(recipe)
		},
	};
	let names: Vec<&str> = manifest.peft.keys().map(String::as_str).collect();
	if names != PEFT_FILES {
		return Err(bad(format!("the result's PEFT adapter has the files {names:?}, not exactly {PEFT_FILES:?}")));
	}
	let m = &manifest.checkpoints.manifest;
	let ckpt_path = get(m.uri.clone(), m.sha256.clone(), Some(m.size), "the checkpoint manifest".into()).await?;
	let ckpt_bytes = std::fs::read(&ckpt_path).map_err(|e| local("the checkpoint manifest", &e))?;
	let ckpt: Manifest = serde_json::from_slice(&ckpt_bytes).map_err(|e| bad(format!("the checkpoint manifest: {e}")))?;
	// The manifest is the inclusion proof of every checkpoint: its leaves must hash to
	// the attested root, one per checkpoint, each file named by its leaf.
	let leaves = ckpt.leaves();
	if merkle_root(&leaves) != d.checkpoint_root || ckpt.merkle_root != root {
		return Err(bad("the checkpoint manifest's leaves do not hash to the attested root".into()));
	}
	let expected = d.steps.div_ceil(d.checkpoint_interval.max(1)) as usize + 1;
	if leaves.len() != expected || manifest.checkpoints.files.len() != leaves.len() || u64::from(d.checkpoint_interval) != ckpt.checkpoint_every {
		return Err(bad(format!(
			"{} leaves and {} checkpoint files for {} steps every {} ({expected} checkpoints)",
			leaves.len(),
			manifest.checkpoints.files.len(),
			d.steps,
			d.checkpoint_interval
		)));
	}
	for (k, (f, leaf)) in manifest.checkpoints.files.iter().zip(&leaves).enumerate() {
		if f.sha256 != hex::encode(leaf) {
			return Err(bad(format!("checkpoint file {k} is {} but its leaf is {}", f.sha256, hex::encode(leaf))));
		}
	}
	let last = leaves.len() - 1;
	let mut wanted: BTreeSet<usize> = segments.iter().flat_map(|&s| [s as usize, s as usize + 1]).collect();
	wanted.insert(last);
	std::fs::create_dir_all(run.join("checkpoints")).map_err(|e| local("the run directory", &e))?;
	for k in wanted {
		let f = manifest.checkpoints.files.get(k).ok_or_else(|| bad(format!("segment {k} past the last checkpoint")))?;
		let p = get(f.uri.clone(), f.sha256.clone(), Some(f.size), format!("checkpoint {k}")).await?;
		std::fs::copy(&p, Manifest::checkpoint_path(run, k)).map_err(|e| local("a checkpoint", &e))?;
	}
	molting_engine::checkpoint::write_atomic(&Manifest::path(run), &ckpt_bytes).map_err(|e| local("the run directory", &e))?;
	// The adapter files themselves, as the owner will fetch them (each checked by the
	// cache against its hash), compared with this machine's export below.
	let mut adapter = Vec::new();
	for (name, blob) in manifest.peft.iter().map(|(n, b)| (n.clone(), b)).chain([("adapter.gguf".to_string(), &manifest.gguf)]) {
		get(blob.uri.clone(), blob.sha256.clone(), Some(blob.size), name.clone()).await?;
		adapter.push((name, blob.sha256.clone()));
	}
	Ok(Fetched { manifest: ckpt, adapter, recipe })
}

/// Why a result's blobs are not all here.
enum Fetch {
	NotNow(String),
	Fault(LocalFault, String),
}

/// What a result's fetch left on disk, and what its adapter files (the PEFT files by
/// name, and `adapter.gguf`) hash to.
struct Fetched {
	manifest: Manifest,
	adapter: Vec<(String, String)>,
	/// A contest's result: the recipe it trained (checked against the bounds).
	recipe: Option<Recipe>,
}

#[derive(Debug, Clone, Copy)]
enum LocalFault {
	Unavailable,
	BadManifest,
	InitialState,
	Segment,
	Adapter,
	OutOfBounds,
}

fn fault_of(f: LocalFault) -> Fault {
	match f {
		LocalFault::Unavailable => Fault::Unavailable,
		LocalFault::BadManifest => Fault::BadManifest,
		LocalFault::InitialState => Fault::InitialState,
		LocalFault::Segment => Fault::Segment,
		LocalFault::Adapter => Fault::Adapter,
		LocalFault::OutOfBounds => Fault::OutOfBounds,
	}
}

/// The class a miner that registered `registered` (the class it trains fp32 on) trains a
/// job of `precision` on: the same class for fp32; for bf16 the same backend's bf16 class on
/// the same machine (`cuda/…` → `cuda-bf16/…`; `cpu/x86_64-avx512f/kK/vV` →
/// `cpu-bf16/x86_64-avx512bf16/kK/vV`, the only CPU path with a bf16 class), `None` where
/// that backend has none.
fn class_for_precision(registered: &str, precision: molting_engine::spec::Precision) -> Option<String> {
	use molting_engine::spec::Precision;
	match precision {
		Precision::Fp32 => Some(registered.to_string()),
		Precision::Bf16 => {
			if let Some(rest) = registered.strip_prefix("cuda/") {
				return Some(format!("cuda-bf16/{rest}"));
			}
			registered.strip_prefix("cpu/x86_64-avx512f/").map(|rest| format!("cpu-bf16/x86_64-avx512bf16/{rest}"))
		},
	}
}

type Verdict = (Result<(), (LocalFault, String)>, Option<molting_engine::lora::Adapter>);

/// Checkpoint 0, every drawn segment, and the adapter of a fetched result; returns the
/// adapter (the last checkpoint's) when every check passed. An `Err` is not a verdict: a
/// result trained on another backend class than this machine's cannot be replayed here
/// bit for bit, and the seat is better left unreported than wrongly reported.
fn check_training(
	job: &Job,
	backend: &dyn molting_engine::backend::Backend,
	f: &Fetched,
	segments: &[u32],
	run: &Path,
	registered: Option<&str>,
	metrics: &Metrics,
) -> Result<Verdict> {
	let leaves = f.manifest.leaves();
	let last = leaves.len().saturating_sub(1);
	if let Ok(state) = f.manifest.read_checked(run, last) {
		// The class is the miner's word inside its own checkpoint: it must be the one the
		// miner registered (its fp32 class), or that class's bf16 sibling on a job of
		// precision bf16, or the checkpoint is not what it claims.
		let precision = job.recipe.train.precision;
		if registered.is_some_and(|r| class_for_precision(r, precision).as_deref() != Some(state.class.as_str())) {
			let why = format!("the checkpoints say backend class {}, the miner registered {}", state.class, registered.unwrap_or_default());
			return Ok((Err((LocalFault::BadManifest, why)), None));
		}
		if state.class != backend.class() {
			bail!("the result was trained on backend class {}, this machine replays {}", state.class, backend.class());
		}
	}
	Ok(check_segments(job, backend, f, segments, run, metrics))
}

fn check_segments(
	job: &Job,
	backend: &dyn molting_engine::backend::Backend,
	f: &Fetched,
	segments: &[u32],
	run: &Path,
	metrics: &Metrics,
) -> Verdict {
	let leaves = f.manifest.leaves();
	let initial = job.initial_state(backend).hash();
	if leaves.first() != Some(&initial) {
		return (Err((LocalFault::InitialState, format!("checkpoint 0 is not the recipe's initial state under the miner's seed ({})", hex::encode(initial)))), None);
	}
	for &s in segments {
		match train::replay_job(job, run, s as usize, backend) {
			Ok(r) if r.matches => metrics.segments_replayed.inc(),
			Ok(r) => {
				return (
					Err((LocalFault::Segment, format!("segment {s} (steps {} to {}) replays to {}, not {}", r.from_step, r.to_step, r.found, r.expected))),
					None,
				)
			},
			Err(e) => return (Err((LocalFault::BadManifest, format!("segment {s}: {e}"))), None),
		}
	}
	let last = leaves.len().saturating_sub(1);
	let state = match f.manifest.read_checked(run, last).and_then(|s| job.check_state(&s, last, &Manifest::checkpoint_path(run, last), backend).map(|()| s)) {
		Ok(s) => s,
		Err(e) => return (Err((LocalFault::BadManifest, format!("the last checkpoint: {e}"))), None),
	};
	let adapter = job.adapter(&state.params);
	let out = run.join("adapter-check");
	let exported = molting_engine::adapter::write_peft(&adapter, &job.model.config, &out, &job.model_name)
		.and_then(|()| molting_engine::adapter::write_gguf(&adapter, &job.model.config, &out.join("adapter.gguf"), &job.model_name));
	if let Err(e) = exported {
		return (Err((LocalFault::Adapter, format!("cannot export the last checkpoint: {e}"))), None);
	}
	for (name, sha) in &f.adapter {
		let found = std::fs::read(out.join(name)).map(|b| hex::encode(sha2::Sha256::digest(&b))).unwrap_or_default();
		if &found != sha {
			return (Err((LocalFault::Adapter, format!("{name} is {sha}, but the last checkpoint exports {found}"))), None);
		}
	}
	(Ok(()), Some(adapter))
}

/// Millionths, rounded, saturating.
fn ppm(x: f64) -> u32 {
	(x * 1e6).round().clamp(0.0, u32::MAX as f64) as u32
}

/// A report's entries as kept on disk: the fault's index (`None`: the replay passed)
/// and the scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SavedEntry {
	fault: Option<u8>,
	loss_ppm: Option<u32>,
	bits_per_byte_ppm: Option<u32>,
}

use molting_chain::fault_index;

/// The fault at index `i` of pallet-contribution's `Fault`.
fn fault_at(i: u8) -> Option<Fault> {
	Some(match i {
		0 => Fault::Unavailable,
		1 => Fault::BadManifest,
		2 => Fault::InitialState,
		3 => Fault::Segment,
		4 => Fault::Adapter,
		5 => Fault::OutOfBounds,
		_ => return None,
	})
}

fn to_saved(report: &Report) -> (Option<u32>, Vec<SavedEntry>) {
	let entries = report
		.results
		.0
		.iter()
		.map(|r| SavedEntry {
			fault: match &r.replay {
				Replay::Pass => None,
				Replay::Fail(f) => Some(fault_index(f)),
			},
			loss_ppm: r.loss_ppm,
			bits_per_byte_ppm: r.bits_per_byte_ppm,
		})
		.collect();
	(report.base_loss_ppm, entries)
}

fn from_saved(base_loss_ppm: Option<u32>, entries: &[SavedEntry]) -> Result<Report> {
	let mut results = Vec::new();
	for e in entries {
		let replay = match e.fault {
			None => Replay::Pass,
			Some(i) => Replay::Fail(fault_at(i).ok_or_else(|| anyhow!("report.json: fault {i}"))?),
		};
		results.push(ResultReport { replay, loss_ppm: e.loss_ppm, bits_per_byte_ppm: e.bits_per_byte_ppm });
	}
	Ok(Report { base_loss_ppm, results: runtime::runtime_types::bounded_collections::bounded_vec::BoundedVec(results) })
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn a_checkpoints_class_must_be_its_miners_for_the_jobs_precision() {
		use molting_engine::spec::Precision::{Bf16, Fp32};
		let (cpu, cpu16) = ("cpu/x86_64-avx512f/k2/v0.1.0", "cpu-bf16/x86_64-avx512bf16/k2/v0.1.0");
		let (cuda, cuda16) = ("cuda/sm_90x132/nvrtc13.5/cublas130100/k1/v0.1.0", "cuda-bf16/sm_90x132/nvrtc13.5/cublas130100/k1/v0.1.0");
		let want = |r: &str, p| class_for_precision(r, p);
		assert_eq!((want(cpu, Fp32).as_deref(), want(cpu, Bf16).as_deref()), (Some(cpu), Some(cpu16)));
		assert_eq!((want(cuda, Fp32).as_deref(), want(cuda, Bf16).as_deref()), (Some(cuda), Some(cuda16)));
		// The engine's own bf16 class is what the mapping gives for this build.
		assert_eq!(want(&format!("cpu/x86_64-avx512f/k{}/v{}", molting_engine::backend::cpu::KERNELS_VERSION, env!("CARGO_PKG_VERSION")), Bf16), Some(molting_engine::backend::cpu::bf16_class()));
		assert_eq!(want("cpu/x86_64-avx2-fma-gemm@X/k2/v0.1.0", Bf16), None, "no bf16 class on that path");
		assert_ne!(want(cpu, Fp32).as_deref(), Some(cpu16), "a bf16 class on an fp32 job");
		assert_ne!(want(cpu, Bf16).as_deref(), Some(cpu), "an fp32 class on a bf16 job");
		assert_ne!(want(cpu, Bf16).as_deref(), Some("cpu-bf16/anything/k9/v0.1.0"));
	}

	#[test]
	fn a_saved_report_reads_back_to_the_same_commitment() {
		let report = from_saved(
			Some(2_000_000),
			&[
				SavedEntry { fault: None, loss_ppm: Some(1_500_000), bits_per_byte_ppm: Some(700_000) },
				SavedEntry { fault: Some(3), loss_ppm: None, bits_per_byte_ppm: None },
			],
		)
		.unwrap();
		assert!(matches!(report.results.0[1].replay, Replay::Fail(Fault::Segment)));
		let (base, entries) = to_saved(&report);
		let again = from_saved(base, &entries).unwrap();
		let c = |r: &Report| molting_chain::report_commitment(4, 0, &[7; 32], r, &[1; 32]);
		assert_eq!(c(&report), c(&again));
		assert!(from_saved(None, &[SavedEntry { fault: Some(9), loss_ppm: None, bits_per_byte_ppm: None }]).is_err());
	}

	/// A contest result whose recipe is not within the bounds: a fault of the result
	/// (`OutOfBounds`, saying which limit), found before anything else of it is fetched;
	/// one within them passes that check (and here fails the next, its adapter files).
	#[tokio::test]
	async fn a_contest_recipe_outside_the_bounds_is_the_results_fault() {
		use molting_engine::bounds::Limits;
		use molting_engine::recipe::BlobRef;
		let dir = tempfile::tempdir().unwrap();
		let blob = |c: char| serde_json::json!({ "sha256": c.to_string().repeat(64), "size": 10, "uri": format!("http://store/{c}") });
		let recipe = |rank: usize| -> Recipe {
			serde_json::from_value(serde_json::json!({
				"recipe": molting_engine::recipe::RECIPE_VERSION,
				"model": { "files": { "model.gguf": blob('a') } },
				"data": { "format": "chat", "train": blob('b') },
				"lora": { "rank": rank, "alpha": 8.0, "dropout": 0.0, "targets": ["q", "v"] },
				"train": { "steps": 12, "batch_size": 2, "seq_len": 64, "grad_accum": 2, "lr": 0.01, "seed": 7, "checkpoint_every": 4 }
			}))
			.unwrap()
		};
		let limits = Limits {
			ranks: vec![2, 4],
			targets: vec!["q".into(), "v".into()],
			lr_min: 0.0001,
			lr_max: 0.02,
			max_steps: 12,
			max_checkpoint_every: 4,
			max_seq_len: 64,
			max_tokens_per_step: 256,
			precision: Default::default(),
		};
		let bounds = Bounds::new(&recipe(4), limits);
		// A file in `dir`, named for this test, as the chain would name it.
		let put = |name: &str, bytes: &[u8]| -> (String, [u8; 32]) {
			let path = dir.path().join(name);
			std::fs::write(&path, bytes).unwrap();
			(format!("file://{}", path.display()), sha2::Sha256::digest(bytes).into())
		};
		let cache = Cache::new(dir.path().join("cache"), 1 << 20);
		let judge = |rank: usize| {
			let chosen = recipe(rank);
			let (recipe_uri, recipe_sha) = put(&format!("recipe-{rank}.json"), &chosen.to_canonical());
			assert_eq!(recipe_sha, chosen.sha256());
			let none = BlobRef { sha256: "0".repeat(64), size: 1, uri: "http://store/none".into() };
			let manifest = ResultManifest {
				result: crate::result::RESULT_VERSION.into(),
				job_id: 3,
				recipe: hex::encode(recipe_sha),
				recipe_uri: Some(recipe_uri),
				merkle_root: hex::encode([7u8; 32]),
				peft: Default::default(),
				gguf: none.clone(),
				checkpoints: crate::result::Checkpoints { manifest: none, files: vec![] },
			};
			let (uri, sha) = put(&format!("result-{rank}.json"), &manifest.to_canonical());
			let delivery = jobs::Delivery {
				recipe_sha256: recipe_sha,
				result: jobs::ContentRef { sha256: sha, uri: runtime::runtime_types::bounded_collections::bounded_vec::BoundedVec(uri.into_bytes()) },
				checkpoint_root: [7; 32],
				steps: 12,
				checkpoint_interval: 4,
				final_train_loss_ppm: 1,
				submitted_at: 5,
			};
			(delivery, dir.path().join(format!("run-{rank}")))
		};

		// The fault a fetch found (a fetch that passed, or could not be made now, fails the test).
		let fault = |r: Result<Fetched, Fetch>| match r {
			Err(Fetch::Fault(f, why)) => (f, why),
			Err(Fetch::NotNow(why)) => panic!("not now: {why}"),
			Ok(_) => panic!("a result that should fail passed"),
		};
		let (outside, run) = judge(8);
		let (f, why) = fault(fetch_result(&cache, true, 3, &outside, &[0], &run, Some(&bounds)).await);
		assert!(matches!(f, LocalFault::OutOfBounds) && why.contains("`lora.rank` is 8, not one of [2, 4]"), "{f:?}: {why}");
		let (within, run) = judge(2);
		let (f, why) = fault(fetch_result(&cache, true, 3, &within, &[0], &run, Some(&bounds)).await);
		assert!(matches!(f, LocalFault::BadManifest) && why.contains("PEFT adapter has the files []"), "{f:?}: {why}");
		// Without --allow-file-uris nothing of a file:// result is fetched (the result
		// manifest is refused first).
		let (_, run) = judge(4);
		let (f, why) = fault(fetch_result(&cache, false, 3, &within, &[0], &run, Some(&bounds)).await);
		assert!(matches!(f, LocalFault::Unavailable) && why.starts_with("the result manifest:"), "{f:?}: {why}");
	}
}
