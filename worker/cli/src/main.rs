//! `molt-worker`: train persona adapters, resume and replay runs, evaluate, chat, bench;
//! write recipes; mine jobs from a Molting chain; post and follow jobs; serve blobs.

mod job;
mod metrics;
mod mine;
mod result;
mod validate;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use molting_engine::backend::cpu::{isa_path, Cpu, CpuBf16};
use molting_engine::backend::Backend;
use molting_engine::generate::{Generator, Sampling};
use molting_engine::gguf::GgufFile;
use molting_engine::model::{load_model, Model, ModelSource};
use molting_engine::spec::{resolve, Precision};
use molting_engine::tokenizer::{ChatTokenizer, Message};
use molting_engine::train::{self, Job, RunOptions, StepReport};

#[derive(Parser)]
#[command(name = "molt-worker", version, about = "Molting worker: persona LoRA fine-tuning, bit-reproducible on CPU")]
struct Cli {
	/// Worker threads (default: all cores). Results do not depend on it.
	#[arg(long, global = true)]
	threads: Option<usize>,
	/// Compute backend: `auto` takes a CUDA GPU where a driver and one are present, else
	/// the CPU (saying why in one line); `cpu` the CPU reference; `cuda` a GPU or an error.
	#[arg(long, global = true, value_enum, default_value_t = BackendChoice::Auto)]
	backend: BackendChoice,
	#[command(subcommand)]
	command: Command,
}

