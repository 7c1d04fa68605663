//! Running a job: preparing its inputs (every one checked against the recipe's hashes as
//! it is read), the training loop with checkpoints, `resume` after a crash, and `replay`
//! of one checkpoint segment, which is what a validator does.
//!
//! A run directory holds `recipe.json` (the recipe's canonical bytes: see [`crate::recipe`]),
//! `run.json` (the seed the run trains with, which for a miner is derived from the recipe's,
//! the job and its account), `checkpoints/` and `checkpoints.json`, `metrics.jsonl`, and at
//! the end `summary.json` and the adapters (`adapter/` for PEFT, `adapter.gguf`). Nothing
//! in it is a local path: anyone holding the recipe's blobs can resume or replay it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::Backend;
use crate::checkpoint::{write_atomic, CheckpointError, Manifest, State};
use crate::data::{self, Cursor, DataError, Example, Loader, Row};
use crate::engine::{Batch, Engine, FrozenModel, LossSum};
use crate::lora::{Adapter, Layout};
use crate::model::{load_model, Model, ModelError, ModelSource};
use crate::optim::{adamw_update, clip_grad_norm, learning_rate};
use crate::recipe::{BlobRef, Inputs, LocalInputs, Recipe, RecipeError};
use crate::rng::stream_key;
use crate::spec::{Spec, SpecError};
use crate::tokenizer::{ChatTokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
	#[error(transparent)]
	Spec(#[from] SpecError),
	#[error(transparent)]
	Recipe(#[from] RecipeError),
	#[error("{0}")]
	Input(String),
	#[error(transparent)]
	Model(#[from] ModelError),
	#[error(transparent)]
	Tokenizer(#[from] TokenizerError),
	#[error(transparent)]
	Data(#[from] DataError),
	#[error(transparent)]
	Checkpoint(#[from] CheckpointError),
	#[error("{path}: model SHA-256 is {found}, but the recipe says {expected}")]
	ModelHashMismatch { path: PathBuf, expected: String, found: String },
	#[error("{path}: the tokenizer has {tokenizer} tokens but the model only {model}")]
	VocabMismatch { path: PathBuf, tokenizer: usize, model: usize },
	#[error("{path}: packs into no rows of {seq} tokens")]
	NoRows { path: PathBuf, seq: usize },
	#[error("{path}:{line}: the conversation is {tokens} tokens, longer than the model's context of {context}")]
	LongerThanContext { path: PathBuf, line: usize, tokens: usize, context: usize },
	#[error("{path}: {what} already exists; use `resume` or another --out")]
	RunExists { path: PathBuf, what: &'static str },
	#[error("{0}")]
	Io(String),
	#[error("rows of {seq_len} tokens are longer than backend {backend} trains ({limit} at most)")]
	RowTooLong { seq_len: usize, backend: String, limit: usize },
}

/// A job with its inputs loaded and checked.
pub struct Job {
	pub recipe: Recipe,
	/// SHA-256 of the recipe's canonical bytes (what a job on chain names).
	pub recipe_hash: [u8; 32],
	/// The recipe's training identity ([`Recipe::training_id`]): what every checkpoint
	/// binds, so where the inputs were fetched from never changes a state hash.
	pub training_id: [u8; 32],
	/// The seed of every random choice of this run: the recipe's own for a local run, the
	/// miner's ([`crate::recipe::miner_seed`]) for a job taken from the chain.
	pub seed: u64,
	pub model: Model,
	pub model_source: ModelSource,
	/// What the adapters name as their base: the GGUF file's name, or `sha256:<hex>` of the
	/// Hugging Face files' listing (the recipe's own names; never a local path).
	pub model_name: String,
	pub tokenizer: ChatTokenizer,
	pub train_rows: Vec<Row>,
	/// The held-out conversations, each scored on its own.
	pub eval: Vec<Example>,
	/// What the run should know but does not stop it (conversations cut to `seq_len`).
	pub warnings: Vec<String>,
	/// The model's frozen weights in each backend class's form, made on first use.
	frozen: std::sync::Mutex<Vec<std::sync::Arc<FrozenModel>>>,
}

/// The eval split's score: each conversation scored on its own (attention and positions as
/// if alone), token-weighted over its predicted (assistant) tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
	/// Mean `−log p` per predicted token, in nats.
	pub loss: f64,
	pub tokens: usize,
	/// UTF-8 bytes of the predicted text.
	pub bytes: usize,
	/// Summed loss in bits over the bytes: tokenizer-independent.
	pub bits_per_byte: f64,
	/// `exp(loss)`.
	pub perplexity: f64,
}

/// `run.json`: what a run adds to its recipe.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInfo {
	pub seed: u64,
}

impl Job {
	/// Loads the job spec (`job.toml`) at `spec_path` and everything it names, as the
	/// recipe it writes, trained with the recipe's own seed.
	pub fn prepare(spec_path: &Path) -> Result<Job, TrainError> {
		let (spec, _) = Spec::load(spec_path)?;
		let recipe = spec.to_recipe(spec_path)?;
		let seed = recipe.train.seed;
		Self::from_recipe(recipe, seed, &LocalInputs { cache: crate::recipe::cache_dir() })
	}

	/// Loads every input of `recipe` through `inputs` (each file hashed as it is read) and
	/// prepares the run with `seed`.
	pub fn from_recipe(recipe: Recipe, seed: u64, inputs: &dyn Inputs) -> Result<Job, TrainError> {
		let recipe_hash = recipe.sha256();
		let training_id = recipe.training_id();
		let model_path = materialize_model(&recipe, inputs)?;
		let model_name = model_name(&recipe);
		let source = ModelSource::detect(&model_path)?;
		let model = load_model(&source)?;
		let tokenizer = match &source {
			ModelSource::Gguf(p) => {
				ChatTokenizer::from_gguf(&crate::gguf::GgufFile::open(p).map_err(ModelError::from)?)?
			},
			ModelSource::HfDir(d) => ChatTokenizer::from_hf_dir(d)?,
		};
		let vocab = model.config.vocab_size;
		if tokenizer.vocab_size() > vocab {
			return Err(TrainError::VocabMismatch {
				path: model_path,
				tokenizer: tokenizer.vocab_size(),
				model: vocab,
			});
		}
		let pad = tokenizer.token_to_id(tokenizer.eos_token()).unwrap_or(0);
		let seq = recipe.train.seq_len;
		let format = recipe.data.format;
		let examples = |what: &str, blob: &BlobRef| -> Result<(PathBuf, Vec<Example>), TrainError> {
			let path = inputs.file(what, blob).map_err(TrainError::Input)?;
			let text = data::read_checked(&path, &blob.sha256)?;
			let examples = data::load(&path, &text, format, &tokenizer, vocab)?;
			Ok((path, examples))
		};
		let (train_path, train) = examples("training set", &recipe.data.train)?;
		let packed = data::pack(&train, seq, pad);
		if packed.rows.is_empty() {
			return Err(TrainError::NoRows { path: train_path, seq });
		}
		let warnings = packed
			.truncated
			.iter()
			.map(|&(line, kept)| {
				let left = if kept { "" } else { ", which leave no assistant token to learn" };
				format!(
					"{}:{line}: longer than seq_len = {seq}; cut to its first {seq} tokens{left}",
					train_path.display()
				)
			})
			.collect();
		let eval = match &recipe.data.eval {
			Some(blob) => {
				let (path, eval) = examples("eval set", blob)?;
				let context = model.config.max_position_embeddings;
				if let Some(e) = eval.iter().find(|e| e.ids.len() > context) {
					return Err(TrainError::LongerThanContext { path, line: e.line, tokens: e.ids.len(), context });
				}
				eval
			},
			None => Vec::new(),
		};
		Ok(Job {
			recipe,
			recipe_hash,
			training_id,
			seed,
			model,
			model_source: source,
			model_name,
			tokenizer,
			train_rows: packed.rows,
			eval,
			warnings,
			frozen: Default::default(),
		})
	}

	/// The job of an existing run directory, its inputs from the local blob cache or their
	/// `file://` URIs.
	pub fn from_run(run: &Path) -> Result<Job, TrainError> {
		Self::from_run_with(run, &LocalInputs { cache: crate::recipe::cache_dir() })
	}

	/// The job of an existing run directory, its inputs through `inputs`.
	pub fn from_run_with(run: &Path, inputs: &dyn Inputs) -> Result<Job, TrainError> {
		let path = run.join("recipe.json");
		let bytes = std::fs::read(&path).map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
		let recipe = Recipe::parse(&bytes, &path.display().to_string())?;
		let info: RunInfo = read_json(&run.join("run.json"))?;
		Self::from_recipe(recipe, info.seed, inputs)
	}

	/// Another held-out set than the recipe's (a validator's revealed eval set) at `path`,
	/// checked against `sha256` and read in the recipe's format with this job's tokenizer;
	/// put it in [`Job::eval`] to score against it.
	pub fn load_eval_set(&self, path: &Path, sha256: &str) -> Result<Vec<Example>, TrainError> {
		let text = data::read_checked(path, sha256)?;
		let eval = data::load(path, &text, self.recipe.data.format, &self.tokenizer, self.model.config.vocab_size)?;
		let context = self.model.config.max_position_embeddings;
		if let Some(e) = eval.iter().find(|e| e.ids.len() > context) {
			return Err(TrainError::LongerThanContext { path: path.to_path_buf(), line: e.line, tokens: e.ids.len(), context });
		}
		Ok(eval)
	}

	/// The state before the first step on `backend`: a fresh adapter, zero moments.
	pub fn initial_state(&self, backend: &dyn Backend) -> State {
		let adapter = Adapter::init(&self.model.config, self.recipe.lora_config(), self.seed);
		let n = adapter.params.len();
		State {
			class: backend.class(),
			training_id: self.training_id,
			step: 0,
			cursor: Cursor::default(),
			seed: self.seed,
			params: adapter.params,
			m: vec![0.0; n],
			v: vec![0.0; n],
		}
	}

	/// Checks that `state` (from checkpoint `index` at `path`) belongs to this job and can be
	/// continued on `backend`: its recipe, its reproducibility class, its seed, the step
	/// checkpoint `index` must be at, and the adapter's size.
	pub fn check_state(
		&self,
		state: &State,
		index: usize,
		path: &Path,
		backend: &dyn Backend,
	) -> Result<(), CheckpointError> {
		let corrupt = |reason: String| CheckpointError::Corrupt { path: path.into(), reason };
		if state.training_id != self.training_id {
			return Err(CheckpointError::OtherRecipe { path: path.into() });
		}
		if state.class != backend.class() {
			return Err(CheckpointError::OtherClass {
				path: path.into(),
				recorded: state.class.clone(),
				running: backend.class(),
			});
		}
		if state.seed != self.seed {
			return Err(corrupt(format!("seed {} but the run trains with {}", state.seed, self.seed)));
		}
		let want = self.checkpoint_step(index);
		if state.step != want {
			return Err(corrupt(format!("step {} but checkpoint {index} is at step {want}", state.step)));
		}
		let n = Layout::new(&self.model.config, &self.recipe.lora_config()).len;
		if state.params.len() != n {
			return Err(corrupt(format!("{} adapter parameters but the recipe's adapter has {n}", state.params.len())));
		}
		Ok(())
	}

	/// `Ok` if `backend` can train this job's rows (before any step, not in the middle of one).
	pub fn check_backend(&self, backend: &dyn Backend) -> Result<(), TrainError> {
		check_rows(&self.recipe.train, backend)
	}

	/// The step checkpoint `index` is at: `index · checkpoint_every`, the last one at the
	/// final step.
	pub fn checkpoint_step(&self, index: usize) -> u64 {
		(index as u64).saturating_mul(self.recipe.train.checkpoint_every).min(self.recipe.train.steps)
	}

	/// The model's frozen weights for `backend` (packed or converted once per class).
	pub fn frozen_for(&self, backend: &dyn Backend) -> std::sync::Arc<FrozenModel> {
		let class = backend.class();
		let mut cache = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
		if let Some(f) = cache.iter().find(|f| f.class == class) {
			return f.clone();
		}
		let f = std::sync::Arc::new(FrozenModel::new(backend, &self.model));
		cache.push(f.clone());
		f
	}

	/// The adapter holding `params`.
	pub fn adapter(&self, params: &[f32]) -> Adapter {
		Adapter::from_params(&self.model.config, self.recipe.lora_config(), params.to_vec())
	}

	/// The eval split's score (no dropout), with `params` (in the recipe's adapter layout) or
	/// the base model; `None` without an eval split.
	pub fn evaluate(&self, backend: &dyn Backend, params: Option<&[f32]>) -> Option<EvalReport> {
		self.evaluate_with(backend, params.map(|p| self.adapter(p)).as_ref())
	}

	/// The eval split's score with any adapter for this model (see
	/// [`Job::evaluate_each`]), combined in an order that depends on the values only, so
	/// neither `seq_len` nor the file's order matter.
	pub fn evaluate_with(&self, backend: &dyn Backend, adapter: Option<&Adapter>) -> Option<EvalReport> {
		if self.eval.is_empty() {
			return None;
		}
		let mut results: Vec<(f64, usize, usize)> =
			self.evaluate_each(backend, adapter).iter().zip(&self.eval).map(|(&(s, n), e)| (s, n, e.bytes)).collect();
		results.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
		let (sum, tokens, bytes) = results.iter().fold((0f64, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
		let loss = if tokens == 0 { 0.0 } else { sum / tokens as f64 };
		Some(EvalReport {
			loss,
			tokens,
			bytes,
			bits_per_byte: if bytes == 0 { 0.0 } else { sum / std::f64::consts::LN_2 / bytes as f64 },
			perplexity: crate::math::exp_f64(loss),
		})
	}

	/// Each eval conversation's summed loss (nats) and predicted-token count, in file order.
	/// Conversations are packed into rows by length (block-diagonal attention, positions
	/// from 0 each: the same bits as one conversation at a time, tested).
	pub fn evaluate_each(&self, backend: &dyn Backend, adapter: Option<&Adapter>) -> Vec<(f64, usize)> {
		let mut per_conv = vec![(0f64, 0usize); self.eval.len()];
		if self.eval.is_empty() {
			return per_conv;
		}
		let frozen = self.frozen_for(backend);
		// Conversations go into rows of the power of two at or above their length (at least
		// EVAL_MIN_ROW), so one long conversation does not make every row long (attention's
		// buffers grow with the square of the row).
		let bucket = |e: &Example| e.ids.len().next_power_of_two().max(EVAL_MIN_ROW);
		let mut lengths: Vec<usize> = self.eval.iter().map(bucket).collect();
		lengths.sort_unstable();
		lengths.dedup();
		for row_len in lengths {
			let members: Vec<usize> = (0..self.eval.len()).filter(|&i| bucket(&self.eval[i]) == row_len).collect();
			let group: Vec<Example> = members.iter().map(|&i| self.eval[i].clone()).collect();
			let packed = data::pack(&group, row_len, 0);
			let engine = Engine::with_frozen(backend, &self.model, &frozen, adapter, row_len);
			let owner = owners(&packed);
			let rows_per_pass = (EVAL_TOKENS_PER_PASS / row_len).max(1);
			for (chunk, owner) in packed.rows.chunks(rows_per_pass).zip(owner.chunks(rows_per_pass * row_len)) {
				let batch = Batch {
					tokens: chunk.iter().flat_map(|r| r.tokens.iter().copied()).collect(),
					targets: chunk.iter().flat_map(|r| r.targets.iter().copied()).collect(),
					positions: chunk.iter().flat_map(|r| r.positions.iter().copied()).collect(),
					batch: chunk.len(),
					seq: row_len,
				};
				let losses = engine.token_losses(&batch);
				for ((&l, &t), &o) in losses.iter().zip(&batch.targets).zip(owner) {
					if t >= 0 {
						// Summed in position order within a conversation, as if alone.
						let c = &mut per_conv[members[o]];
						c.0 += l;
						c.1 += 1;
					}
				}
			}
		}
		per_conv
	}

	/// The micro-batches the step from `state` trains on, and the data cursor after them
	/// (the loader is deterministic: the bench and the reference see the same ones).
	pub fn step_batches(&self, state: &State) -> (Vec<Batch>, Cursor) {
		let hp = &self.recipe.train;
		let mut loader = Loader::new(&self.train_rows, state.seed, state.cursor);
		let batches = (0..hp.grad_accum).map(|_| loader.next_batch(hp.batch_size, hp.seq_len)).collect();
		(batches, loader.cursor)
	}

	/// One optimizer step from `state`: `grad_accum` micro-batches, clipping, AdamW. The
	/// parameters, gradients, moments and per-row losses live in the backend's memory for
	/// the whole step; the state is read back once, at its end.
	pub fn step(&self, backend: &dyn Backend, state: &mut State) -> StepReport {
		let hp = &self.recipe.train;
		let started = Instant::now();
		let be = backend;
		let lora = self.recipe.lora_config();
		let mut params = be.upload_f32(&state.params);
		let frozen = self.frozen_for(backend);
		let (batches, cursor) = self.step_batches(state);
		// The objective is the mean over the predicted tokens of the whole accumulated batch
		// (as transformers' Trainer since 4.46), not a mean of micro-batch means.
		let counted: usize = batches.iter().map(Batch::counted).sum();
		let grad_scale = if counted == 0 { 0.0 } else { 1.0 / counted as f32 };
		let mut grads = be.zeros_f32(params.len());
		let engine = Engine::with_params(backend, &self.model, &frozen, &lora, &params, hp.seq_len);
		let row_losses: Vec<_> = batches
			.iter()
			.enumerate()
			.map(|(micro, batch)| {
				let key = stream_key(state.seed, &[0xd209, state.step, micro as u64]);
				engine.accumulate(batch, Some(key), &mut grads, grad_scale)
			})
			.collect();
		drop(engine);
		let grad_norm = clip_grad_norm(be, grads.view_mut(), hp.max_grad_norm);
		let lr = learning_rate(state.step, &hp.schedule());
		let (mut m, mut v) = (be.upload_f32(&state.m), be.upload_f32(&state.v));
		adamw_update(be, params.view_mut(), grads.view(), m.view_mut(), v.view_mut(), lr, state.step + 1, &hp.adamw());
		let mut loss = LossSum::default();
		for l in &row_losses {
			loss.add(l.sum(be));
		}
		state.params = be.download_f32(params.view());
		state.m = be.download_f32(m.view());
		state.v = be.download_f32(v.view());
		state.step += 1;
		state.cursor = cursor;
		let tokens = hp.batch_size * hp.seq_len * hp.grad_accum;
		StepReport {
			step: state.step,
			loss: loss.mean(),
			tokens_counted: counted,
			lr,
			grad_norm,
			tokens,
			seconds: started.elapsed().as_secs_f64(),
		}
	}
}

/// What one step did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
	pub step: u64,
	/// Mean loss over the step's predicted tokens (the objective itself).
	pub loss: f64,
	/// Predicted (assistant) tokens in the step.
	pub tokens_counted: usize,
	pub lr: f32,
	pub grad_norm: f32,
	pub tokens: usize,
	pub seconds: f64,
}

/// The end of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
	pub steps: u64,
	pub final_state_hash: String,
	pub merkle_root: String,
	pub backend: String,
	pub eval_before: Option<EvalReport>,
	pub eval_after: Option<EvalReport>,
	pub train_tokens_per_second: f64,
}

impl Summary {
	pub fn eval_loss_before(&self) -> Option<f64> {
		self.eval_before.map(|e| e.loss)
	}

	pub fn eval_loss_after(&self) -> Option<f64> {
		self.eval_after.map(|e| e.loss)
	}
}

/// Options of `train`/`resume`.
#[derive(Default)]
pub struct RunOptions<'a> {
	/// Stop (as if killed) once this step is done and checkpointed, without finishing.
	pub stop_after: Option<u64>,
	/// Called after each step.
	pub on_step: Option<&'a mut dyn FnMut(&StepReport)>,
}

/// `Ok` if `backend` can train rows of `train.seq_len` tokens (its attention may have a
/// limit): checked before any step, by a run and by a miner before it claims.
pub fn check_rows(train: &crate::spec::TrainSection, backend: &dyn Backend) -> Result<(), TrainError> {
	let seq_len = train.seq_len;
	match backend.max_train_row() {
		Some(limit) if seq_len > limit => Err(TrainError::RowTooLong { seq_len, backend: backend.class(), limit }),
		_ => Ok(()),
	}
}

/// Starts a fresh run of `job` in `run`.
pub fn train(job: &Job, run: &Path, backend: &dyn Backend, opts: RunOptions) -> Result<Option<Summary>, TrainError> {
	job.check_backend(backend)?;
	if Manifest::path(run).exists() {
		return Err(TrainError::RunExists { path: run.into(), what: "a run" });
	}
	std::fs::create_dir_all(run).map_err(|e| TrainError::Io(format!("{}: {e}", run.display())))?;
	write_atomic(&run.join("recipe.json"), &job.recipe.to_canonical())?;
	write_atomic(&run.join("run.json"), &serde_json::to_vec_pretty(&RunInfo { seed: job.seed }).expect("serialises"))?;
	let mut manifest = Manifest { checkpoint_every: job.recipe.train.checkpoint_every, ..Default::default() };
	let state = job.initial_state(backend);
	manifest.append(run, &state)?;
	continue_run(job, run, backend, manifest, state, opts)
}

/// Continues the run in `run` from its last checkpoint.
pub fn resume(run: &Path, backend: &dyn Backend, opts: RunOptions) -> Result<(Job, Option<Summary>), TrainError> {
	let job = Job::from_run(run)?;
	let summary = resume_job(&job, run, backend, opts)?;
	Ok((job, summary))
}

/// [`resume`] with the run's job already loaded (`Job::from_run`).
pub fn resume_job(
	job: &Job,
	run: &Path,
	backend: &dyn Backend,
	opts: RunOptions,
) -> Result<Option<Summary>, TrainError> {
	job.check_backend(backend)?;
	let manifest = Manifest::load(run)?;
	let last = manifest
		.hashes
		.len()
		.checked_sub(1)
		.ok_or_else(|| CheckpointError::Manifest { path: Manifest::path(run), reason: "no checkpoints".into() })?;
	let state = manifest.read_checked(run, last)?;
	job.check_state(&state, last, &Manifest::checkpoint_path(run, last), backend)?;
	// Steps redone after the crash are logged again: drop their first record.
	let metrics = run.join("metrics.jsonl");
	if let Ok(text) = std::fs::read_to_string(&metrics) {
		let kept: String = text
			.lines()
			.filter(|l| {
				serde_json::from_str::<serde_json::Value>(l)
					.ok()
					.and_then(|v| v["step"].as_u64())
					.is_some_and(|s| s <= state.step)
			})
			.map(|l| format!("{l}\n"))
			.collect();
		write_atomic(&metrics, kept.as_bytes())?;
	}
	continue_run(job, run, backend, manifest, state, opts)
}

fn continue_run(
	job: &Job,
	run: &Path,
	backend: &dyn Backend,
	mut manifest: Manifest,
	mut state: State,
	mut opts: RunOptions,
) -> Result<Option<Summary>, TrainError> {
	let hp = &job.recipe.train;
	let started = Instant::now();
	let first_step = state.step;
	let mut metrics = std::fs::OpenOptions::new()
		.create(true)
		.append(true)
		.open(run.join("metrics.jsonl"))
		.map_err(|e| TrainError::Io(format!("{}: {e}", run.join("metrics.jsonl").display())))?;
	while state.step < hp.steps {
		let report = job.step(backend, &mut state);
		let _ = writeln!(metrics, "{}", serde_json::to_string(&report).expect("serialises"));
		if state.step % hp.checkpoint_every == 0 || state.step == hp.steps {
			manifest.append(run, &state)?;
		}
		if let Some(cb) = opts.on_step.as_mut() {
			cb(&report);
		}
		if opts.stop_after == Some(state.step) && state.step < hp.steps {
			return Ok(None);
		}
	}
	let trained = (state.step - first_step) as f64 * (hp.batch_size * hp.seq_len * hp.grad_accum) as f64;
	let summary = Summary {
		steps: state.step,
		final_state_hash: manifest.hashes.last().cloned().unwrap_or_default(),
		merkle_root: manifest.merkle_root.clone(),
		backend: backend.class(),
		eval_before: job.evaluate(backend, None),
		eval_after: job.evaluate(backend, Some(&state.params)),
		train_tokens_per_second: trained / started.elapsed().as_secs_f64().max(1e-9),
	};
	let adapter = job.adapter(&state.params);
	crate::adapter::write_peft(&adapter, &job.model.config, &run.join("adapter"), &job.model_name)
		.map_err(|e| TrainError::Io(e.to_string()))?;
	crate::adapter::write_gguf(&adapter, &job.model.config, &run.join("adapter.gguf"), &job.model_name)
		.map_err(|e| TrainError::Io(e.to_string()))?;
	write_atomic(&run.join("summary.json"), &serde_json::to_vec_pretty(&summary).expect("serialises"))?;
	Ok(Some(summary))
}

/// What a replay found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
	pub from_index: usize,
	pub from_step: u64,
	pub to_step: u64,
	pub expected: String,
	pub found: String,
	/// Whether the stored checkpoint file hashes to the recorded hash.
	pub stored_matches: bool,
	pub matches: bool,
}

/// Recomputes checkpoint `from + 1` from checkpoint `from` (whose file must match its
/// recorded hash) and compares the state hash with the recorded one.
pub fn replay(run: &Path, from: usize, backend: &dyn Backend) -> Result<ReplayReport, TrainError> {
	replay_job(&Job::from_run(run)?, run, from, backend)
}

/// [`replay`] with the run's job already loaded (`Job::from_run`).
pub fn replay_job(job: &Job, run: &Path, from: usize, backend: &dyn Backend) -> Result<ReplayReport, TrainError> {
	job.check_backend(backend)?;
	let manifest = Manifest::load(run)?;
	let mut state = manifest.read_checked(run, from)?;
	job.check_state(&state, from, &Manifest::checkpoint_path(run, from), backend)?;
	// The segment's end comes from the recipe, not from the (unhashed) manifest.
	let to_step = job.checkpoint_step(from + 1);
	let (true, Some(expected)) = (to_step > state.step, manifest.hashes.get(from + 1)) else {
		return Err(CheckpointError::Manifest {
			path: Manifest::path(run),
			reason: format!("checkpoint {from} is the last one; there is nothing after it to replay"),
		}
		.into());
	};
	let from_step = state.step;
	while state.step < to_step {
		job.step(backend, &mut state);
	}
	let found = hex::encode(state.hash());
	// The stored file must be what the manifest (and so the attested root) says, too.
	let stored_matches = manifest
		.read_checked(run, from + 1)
		.and_then(|s| job.check_state(&s, from + 1, &Manifest::checkpoint_path(run, from + 1), backend))
		.is_ok();
	Ok(ReplayReport {
		from_index: from,
		from_step,
		to_step,
		matches: &found == expected && stored_matches,
		stored_matches,
		expected: expected.clone(),
		found,
	})
}

/// Eval: the shortest row, and the token slots of one forward pass.
const EVAL_MIN_ROW: usize = 128;
const EVAL_TOKENS_PER_PASS: usize = 2048;

/// For every token slot of the packed rows, the example it belongs to (`usize::MAX` for
/// padding): a row's documents are its members in order, then its padding.
fn owners(packed: &data::Packed) -> Vec<usize> {
	let mut out = Vec::new();
	for (row, members) in packed.rows.iter().zip(&packed.members) {
		let mut docs = members.iter();
		let mut current = usize::MAX;
		for &p in &row.positions {
			if p == 0 {
				current = docs.next().copied().unwrap_or(usize::MAX);
			}
			out.push(current);
		}
	}
	out
}

fn model_listing_hash(recipe: &Recipe) -> String {
	let listing: String = recipe.model.files.iter().map(|(n, b)| format!("{n} {}\n", b.sha256)).collect();
	hex::encode(<sha2::Sha256 as sha2::Digest>::digest(listing.as_bytes()))
}

fn model_name(recipe: &Recipe) -> String {
	match recipe.model.files.keys().next() {
		Some(name) if recipe.model.files.len() == 1 && name.ends_with(".gguf") => name.clone(),
		_ => format!("sha256:{}", model_listing_hash(recipe)),
	}
}

/// The model's path as the loader wants it: the GGUF file, or a directory holding the
/// Hugging Face files under their names (the files' own directory when they already are,
/// else links made in the inputs' scratch directory). Every file is hashed first.
fn materialize_model(recipe: &Recipe, inputs: &dyn Inputs) -> Result<PathBuf, TrainError> {
	let mut paths = Vec::new();
	for (name, blob) in &recipe.model.files {
		let path = inputs.file(&format!("model file {name}"), blob).map_err(TrainError::Input)?;
		let found = data::sha256_file(&path)?;
		if found != blob.sha256 {
			return Err(TrainError::ModelHashMismatch { path, expected: blob.sha256.clone(), found });
		}
		paths.push((name, path));
	}
	if let [(name, path)] = paths.as_slice() {
		if name.ends_with(".gguf") {
			return Ok(path.clone());
		}
	}
	let parent = paths.first().and_then(|(_, p)| p.parent().map(Path::to_path_buf)).unwrap_or_default();
	if paths.iter().all(|(n, p)| p.parent() == Some(parent.as_path()) && p.file_name() == Some(std::ffi::OsStr::new(n)))
	{
		return Ok(parent);
	}
	let dir = inputs.scratch_dir().join(model_listing_hash(recipe));
	let io = |e: std::io::Error| TrainError::Io(format!("{}: {e}", dir.display()));
	std::fs::create_dir_all(&dir).map_err(io)?;
	for (name, path) in &paths {
		let link = dir.join(name);
		let target = std::path::absolute(path).map_err(io)?;
		if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
			let _ = std::fs::remove_file(&link);
			std::os::unix::fs::symlink(&target, &link).map_err(io)?;
		}
	}
	Ok(dir)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
	let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
	serde_json::from_str(&text).map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))
}
