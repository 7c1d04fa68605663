//! A contest's bounds: the inputs every miner trains on and the ranges its own recipe must
//! keep within.
//!
//! A contest job on chain (`Work::Contest`) names its bounds document by SHA-256. Each
//! miner writes its own recipe ([`Bounds::choose`]), trains it, and names it in its
//! attestation and result manifest; validators fetch that recipe by the attested hash and
//! [`Bounds::check`] it before they replay anything (a recipe outside the bounds is the
//! fault `OutOfBounds`). The hidden eval set then ranks the results.
//!
//! # Bytes
//!
//! Canonical JSON by the recipe's rules (`recipe` module), `bounds` = [`BOUNDS_VERSION`]:
//!
//! ```json
//! {"bounds":"molting/bounds/v1",
//!  "data":{"format":"chat","train":{"sha256":…,"size":…,"uri":…}},
//!  "limits":{"lr_max":0.02,"lr_min":0.0001,"max_checkpoint_every":4,"max_seq_len":256,
//!            "max_steps":12,"max_tokens_per_step":1024,"precision":"fp32","ranks":[2,4],
//!            "targets":["q","k","v","o","gate"]},
//!  "model":{"files":{…}},
//!  "suggested":{"lora":{…},"train":{…}}}
//! ```
//!
//! | limit | a recipe must have |
//! |---|---|
//! | `model`, `data` | the same files and training set (and public eval set, if any) by SHA-256 and size; URIs may differ |
//! | `ranks` | `lora.rank` one of them |
//! | `targets` | `lora.targets` a non-empty subset |
//! | `lr_min`, `lr_max` | `lr_min <= train.lr <= lr_max` |
//! | `max_steps` | `train.steps <= max_steps` (the chain's `Work::Contest::max_steps`) |
//! | `max_checkpoint_every` | `train.checkpoint_every <= max_checkpoint_every` (the chain's `max_checkpoint_interval`: what one replayed segment costs) |
//! | `max_seq_len` | `train.seq_len <= max_seq_len` |
//! | `max_tokens_per_step` | `batch_size * grad_accum * seq_len <= max_tokens_per_step` (with the two above, a validator's replay cost) |
//! | `precision` | `train.precision` equal (the backend class results are replayed in) |
//!
//! Everything else (alpha, dropout, schedule, warmup, AdamW's constants, clipping, the
//! seed) is the miner's choice. `suggested` is a recipe's `lora` and `train` sections
//! within the limits: what a miner trains unless it says otherwise.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Target;
use crate::recipe::{canonical_json, canonical_targets, BlobRef, DataInputs, ModelInputs, Recipe, RecipeError, RECIPE_VERSION};
use crate::spec::{LoraSection, Precision, TrainSection};

/// The `bounds` field of every bounds document this engine reads.
pub const BOUNDS_VERSION: &str = "molting/bounds/v1";

/// Most training steps a job may ask for (pallet-jobs' `MAX_STEPS`).
pub const MAX_STEPS: u64 = 1_000_000;

/// The ranges a contest's recipes keep within (see the module's table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
	pub ranks: Vec<usize>,
	pub targets: Vec<String>,
	pub lr_min: f32,
	pub lr_max: f32,
	pub max_steps: u64,
	pub max_checkpoint_every: u64,
	pub max_seq_len: usize,
	pub max_tokens_per_step: u64,
	#[serde(default)]
	pub precision: Precision,
}

/// A miner's choices: a recipe's `lora` and `train` sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
	pub lora: LoraSection,
	pub train: TrainSection,
}

/// A contest's bounds document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
	/// Always [`BOUNDS_VERSION`].
	pub bounds: String,
	pub model: ModelInputs,
	pub data: DataInputs,
	pub limits: Limits,
	pub suggested: Choice,
}