#[derive(Subcommand)]
enum Command {
	/// Run a job spec into a fresh run directory.
	Train {
		#[arg(long)]
		spec: PathBuf,
		#[arg(long)]
		out: PathBuf,
		/// Stop after this step (and its checkpoint, if any), as if killed.
		#[arg(long)]
		stop_after: Option<u64>,
	},
	/// Continue a run from its last checkpoint.
	Resume { run: PathBuf },
	/// Recompute checkpoint K+1 from checkpoint K and compare its hash with the record.
	Replay {
		run: PathBuf,
		#[arg(long)]
		from: usize,
	},
	/// Eval loss of a run's adapter (or of the base model) on the job's eval split.
	Eval {
		#[arg(long)]
		spec: PathBuf,
		/// A PEFT adapter directory; without it, the base model.
		#[arg(long)]
		adapter: Option<PathBuf>,
		/// Print the reports as JSON (`{"base": ..., "adapter": ...}`).
		#[arg(long)]
		json: bool,
		/// With --json: every conversation too (its token ids, assistant mask, and summed
		/// loss and token count with and without the adapter).
		#[arg(long, requires = "json")]
		conversations: bool,
	},
	/// Talk to a model, with or without an adapter.
	Chat {
		#[arg(long, default_value = "models:SmolLM2-135M-Instruct.Q4_1.gguf")]
		model: String,
		#[arg(long)]
		adapter: Option<PathBuf>,
		#[arg(long)]
		system: Option<String>,
		/// One prompt per flag; without any, read prompts from stdin line by line.
		#[arg(long)]
		prompt: Vec<String>,
		#[arg(long, default_value_t = 120)]
		max_tokens: usize,
		/// 0 is greedy.
		#[arg(long, default_value_t = 0.0)]
		temperature: f32,
		#[arg(long, default_value_t = 0.9)]
		top_p: f32,
		#[arg(long, default_value_t = 0)]
		seed: u64,
		/// Print each exchange as a JSON line with the token ids (`prompt_ids`, `reply_ids`).
		#[arg(long)]
		json: bool,
	},
	/// Time a job's real training steps (the persona demo by default), with the figures the
	/// PyTorch reference prints.
	Bench {
		#[arg(long, default_value = "worker/jobs/keeper.toml")]
		spec: PathBuf,
		/// fp32 (the reference class) or bf16 (frozen-weight products in bf16).
		#[arg(long)]
		precision: Option<Precision>,
		#[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
		steps: u64,
		#[arg(long, default_value_t = 1)]
		warmup: usize,
		/// Write every step's batches here (JSON), for the PyTorch reference.
		#[arg(long)]
		batches_out: Option<PathBuf>,
		/// Print the report as JSON.
		#[arg(long)]
		json: bool,
		/// Only time the frozen-weight matmul shapes of a step.
		#[arg(long)]
		kernels: bool,
	},
	/// Describe a model: architecture, tensors, tokenizer, chat template.
	Inspect { model: String },
	/// Print the recipe a job spec writes (canonical JSON) and its SHA-256.
	Recipe {
		spec: PathBuf,
		/// Upload every local input and the recipe to this store, naming them by its URIs.
		#[arg(long)]
		store: Option<String>,
		#[arg(long, env = "MOLTING_STORE_TOKEN", hide_env_values = true)]
		store_token: Option<String>,
		/// Print `{"sha256", "uri", "steps", "checkpoint_interval", "recipe"}` instead.
		#[arg(long)]
		json: bool,
	},
	/// Keystores: `keys new --keystore DIR [--account //Bob]`, `keys show --keystore DIR`.
	Keys {
		#[command(subcommand)]
		command: KeysCommand,
	},
	/// The content-addressed blob store server.
	Store {
		#[command(subcommand)]
		command: StoreCommand,
	},
	/// Mine: take jobs from the chain, train, publish, attest, get paid.
	Mine {
		/// The node's WebSocket RPC.
		#[arg(long, default_value = "ws://127.0.0.1:9944")]
		node: String,
		#[arg(long)]
		keystore: PathBuf,
		/// Where results are published (`http://host:port` of a store server, `file:///dir`).
		#[arg(long)]
		store: String,
		#[arg(long, env = "MOLTING_STORE_TOKEN", hide_env_values = true)]
		store_token: Option<String>,
		/// Claims, runs, checkpoints and the blob cache (default: `<keystore>/data`).
		#[arg(long)]
		data: Option<PathBuf>,
		/// Least reward per training step to accept, in MOLT.
		#[arg(long, default_value = "0")]
		min_reward: String,
		#[arg(long)]
		prometheus_port: Option<u16>,
		/// Largest input blob to fetch, in MiB.
		#[arg(long, default_value_t = 16384)]
		max_blob_mib: u64,
		/// Exit after this many of its jobs are settled (default: run until stopped).
		#[arg(long)]
		exit_after: Option<usize>,
		/// Accept `file://` URIs in recipes from the chain (dev chains and tests only).
		#[arg(long)]
		allow_file_uris: bool,
		/// Tests only: train to this step, then fabricate the remaining checkpoints, as a
		/// lazy miner would (what validators must catch).
		#[arg(long, hide = true)]
		fake_after: Option<u64>,
		/// Tests only: train nothing; attest, as this miner's own, the result that ACCOUNT
		/// (SS58 or `//Name`) delivers for the same job, as a copier would (what replay under
		/// this miner's seed must catch).
		#[arg(long, hide = true, value_name = "ACCOUNT")]
		copy_from: Option<String>,
		/// In contests, the recipe this miner writes: a JSON file of `lora` and `train`
		/// fields (`{"train":{"lr":0.005}}`) laid over the bounds' suggested recipe (without
		/// it, the suggestion as is). A choice outside a contest's bounds skips that contest.
		#[arg(long)]
		contest_choice: Option<PathBuf>,
	},
	/// Serve this validator's seats on committees: replay and score results, commit and
	/// reveal reports (registers with `--bond` first).
	Validate {
		/// The node's WebSocket RPC.
		#[arg(long, default_value = "ws://127.0.0.1:9944")]
		node: String,
		/// The validator's keystore: `account.secret` holds the bond, `worker.secret` is the
		/// report key that signs commitments.
		#[arg(long)]
		keystore: PathBuf,
		/// Reports, replays and the blob cache (default: `<keystore>/data`).
		#[arg(long)]
		data: Option<PathBuf>,
		/// Self-bond to register with, in MOLT.
		#[arg(long, default_value = "100")]
		bond: String,
		#[arg(long)]
		prometheus_port: Option<u16>,
		/// Largest blob to fetch, in MiB.
		#[arg(long, default_value_t = 16384)]
		max_blob_mib: u64,
		/// Exit after this many reports are revealed (default: run until stopped).
		#[arg(long)]
		exit_after: Option<usize>,
		/// Accept `file://` URIs from the chain (dev chains and tests only).
		#[arg(long)]
		allow_file_uris: bool,
		/// Tests only: report every replay as failed, as a lying validator would.
		#[arg(long, hide = true)]
		report_fail: bool,
	},
	/// The developer's side: post jobs, reveal their eval sets, follow them, fetch results.
	Job {
		/// The node's WebSocket RPC.
		#[arg(long, global = true, default_value = "ws://127.0.0.1:9944")]
		node: String,
		#[command(subcommand)]
		command: JobCommand,
	},
}

#[derive(Subcommand)]
enum KeysCommand {
	/// Create a keystore: a fresh worker key and the account (`--account URI`, or a fresh one).
	New {
		#[arg(long)]
		keystore: PathBuf,
		#[arg(long)]
		account: Option<String>,
	},
	/// Print the keystore's public keys and account (never the secrets).
	Show {
		#[arg(long)]
		keystore: PathBuf,
	},
}