/// A recipe outside a contest's bounds, or a bounds document that does not read.
#[derive(Debug, thiserror::Error)]
pub enum BoundsError {
	#[error("{what}: not a bounds document: {message}")]
	Parse { what: String, message: String },
	#[error("{what}: not in canonical form (byte {offset} differs from the canonical encoding)")]
	NotCanonical { what: String, offset: usize },
	#[error("{what}: `{field}` {reason}")]
	Invalid { what: String, field: String, reason: String },
	#[error("{what}: `{field}` {reason}, outside the contest's bounds")]
	Outside { what: String, field: String, reason: String },
	#[error(transparent)]
	Recipe(#[from] RecipeError),
}

impl Bounds {
	/// The bounds of a contest over `recipe`'s inputs, suggesting `recipe`'s own sections.
	pub fn new(recipe: &Recipe, limits: Limits) -> Bounds {
		let mut limits = limits;
		limits.ranks.sort_unstable();
		limits.ranks.dedup();
		limits.targets = canonical_targets(&limits.targets);
		Bounds {
			bounds: BOUNDS_VERSION.into(),
			model: recipe.model.clone(),
			data: recipe.data.clone(),
			limits,
			suggested: Choice { lora: recipe.lora.clone(), train: recipe.train.clone() },
		}
	}

	pub fn to_canonical(&self) -> Vec<u8> {
		let mut b = self.clone();
		b.suggested.lora.targets = canonical_targets(&b.suggested.lora.targets);
		canonical_json(&serde_json::to_value(&b).expect("bounds serialise"))
	}

	pub fn sha256(&self) -> [u8; 32] {
		Sha256::digest(self.to_canonical()).into()
	}

	/// Reads a bounds document from its bytes; refuses one that is not canonical, not of
	/// this version, or whose limits or suggestion do not hold together.
	pub fn parse(bytes: &[u8], what: &str) -> Result<Bounds, BoundsError> {
		let b: Bounds = serde_json::from_slice(bytes).map_err(|e| BoundsError::Parse { what: what.into(), message: e.to_string() })?;
		let canonical = b.to_canonical();
		if canonical != bytes {
			let offset = canonical.iter().zip(bytes).take_while(|(a, c)| a == c).count();
			return Err(BoundsError::NotCanonical { what: what.into(), offset });
		}
		b.validate(what)?;
		Ok(b)
	}

	/// Whether the limits make sense and the suggested recipe keeps within them.
	pub fn validate(&self, what: &str) -> Result<(), BoundsError> {
		let bad = |field: &str, reason: &str| Err(BoundsError::Invalid { what: what.into(), field: field.into(), reason: reason.into() });
		let l = &self.limits;
		if self.bounds != BOUNDS_VERSION {
			return bad("bounds", &format!("is `{}`; this worker reads `{BOUNDS_VERSION}`", self.bounds));
		}
		if l.ranks.is_empty() || l.ranks.iter().any(|&r| r == 0 || r > 1024) {
			return bad("limits.ranks", "must name at least one rank, each between 1 and 1024");
		}
		if l.targets.is_empty() || l.targets.iter().any(|t| Target::parse(t).is_none()) {
			return bad("limits.targets", "must name at least one of q k v o gate up down, and nothing else");
		}
		if !(l.lr_min > 0.0 && l.lr_min.is_finite() && l.lr_max.is_finite() && l.lr_min <= l.lr_max) {
			return bad("limits.lr_min", "and limits.lr_max must be positive with lr_min <= lr_max");
		}
		// The chain's own limits on a contest (pallet-jobs' `MAX_STEPS`, an interval no
		// longer than the run): a post it would refuse is refused here, naming the field.
		if l.max_steps == 0 || l.max_steps > MAX_STEPS {
			return bad("limits.max_steps", &format!("must be between 1 and {MAX_STEPS}"));
		}
		if l.max_checkpoint_every == 0 || l.max_checkpoint_every > l.max_steps {
			return bad("limits.max_checkpoint_every", "must be between 1 and limits.max_steps");
		}
		if l.max_seq_len < 2 || l.max_tokens_per_step < 2 {
			return bad("limits.max_seq_len", "and limits.max_tokens_per_step must be at least 2");
		}
		// The suggestion is a recipe like any miner's: it must keep within the limits.
		let suggested = self.recipe(&self.suggested);
		self.check(&suggested, &format!("{what}: `suggested`"))
	}

	/// The recipe a miner making `choice` trains: the contest's inputs and its sections.
	pub fn recipe(&self, choice: &Choice) -> Recipe {
		let mut lora = choice.lora.clone();
		lora.targets = canonical_targets(&lora.targets);
		Recipe {
			recipe: RECIPE_VERSION.into(),
			model: self.model.clone(),
			data: self.data.clone(),
			lora,
			train: choice.train.clone(),
		}
	}

	/// The recipe a miner trains: `suggested` with `overrides` (a JSON object of partial
	/// `lora` and `train` sections, e.g. `{"train":{"lr":0.005}}`) laid over it; refused
	/// unless it keeps within the limits.
	pub fn choose(&self, overrides: &serde_json::Value, what: &str) -> Result<Recipe, BoundsError> {
		let mut value = serde_json::to_value(&self.suggested).expect("a choice serialises");
		if !overrides.is_object() {
			return Err(BoundsError::Parse { what: what.into(), message: "a contest choice is a JSON object".into() });
		}
		merge(&mut value, overrides);
		let choice: Choice =
			serde_json::from_value(value).map_err(|e| BoundsError::Parse { what: what.into(), message: e.to_string() })?;
		let recipe = self.recipe(&choice);
		self.check(&recipe, what)?;
		Ok(recipe)
	}

	/// Whether `recipe` is a valid recipe within these bounds; the error names the first
	/// field that is not.
	pub fn check(&self, recipe: &Recipe, what: &str) -> Result<(), BoundsError> {
		recipe.validate(what)?;
		let out = |field: &str, reason: String| Err(BoundsError::Outside { what: what.into(), field: field.into(), reason });
		let same = |a: &BlobRef, b: &BlobRef| a.sha256 == b.sha256 && a.size == b.size;
		let files = |m: &ModelInputs| m.files.iter().map(|(n, b)| (n.clone(), b.sha256.clone(), b.size)).collect::<Vec<_>>();
		if files(&recipe.model) != files(&self.model) {
			return out("model.files", "are not the contest's model files".into());
		}
		if recipe.data.format != self.data.format || !same(&recipe.data.train, &self.data.train) {
			return out("data.train", "is not the contest's training set".into());
		}
		let eval_same = match (&recipe.data.eval, &self.data.eval) {
			(None, None) => true,
			(Some(a), Some(b)) => same(a, b),
			_ => false,
		};
		if !eval_same {
			return out("data.eval", "is not the contest's public eval set".into());
		}
		let (l, lora, t) = (&self.limits, &recipe.lora, &recipe.train);
		if !l.ranks.contains(&lora.rank) {
			return out("lora.rank", format!("is {}, not one of {:?}", lora.rank, l.ranks));
		}
		// Compared as targets, not strings (`q` and `q_proj` are one target).
		let allowed: Vec<Target> = l.targets.iter().filter_map(|t| Target::parse(t)).collect();
		if let Some(target) = lora.targets.iter().find(|x| Target::parse(x).is_none_or(|t| !allowed.contains(&t))) {
			return out("lora.targets", format!("names `{target}`, not one of {:?}", l.targets));
		}
		if !(l.lr_min..=l.lr_max).contains(&t.lr) {
			return out("train.lr", format!("is {}, not in [{}, {}]", t.lr, l.lr_min, l.lr_max));
		}
		if t.steps > l.max_steps {
			return out("train.steps", format!("is {}, more than {}", t.steps, l.max_steps));
		}
		if t.checkpoint_every > l.max_checkpoint_every {
			return out("train.checkpoint_every", format!("is {}, more than {}", t.checkpoint_every, l.max_checkpoint_every));
		}
		// The chain admits an interval no longer than the run: a recipe that breaks this would
		// train and then be refused at submission, its collateral lost.
		if t.checkpoint_every > t.steps {
			return out("train.checkpoint_every", format!("is {}, more than the recipe's {} steps", t.checkpoint_every, t.steps));
		}
		if t.seq_len > l.max_seq_len {
			return out("train.seq_len", format!("is {}, more than {}", t.seq_len, l.max_seq_len));
		}
		let tokens = (t.batch_size as u128) * (t.grad_accum as u128) * (t.seq_len as u128);
		if tokens > u128::from(l.max_tokens_per_step) {
			return out("train.batch_size", format!("times grad_accum times seq_len is {tokens} tokens a step, more than {}", l.max_tokens_per_step));
		}
		if t.precision != l.precision {
			return out("train.precision", format!("is {}, not {}", t.precision, l.precision));
		}
		Ok(())
	}
}

/// Lays `top`'s object members over `base`'s, recursively.
fn merge(base: &mut serde_json::Value, top: &serde_json::Value) {
	match (base, top) {
		(serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
			for (k, v) in t {
				match b.get_mut(k) {
					Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
					_ => {
						b.insert(k.clone(), v.clone());
					},
				}
			}
		},
		(b, t) => *b = t.clone(),
	}
}

#[cfg(test)]
mod tests {
	use super::*;
	use serde_json::json;