#[derive(Subcommand)]
enum StoreCommand {
	/// Serve `--dir` on `--listen`: `PUT`/`GET`/`HEAD /blobs/<sha256>`.
	Serve {
		#[arg(long)]
		dir: PathBuf,
		#[arg(long, default_value = "127.0.0.1:8700")]
		listen: std::net::SocketAddr,
		/// Largest blob accepted, in MiB.
		#[arg(long, default_value_t = 4096)]
		max_mib: u64,
		/// Require `Authorization: Bearer <token>` for writes.
		#[arg(long, env = "MOLTING_STORE_TOKEN", hide_env_values = true)]
		token: Option<String>,
	},
}

#[derive(Subcommand)]
enum JobCommand {
	/// Upload a job spec's inputs and recipe to a store and post the job; prints its id.
	Post {
		/// The job spec (`job.toml`) to write the recipe from.
		#[arg(long)]
		recipe: PathBuf,
		/// The whole budget, in MOLT.
		#[arg(long)]
		budget: String,
		#[arg(long)]
		store: String,
		#[arg(long, env = "MOLTING_STORE_TOKEN", hide_env_values = true)]
		store_token: Option<String>,
		/// The owner's secret URI (`//Alice` on a dev chain); or `MOLTING_ACCOUNT`, which
		/// keeps it out of the process list.
		#[arg(long, env = "MOLTING_ACCOUNT", hide_env_values = true)]
		account: String,
		#[arg(long, default_value_t = 1)]
		replication: u8,
		/// Blocks from now until claims close.
		#[arg(long, default_value_t = 100)]
		claim_blocks: u32,
		/// Blocks after that until results are due.
		#[arg(long, default_value_t = 1000)]
		submit_blocks: u32,
		/// Blocks after that for revealing the eval set.
		#[arg(long, default_value_t = 10)]
		reveal_blocks: u32,
		/// Blocks after that for the validators' commitments and reveals (at least the
		/// runtime's commit and reveal windows together).
		#[arg(long, default_value_t = 20)]
		judge_blocks: u32,
		/// Require miners of this reproducibility class (`cpu/x86_64-avx512f/k2/v0.1.0`:
		/// results replay bit-exactly only within one).
		#[arg(long, value_name = "CLASS")]
		require_class: Option<String>,
		/// The hidden eval set (JSONL conversations): only its commitment is posted; the
		/// salt is kept in `--secrets` until `job reveal`. Without it, results are judged on
		/// replay alone.
		#[arg(long)]
		eval: Option<PathBuf>,
		/// Where eval salts are kept (default `~/.cache/molting/owner`).
		#[arg(long)]
		secrets: Option<PathBuf>,
		/// The quality bar, in percent: a result's eval loss must be this much below the
		/// base model's.
		#[arg(long, default_value_t = 1.0)]
		min_improvement: f64,
		/// Pay passing results by rank of eval loss (2/3 and 1/3 for two) instead of equally.
		#[arg(long)]
		ranked: bool,
		/// Post a contest: each miner writes its own recipe within these limits (a JSON
		/// file: `ranks`, `targets`, `lr_min`, `lr_max`, `max_steps`, `max_checkpoint_every`,
		/// `max_seq_len`, `max_tokens_per_step`, `precision`; the worker's README). The
		/// spec's inputs are the contest's, its sections the suggested recipe.
		#[arg(long)]
		contest: Option<PathBuf>,
	},
	/// Reveal a job's eval set (publishes it to the store) once submissions have closed.
	Reveal {
		id: u64,
		#[arg(long)]
		store: String,
		#[arg(long, env = "MOLTING_STORE_TOKEN", hide_env_values = true)]
		store_token: Option<String>,
		/// The owner's secret URI; or `MOLTING_ACCOUNT`.
		#[arg(long, env = "MOLTING_ACCOUNT", hide_env_values = true)]
		account: String,
		#[arg(long)]
		secrets: Option<PathBuf>,
	},
	/// Where a job stands: its escrow, claims and results.
	Status {
		id: u64,
		#[arg(long)]
		json: bool,
	},
	/// What a job cost in MOLT beside the same training on rented cloud machines.
	Cost {
		id: u64,
		/// The training run (the miner's `jobs/<id>/run`): its measured step times.
		#[arg(long)]
		run: PathBuf,
		/// Hourly prices (CSV; `docs/cloud-prices.csv`).
		#[arg(long, default_value = "docs/cloud-prices.csv")]
		prices: PathBuf,
	},
	/// Download and verify a job's adapter (PEFT and GGUF) into `--out`.
	Fetch {
		id: u64,
		#[arg(long)]
		out: PathBuf,
		/// Whose result (default: the first delivered).
		#[arg(long)]
		miner: Option<String>,
	},
}

/// Runs `f` on a tokio runtime, with logs (`RUST_LOG`, default `info`) on stderr.
fn on_runtime<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
	let filter = tracing_subscriber::EnvFilter::try_from_default_env()
		.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
	use std::io::IsTerminal;
	let _ = tracing_subscriber::fmt()
		.with_env_filter(filter)
		.with_writer(std::io::stderr)
		.with_ansi(std::io::stderr().is_terminal())
		.try_init();
	tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(f)
}