	fn blob(c: char) -> BlobRef {
		BlobRef { sha256: c.to_string().repeat(64), size: 10, uri: format!("http://store/{c}") }
	}

	fn recipe() -> Recipe {
		let mut files = std::collections::BTreeMap::new();
		files.insert("model.gguf".to_string(), blob('a'));
		Recipe {
			recipe: RECIPE_VERSION.into(),
			model: ModelInputs { files },
			data: DataInputs { format: crate::data::Format::Chat, train: blob('b'), eval: None },
			lora: LoraSection { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q".into(), "v".into()] },
			train: serde_json::from_value(json!({
				"steps": 12, "batch_size": 2, "seq_len": 64, "grad_accum": 2, "lr": 0.01, "seed": 7, "checkpoint_every": 4
			}))
			.unwrap(),
		}
	}

	fn limits() -> Limits {
		Limits {
			ranks: vec![4, 2],
			targets: vec!["v".into(), "q".into(), "k".into()],
			lr_min: 0.0001,
			lr_max: 0.02,
			max_steps: 12,
			max_checkpoint_every: 4,
			max_seq_len: 64,
			max_tokens_per_step: 256,
			precision: Precision::Fp32,
		}
	}

	#[test]
	fn bounds_read_back_from_their_canonical_bytes() {
		let b = Bounds::new(&recipe(), limits());
		assert_eq!(b.limits.ranks, vec![2, 4], "ranks sorted");
		assert_eq!(b.limits.targets, vec!["q", "k", "v"], "targets in the engine's order");
		let bytes = b.to_canonical();
		let text = String::from_utf8(bytes.clone()).unwrap();
		assert!(text.starts_with(r#"{"bounds":"molting/bounds/v1","data":{"format":"chat","#), "{text}");
		assert!(text.contains(r#""lr_max":0.02,"lr_min":0.0001,"#), "{text}");
		assert_eq!(Bounds::parse(&bytes, "b").unwrap(), b);
		let mut spaced = bytes.clone();
		spaced.insert(1, b' ');
		assert!(matches!(Bounds::parse(&spaced, "b"), Err(BoundsError::NotCanonical { offset: 1, .. })));
	}

	#[test]
	fn a_recipe_is_checked_against_every_limit() {
		let b = Bounds::new(&recipe(), limits());
		b.check(&recipe(), "r").unwrap();
		let cases: Vec<(serde_json::Value, &str)> = vec![
			(json!({"lora": {"rank": 8}}), "lora.rank"),
			(json!({"lora": {"targets": ["q", "gate"]}}), "lora.targets"),
			(json!({"train": {"lr": 0.03}}), "train.lr"),
			(json!({"train": {"lr": 0.00009}}), "train.lr"),
			(json!({"train": {"steps": 13}}), "train.steps"),
			(json!({"train": {"checkpoint_every": 5}}), "train.checkpoint_every"),
			(json!({"train": {"steps": 3}}), "train.checkpoint_every"),
			(json!({"train": {"seq_len": 65}}), "train.seq_len"),
			(json!({"train": {"batch_size": 3}}), "train.batch_size"),
			(json!({"train": {"precision": "bf16"}}), "train.precision"),
		];
		for (overrides, field) in cases {
			match b.choose(&overrides, "choice") {
				Err(BoundsError::Outside { field: f, .. }) => assert_eq!(f, field, "{overrides}"),
				other => panic!("{overrides}: {other:?}"),
			}
		}
		// The free choices, and the edges of the ranges.
		let r = b
			.choose(&json!({"lora": {"rank": 2, "alpha": 3.0, "targets": ["k"]}, "train": {"lr": 0.02, "seed": 99, "warmup_steps": 3}}), "c")
			.unwrap();
		assert_eq!((r.lora.rank, r.lora.targets.clone(), r.train.lr, r.train.seed), (2, vec!["k".to_string()], 0.02, 99));
		assert_eq!(r.train.steps, 12, "what the choice leaves alone is the suggestion's");
		b.choose(&json!({"train": {"lr": 0.0001}}), "c").unwrap();
		// Other inputs than the contest's, even with the same names.
		let mut other = recipe();
		other.data.train = blob('c');
		assert!(matches!(b.check(&other, "r"), Err(BoundsError::Outside { field, .. }) if field == "data.train"));
		let mut other = recipe();
		other.model.files.get_mut("model.gguf").unwrap().size = 11;
		assert!(matches!(b.check(&other, "r"), Err(BoundsError::Outside { field, .. }) if field == "model.files"));
		let mut other = recipe();
		other.data.eval = Some(blob('d'));
		assert!(matches!(b.check(&other, "r"), Err(BoundsError::Outside { field, .. }) if field == "data.eval"));
		// Another URI for the same bytes is the same input.
		let mut moved = recipe();
		moved.data.train.uri = "ipfs://elsewhere".into();
		b.check(&moved, "r").unwrap();
		// A choice that is not a recipe's section.
		assert!(matches!(b.choose(&json!({"train": {"speed": 3}}), "c"), Err(BoundsError::Parse { .. })));
		assert!(matches!(b.choose(&json!([1]), "c"), Err(BoundsError::Parse { .. })));
	}

	#[test]
	fn limits_that_do_not_hold_together_are_refused() {
		let edits: Vec<(fn(&mut Bounds), &str)> = vec![
			(|b| b.limits.ranks.clear(), "limits.ranks"),
			(|b| b.limits.targets = vec!["x".into()], "limits.targets"),
			(|b| b.limits.lr_min = 0.1, "limits.lr_min"),
			(|b| b.limits.max_steps = 0, "limits.max_steps"),
			(|b| b.limits.max_checkpoint_every = 0, "limits.max_checkpoint_every"),
			(|b| b.limits.max_checkpoint_every = 13, "limits.max_checkpoint_every"),
			(|b| b.limits.max_steps = 1_000_001, "limits.max_steps"),
			(|b| b.limits.max_tokens_per_step = 1, "limits.max_seq_len"),
			(|b| b.bounds = "molting/bounds/v0".into(), "bounds"),
		];
		for (edit, field) in edits {
			let mut b = Bounds::new(&recipe(), limits());
			edit(&mut b);
			match Bounds::parse(&b.to_canonical(), "b") {
				Err(BoundsError::Invalid { field: f, .. }) => assert_eq!(f, field),
				other => panic!("{field}: {other:?}"),
			}
		}
		// A suggestion outside its own limits.
		let mut b = Bounds::new(&recipe(), limits());
		b.suggested.train.lr = 0.5;
		assert!(matches!(Bounds::parse(&b.to_canonical(), "b"), Err(BoundsError::Outside { field, .. }) if field == "train.lr"));
	}
}