/// A progress bar on stderr when it is a terminal (the miner logs lines otherwise).
pub(crate) fn progress_if_terminal(total: u64, done: u64) -> Option<ProgressBar> {
	use std::io::IsTerminal;
	std::io::stderr().is_terminal().then(|| progress(total, done))
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendChoice {
	Auto,
	Cpu,
	Cuda,
}

/// `--backend`, as given on the command line (set once in `main`).
static BACKEND_CHOICE: std::sync::OnceLock<BackendChoice> = std::sync::OnceLock::new();

/// The CUDA backend for `precision`, made once per process and precision (NVRTC compiles
/// every kernel when it is made), or why there is none here.
fn cuda_backend(precision: Precision) -> Result<Arc<molting_cuda::Cuda>, String> {
	type Made = std::sync::OnceLock<Result<Arc<molting_cuda::Cuda>, String>>;
	static FP32: Made = std::sync::OnceLock::new();
	static BF16: Made = std::sync::OnceLock::new();
	let once = match precision {
		Precision::Fp32 => &FP32,
		Precision::Bf16 => &BF16,
	};
	once.get_or_init(|| molting_cuda::Cuda::new(precision).map(Arc::new).map_err(|e| e.to_string())).clone()
}

/// The backend for `precision` on the device `--backend` chose: `auto` takes the CUDA
/// backend where a GPU, its driver and the libraries are usable, else the CPU after one
/// line saying why (once per process); `cuda` is an error that says why where it cannot be.
pub(crate) fn backend_for(precision: Precision) -> Result<Arc<dyn Backend>> {
	static NOTICE: std::sync::Once = std::sync::Once::new();
	let notice = |line: String| NOTICE.call_once(|| eprintln!("molt-worker: {line}"));
	let choice = *BACKEND_CHOICE.get().unwrap_or(&BackendChoice::Auto);
	if choice != BackendChoice::Cpu {
		let cuda = match molting_cuda::detect() {
			molting_cuda::Detection::Unavailable(why) => Err(format!("no CUDA GPU to train on ({why})")),
			molting_cuda::Detection::Gpu { .. } => cuda_backend(precision),
		};
		match (choice, cuda) {
			(_, Ok(cuda)) => {
				notice(format!("using {} ({})", cuda.device, cuda.class()));
				return Ok(cuda);
			},
			(BackendChoice::Cuda, Err(why)) => bail!("--backend cuda: {why}"),
			(_, Err(why)) => notice(format!("{why}; using the CPU backend")),
		}
	}
	cpu_backend(precision)
}

/// The backend a validator replays a result of `class` on (the class the miner
/// registered): a CPU class on the CPU whatever `--backend` says (a GPU would give other
/// bits), any other as `--backend` chooses.
pub(crate) fn backend_to_replay(precision: Precision, class: Option<&str>) -> Result<Arc<dyn Backend>> {
	if class.is_some_and(|c| c.starts_with("cpu")) {
		return cpu_backend(precision);
	}
	backend_for(precision)
}

/// The CPU backend for `precision`.
fn cpu_backend(precision: Precision) -> Result<Arc<dyn Backend>> {
	Ok(match precision {
		Precision::Fp32 => Arc::new(Cpu),
		Precision::Bf16 => Arc::new(CpuBf16::new().ok_or_else(|| {
			anyhow::anyhow!(
				"precision bf16 needs a CPU with AVX-512F and AVX512_BF16 whose vdpbf16ps computes the class's \
				 documented order (worker/README.md); this one's path is {}",
				isa_path()
			)
		})?),
	})
}

/// A model argument: `models:NAME` in the model cache, else a path.
fn model_path(s: &str) -> PathBuf {
	resolve(Path::new(""), s)
}

fn load(s: &str) -> Result<(Model, ChatTokenizer, ModelSource)> {
	let path = model_path(s);
	let source = ModelSource::detect(&path)?;
	let model = load_model(&source)?;
	let tok = match &source {
		ModelSource::Gguf(p) => ChatTokenizer::from_gguf(&GgufFile::open(p)?)?,
		ModelSource::HfDir(d) => ChatTokenizer::from_hf_dir(d)?,
	};
	Ok((model, tok, source))
}

fn progress(total: u64, done: u64) -> ProgressBar {
	let pb = ProgressBar::new(total).with_position(done);
	pb.set_style(ProgressStyle::with_template("{bar:30} step {pos}/{len}  {msg}  ETA {eta}").expect("valid template"));
	pb
}

fn on_step(pb: &ProgressBar) -> impl FnMut(&StepReport) + '_ {
	move |r: &StepReport| {
		pb.set_position(r.step);
		pb.set_message(format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", r.loss, r.lr, r.tokens as f64 / r.seconds));
		if pb.is_hidden() {
			eprintln!(
				"step {} loss {:.4} lr {:.2e} grad-norm {:.3} {:.0} tok/s",
				r.step,
				r.loss,
				r.lr,
				r.grad_norm,
				r.tokens as f64 / r.seconds
			);
		}
	}
}

fn print_summary(s: &train::Summary, run: &Path) {
	println!("run:          {}", run.display());
	println!("steps:        {}", s.steps);
	println!("backend:      {}", s.backend);
	if let (Some(b), Some(a)) = (s.eval_before, s.eval_after) {
		println!("eval loss:    {:.4} -> {:.4} nats/token over {} assistant tokens", b.loss, a.loss, a.tokens);
		println!("bits/byte:    {:.4} -> {:.4} over {} bytes", b.bits_per_byte, a.bits_per_byte, a.bytes);
		println!("perplexity:   {:.2} -> {:.2}", b.perplexity, a.perplexity);
	}
	println!("final state:  {}", s.final_state_hash);
	println!("merkle root:  {}", s.merkle_root);
	println!("throughput:   {:.0} tokens/s", s.train_tokens_per_second);
	println!("adapters:     {}, {}", run.join("adapter").display(), run.join("adapter.gguf").display());
}

/// Keeps freed memory in the process: a training step allocates and frees the same
/// gigabyte of activations every time, and glibc's default of returning large blocks to
/// the kernel costs a page fault per 4 KiB on every step.
fn keep_freed_memory() {
	#[cfg(all(target_os = "linux", target_env = "gnu"))]
	// SAFETY: mallopt only tunes the allocator; called before any threads start.
	unsafe {
		libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
		libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
	}
}

/// The precision a job's spec names.
fn job_precision(job: &Job) -> Precision {
	job.recipe.train.precision
}

fn main() {
	keep_freed_memory();
	let cli = Cli::parse();
	// Errors already say what and where: one line, no backtrace.
	if let Err(e) = run(cli) {
		eprintln!("molt-worker: {e}");
		std::process::exit(1);
	}
}

fn run(cli: Cli) -> Result<()> {
	let _ = BACKEND_CHOICE.set(cli.backend);
	if let Some(n) = cli.threads {
		rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("thread pool")?;
	}
	match cli.command {
		Command::Train { spec, out, stop_after } => {
			let job = Job::prepare(&spec)?;
			let backend = backend_for(job_precision(&job))?;
			let backend = backend.as_ref();
			job.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
			eprintln!(
				"{}: {} train rows of {} tokens, {} eval conversations; {} steps on {}",
				spec.display(),
				job.train_rows.len(),
				job.recipe.train.seq_len,
				job.eval.len(),
				job.recipe.train.steps,
				backend.class()
			);
			let pb = progress(job.recipe.train.steps, 0);
			let mut cb = on_step(&pb);
			let summary = train::train(&job, &out, backend, RunOptions { stop_after, on_step: Some(&mut cb) })?;
			pb.finish_and_clear();
			match summary {
				Some(s) => print_summary(&s, &out),
				None => println!(
					"stopped after step {}; continue with `molt-worker resume {}`",
					stop_after.unwrap_or(0),
					out.display()
				),
			}
		},
		Command::Resume { run } => {
			let manifest = molting_engine::checkpoint::Manifest::load(&run)?;
			let pb = progress(0, *manifest.steps.last().unwrap_or(&0));
			let mut cb = on_step(&pb);
			let job = Job::from_run(&run)?;
			let backend = backend_for(job_precision(&job))?;
			let summary = train::resume_job(
				&job,
				&run,
				backend.as_ref(),
				RunOptions { stop_after: None, on_step: Some(&mut cb) },
			)?;
			pb.finish_and_clear();
			if let Some(s) = summary {
				print_summary(&s, &run);
			}
		},
		Command::Replay { run, from } => {
			let job = Job::from_run(&run)?;
			let backend = backend_for(job_precision(&job))?;
			let r = train::replay_job(&job, &run, from, backend.as_ref())?;
			println!("replayed steps {}..{} from checkpoint {}", r.from_step, r.to_step, r.from_index);
			println!("recorded: {}", r.expected);
			println!("computed: {}", r.found);
			if r.matches {
				println!("MATCH: checkpoint {} is confirmed", r.from_index + 1);
			} else {
				println!("MISMATCH: checkpoint {} is not what this training produces", r.from_index + 1);
				std::process::exit(2);
			}
		},
		Command::Eval { spec, adapter, json, conversations } => {
			let job = Job::prepare(&spec)?;
			let backend = backend_for(job_precision(&job))?;
			let backend = backend.as_ref();
			let show = |what: &str, r: train::EvalReport| {
				println!(
					"{what:13} eval loss {:.4} over {} tokens, {:.4} bits/byte over {} bytes, perplexity {:.2}",
					r.loss, r.tokens, r.bits_per_byte, r.bytes, r.perplexity
				)
			};
			let Some(base) = job.evaluate(backend, None) else {
				bail!("{}: the spec has no eval split", spec.display());
			};
			let adapter = match adapter {
				Some(dir) => {
					Some(molting_engine::adapter::read_peft(&dir, &job.model.config).map_err(anyhow::Error::msg)?)
				},
				None => None,
			};
			let with_adapter = adapter.as_ref().and_then(|a| job.evaluate_with(backend, Some(a)));
			if json {
				let mut out = serde_json::json!({"backend": backend.class(), "base": base, "adapter": with_adapter});
				if conversations {
					let each = |a| job.evaluate_each(backend, a);
					let (b, w) = (each(None), adapter.as_ref().map(|a| each(Some(a))));
					let convs: Vec<_> = job
						.eval
						.iter()
						.enumerate()
						.map(|(i, e)| {
							let score = |r: &(f64, usize)| serde_json::json!({"loss_sum": r.0, "tokens": r.1});
							serde_json::json!({"line": e.line, "ids": e.ids, "mask": e.train.iter().map(|&t| t as u8).collect::<Vec<_>>(),
								"base": score(&b[i]), "adapter": w.as_ref().map(|w| score(&w[i]))})
						})
						.collect();
					out["conversations"] = serde_json::json!(convs);
				}
				println!("{out}");
			} else {
				show("base model:", base);
				if let Some(r) = with_adapter {
					show("with adapter:", r);
				}
			}
		},
		Command::Chat { model, adapter, system, prompt, max_tokens, temperature, top_p, seed, json } => {
			let (model, tok, source) = load(&model)?;
			if tok.vocab_size() > model.config.vocab_size {
				let (t, m) = (tok.vocab_size(), model.config.vocab_size);
				bail!("{}: the tokenizer has {t} tokens but the model only {m}", source.path().display());
			}
			let adapter = match adapter {
				Some(dir) => Some(molting_engine::adapter::read_peft(&dir, &model.config).map_err(anyhow::Error::msg)?),
				None => None,
			};
			let context = model.config.max_position_embeddings.min(4096);
			let backend = backend_for(Precision::Fp32)?;
			let mut generator = Generator::new(backend.as_ref(), &model, adapter.as_ref(), context);
			let sampling = Sampling { temperature, top_p, seed };
			let mut answer = |user: &str| -> Result<()> {
				let mut messages = Vec::new();
				if let Some(s) = &system {
					messages.push(Message { role: "system".into(), content: s.clone() });
				}
				messages.push(Message { role: "user".into(), content: user.into() });
				let ids = tok.encode(&tok.render_chat(&messages, true)?)?;
				if ids.is_empty() || ids.len() >= context {
					bail!("the prompt is {} tokens; the context holds {context}", ids.len());
				}
				let out = generator.generate(&ids, max_tokens, &tok.stop_ids, sampling, |_| {});
				let reply = tok.decode(&out)?;
				if json {
					println!(
						"{}",
						serde_json::json!({"prompt": user, "prompt_ids": ids, "reply_ids": out, "reply": reply})
					);
				} else {
					println!("> {user}\n{}\n", reply.trim());
				}
				Ok(())
			};
			if prompt.is_empty() {
				for line in std::io::stdin().lock().lines() {
					let line = line?;
					if !line.trim().is_empty() {
						answer(line.trim())?;
						std::io::stdout().flush()?;
					}
				}
			} else {
				for p in &prompt {
					answer(p)?;
				}
			}
		},
		Command::Bench { spec, precision, steps, warmup, batches_out, json, kernels } => {
			let job = Job::prepare(&spec)?;
			let backend = backend_for(precision.unwrap_or(job_precision(&job)))?;
			let backend = backend.as_ref();
			if kernels {
				let rows = job.recipe.train.batch_size * job.recipe.train.seq_len;
				for (name, gflops) in molting_engine::bench::matmul_gflops(backend, &job.model.config, rows) {
					println!("{name:32} {gflops:8.1} GFLOP/s");
				}
				return Ok(());
			}
			let mut steps_seen = Vec::new();
			let r = molting_engine::bench::run(backend, &job, steps as usize, warmup, |b| {
				if batches_out.is_some() {
					steps_seen.push(
						b.iter()
							.map(|b| serde_json::json!({"tokens": b.tokens, "targets": b.targets, "positions": b.positions, "batch": b.batch, "seq": b.seq}))
							.collect::<Vec<_>>(),
					);
				}
			});
			if let Some(path) = batches_out {
				let spec_json = serde_json::to_value(&job.recipe)?;
				let out = serde_json::json!({"spec": spec_json, "warmup": warmup, "steps": steps_seen,
					"useful_gflops_per_step": r.useful_gflops_per_step});
				std::fs::write(&path, serde_json::to_vec(&out)?).with_context(|| path.display().to_string())?;
			}
			if json {
				println!("{}", serde_json::to_string(&r)?);
			} else {
				println!("job:          {} ({} train rows)", spec.display(), job.train_rows.len());
				println!("backend:      {} ({} threads)", r.backend, r.threads);
				println!(
					"workload:     batch {} x seq {} x accum {}, LoRA r={} on {}, {} timed steps (median)",
					r.batch,
					r.seq,
					r.grad_accum,
					r.rank,
					r.targets.join(","),
					r.steps
				);
				println!("step time:    {:.3} s", r.step_seconds);
				println!(
					"throughput:   {:.1} tokens/s, {:.1} trained tokens/s",
					r.tokens_per_second, r.trained_tokens_per_second
				);
				println!(
					"compute:      {:.1} useful GFLOP/step, {:.1} GFLOP/s = {:.0}% of the best GEMM rate here ({:.1})",
					r.useful_gflops_per_step,
					r.useful_gflops_per_second,
					100.0 * r.share_of_best_gemm,
					r.best_gemm_gflops
				);
				println!("peak memory:  {:.0} MiB", r.peak_rss_mib);
				println!("loss:         {:.4} -> {:.4}", r.loss_first, r.loss_last);
			}
		},
		Command::Recipe { spec, store, store_token, json } => on_runtime(async {
			let publisher = store.as_deref().map(|s| molting_store::Publisher::new(s, store_token.as_deref())).transpose()?;
			let (recipe, bytes, uri) = job::recipe_of(&spec, publisher.as_ref()).await?;
			let sha = molting_store::sha256_hex(&bytes);
			if json {
				let recipe_value: serde_json::Value = serde_json::from_slice(&bytes)?;
				println!(
					"{}",
					serde_json::json!({"sha256": sha, "uri": uri, "steps": recipe.train.steps,
						"checkpoint_interval": recipe.train.checkpoint_every, "recipe": recipe_value})
				);
			} else {
				println!("{}", String::from_utf8_lossy(&bytes));
				eprintln!("sha256 {sha}{}", uri.map(|u| format!("  {u}")).unwrap_or_default());
			}
			Ok(())
		})?,
		Command::Keys { command } => match command {
			KeysCommand::New { keystore, account } => {
				let k = molting_chain::keystore::Keystore::create(&keystore, account.as_deref())?;
				println!("keystore:   {}", keystore.display());
				println!("account:    {}", molting_chain::account_of(&k.account));
				println!("worker key: 0x{}", hex::encode(k.worker.public_key().0));
			},
			KeysCommand::Show { keystore } => {
				let k = molting_chain::keystore::Keystore::open(&keystore)?;
				println!("account:    {}", molting_chain::account_of(&k.account));
				println!("worker key: 0x{}", hex::encode(k.worker.public_key().0));
			},
		},
		Command::Store { command: StoreCommand::Serve { dir, listen, max_mib, token } } => on_runtime(async move {
			let config = molting_store::server::Config { dir: dir.clone(), max_size: max_mib << 20, token };
			let (addr, task) = molting_store::server::spawn(listen, config).await.with_context(|| listen.to_string())?;
			tracing::info!("serving {} on http://{addr}/blobs/<sha256>", dir.display());
			task.await??;
			Ok(())
		})?,
		Command::Mine {
			node,
			keystore,
			store,
			store_token,
			data,
			min_reward,
			prometheus_port,
			max_blob_mib,
			exit_after,
			allow_file_uris,
			fake_after,
			copy_from,
			contest_choice,
		} => {
			let data = data.unwrap_or_else(|| keystore.join("data"));
			let contest_choice = match contest_choice {
				None => serde_json::json!({}),
				Some(path) => {
					let text = std::fs::read(&path).with_context(|| format!("--contest-choice {}", path.display()))?;
					let v: serde_json::Value =
						serde_json::from_slice(&text).with_context(|| format!("--contest-choice {}: not JSON", path.display()))?;
					if !v.is_object() {
						anyhow::bail!("--contest-choice {}: a JSON object of `lora` and `train` fields", path.display());
					}
					v
				},
			};
			let opts = mine::MineOptions {
				node,
				keystore,
				store,
				store_token,
				data,
				min_reward_per_step: job::parse_molt(&min_reward)?,
				prometheus_port,
				max_blob: max_blob_mib << 20,
				exit_after,
				allow_file_uris,
				fake_after,
				copy_from: copy_from.as_deref().map(job::parse_account).transpose().context("--copy-from")?,
				contest_choice,
			};
			on_runtime(mine::mine(opts))?
		},
		Command::Validate { node, keystore, data, bond, prometheus_port, max_blob_mib, exit_after, allow_file_uris, report_fail } => {
			let opts = validate::ValidateOptions {
				node,
				data: data.unwrap_or_else(|| keystore.join("data")),
				keystore,
				bond: job::parse_molt(&bond)?,
				prometheus_port,
				max_blob: max_blob_mib << 20,
				exit_after,
				allow_file_uris,
				report_fail,
			};
			on_runtime(validate::validate(opts))?
		},
		Command::Job { node, command } => on_runtime(async move {
			match command {
				JobCommand::Post {
					recipe,
					budget,
					store,
					store_token,
					account,
					replication,
					claim_blocks,
					submit_blocks,
					reveal_blocks,
					judge_blocks,
					require_class,
					eval,
					secrets,
					min_improvement,
					ranked,
					contest,
				} => {
					if !(0.0..100.0).contains(&min_improvement) {
						anyhow::bail!("--min-improvement {min_improvement}: a percentage in [0, 100)");
					}
					let secrets = secrets.unwrap_or_else(job::default_secrets);
					let id = job::post(job::PostArgs {
						node: &node,
						spec: &recipe,
						budget: job::parse_molt(&budget)?,
						store: &store,
						store_token: store_token.as_deref(),
						account: &account,
						replication,
						claim_blocks,
						submit_blocks,
						reveal_blocks,
						judge_blocks,
						backend: require_class.as_deref(),
						eval: eval.as_deref(),
						secrets: &secrets,
						min_improvement_ppb: (min_improvement * 1e7).round() as u32,
						ranked,
						contest: contest.as_deref(),
					})
					.await?;
					println!("{id}");
				},
				JobCommand::Reveal { id, store, store_token, account, secrets } => {
					let secrets = secrets.unwrap_or_else(job::default_secrets);
					job::reveal(&node, id, &store, store_token.as_deref(), &account, &secrets).await?
				},
				JobCommand::Status { id, json } => job::status(&node, id, json).await?,
				JobCommand::Cost { id, run, prices } => job::cost(&node, id, &run, &prices).await?,
				JobCommand::Fetch { id, out, miner } => {
					job::fetch(&node, id, miner.as_deref(), &out).await?;
				},
			}
			Ok(())
		})?,
		Command::Inspect { model } => {
			let path = model_path(&model);
			let source = ModelSource::detect(&path)?;
			if let ModelSource::Gguf(p) = &source {
				let g = GgufFile::open(p)?;
				let mut types = std::collections::BTreeMap::<u32, usize>::new();
				g.tensors.iter().for_each(|t| *types.entry(t.type_id).or_default() += 1);
				println!("file:         {} (GGUF, {} tensors)", p.display(), g.tensors.len());
				for (ty, n) in types {
					println!("  {n:4} tensors of type {}", molting_engine::gguf::quant_type_name(ty));
				}
				for key in ["general.name", "general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre"] {
					if let Ok(v) = g.get_str(key) {
						println!("  {key} = {v}");
					}
				}
			}
			let (m, tok, _) = load(&model)?;
			println!("config:       {}", serde_json::to_string(&m.config)?);
			println!("parameters:   {:.2}M", m.num_params() as f64 / 1e6);
			println!("tokenizer:    {} tokens; stop tokens {:?}", tok.vocab_size(), tok.stop_ids);
			let demo = [Message { role: "user".into(), content: "Hello!".into() }];
			match tok.render_chat(&demo, true) {
				Ok(text) => println!("chat prompt:  {text:?} -> {:?}", tok.encode(&text)?),
				Err(e) => println!("chat prompt:  {e}"),
			}
		},
	}
	Ok(())
}

#[cfg(test)]
mod cli_tests {
	use clap::Parser;

	use super::{BackendChoice, Cli, Command, JobCommand};

	#[test]
	fn the_global_backend_flag_and_job_posts_class_parse_apart() {
		let post = ["molt-worker", "job", "post", "--recipe", "r.toml", "--budget", "1", "--store", "s", "--account", "//Alice"];
		let cli = Cli::try_parse_from(post).unwrap();
		assert_eq!(cli.backend, BackendChoice::Auto);
		let with = [&post[..], &["--require-class", "cpu/x"], &["--backend", "cpu"]].concat();
		let cli = Cli::try_parse_from(with).unwrap();
		assert_eq!(cli.backend, BackendChoice::Cpu);
		let Command::Job { command: JobCommand::Post { require_class, .. }, .. } = cli.command else { panic!("a job post") };
		assert_eq!(require_class.as_deref(), Some("cpu/x"));
		let cli = Cli::try_parse_from(["molt-worker", "bench", "--backend", "cuda", "--spec", "s.toml"]).unwrap();
		assert_eq!(cli.backend, BackendChoice::Cuda);
	}
}
