//! A delivered result as blobs: what a miner publishes and an owner fetches.
//!
//! The attested result hash is the SHA-256 of the *result manifest*, a small canonical
//! JSON document (the recipe's rules) naming every other blob by SHA-256, size and URI:
//!
//! ```json
//! {"checkpoints":{"files":[{"sha256":…,"size":…,"uri":…},…],"manifest":{…}},
//!  "gguf":{…},"job_id":7,"merkle_root":"…","peft":{"adapter_config.json":{…},"adapter_model.safetensors":{…}},
//!  "recipe":"<recipe sha256>","result":"molting/result/v1"}
//! ```
//!
//! - `peft`: the Hugging Face PEFT adapter's files (load with `PeftModel.from_pretrained`);
//! - `gguf`: the same adapter as a GGUF LoRA (llama.cpp's `--lora`);
//! - `checkpoints`: every checkpoint file, in order, and `checkpoints.json` (steps, state
//!   hashes, Merkle root) — what validators replay segments of;
//! - `recipe_uri` (contests only, where each miner writes its own recipe): where the recipe
//!   `recipe` names is fetched from. Absent for a compute job, whose recipe the chain names.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use molting_engine::recipe::{canonical_json, BlobRef};
use molting_store::{Cache, Publisher};
use serde::{Deserialize, Serialize};

pub const RESULT_VERSION: &str = "molting/result/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
	pub manifest: BlobRef,
	pub files: Vec<BlobRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultManifest {
	pub result: String,
	pub job_id: u64,
	pub recipe: String,
	#[serde(default, skip_serializing_if = "Option::is_none")]
	pub recipe_uri: Option<String>,
	pub merkle_root: String,
	pub peft: BTreeMap<String, BlobRef>,
	pub gguf: BlobRef,
	pub checkpoints: Checkpoints,
}

impl ResultManifest {
	pub fn to_canonical(&self) -> Vec<u8> {
		canonical_json(&serde_json::to_value(self).expect("serialises"))
	}

	/// Reads a manifest, refusing one that is not canonical or not of this version.
	pub fn parse(bytes: &[u8], what: &str) -> Result<ResultManifest> {
		let m: ResultManifest = serde_json::from_slice(bytes).with_context(|| format!("{what}: not a result manifest"))?;
		if m.to_canonical() != bytes {
			bail!("{what}: result manifest not in canonical form");
		}
		if m.result != RESULT_VERSION {
			bail!("{what}: result manifest version `{}`, this worker reads `{RESULT_VERSION}`", m.result);
		}
		Ok(m)
	}
}

async fn publish_file(publisher: &Publisher, path: &Path) -> Result<BlobRef> {
	let size = std::fs::metadata(path).with_context(|| path.display().to_string())?.len();
	let (sha256, uri) = publisher.put_file(path).await?;
	Ok(BlobRef { sha256, size, uri })
}

/// Publishes a finished run's adapter, checkpoints and their manifest, then the result
/// manifest (naming `recipe_uri`, a contest's recipe as published); returns the manifest
/// and its blob.
pub async fn publish_run(
	publisher: &Publisher,
	run: &Path,
	job_id: u64,
	recipe_sha256: &str,
	recipe_uri: Option<String>,
) -> Result<(ResultManifest, BlobRef)> {
	let ckpt = molting_engine::checkpoint::Manifest::load(run)?;
	let mut files = Vec::new();
	for i in 0..ckpt.hashes.len() {
		files.push(publish_file(publisher, &molting_engine::checkpoint::Manifest::checkpoint_path(run, i)).await?);
	}
	let manifest = publish_file(publisher, &molting_engine::checkpoint::Manifest::path(run)).await?;
	let mut peft = BTreeMap::new();
	for name in ["adapter_config.json", "adapter_model.safetensors"] {
		peft.insert(name.to_string(), publish_file(publisher, &run.join("adapter").join(name)).await?);
	}
	let gguf = publish_file(publisher, &run.join("adapter.gguf")).await?;
	let result = ResultManifest {
		result: RESULT_VERSION.into(),
		job_id,
		recipe: recipe_sha256.into(),
		recipe_uri,
		merkle_root: ckpt.merkle_root.clone(),
		peft,
		gguf,
		checkpoints: Checkpoints { manifest, files },
	};
	let bytes = result.to_canonical();
	let size = bytes.len() as u64;
	let (sha256, uri) = publisher.put(bytes).await?;
	Ok((result, BlobRef { sha256, size, uri }))
}

/// What a fetched result must say of itself: the chain's job, recipe and attested root.
pub struct Expected {
	pub job_id: u64,
	pub recipe_sha256: String,
	pub checkpoint_root: String,
}

/// The PEFT files a result may carry (nothing else is written: no pickles, no paths).
pub const PEFT_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

/// Fetches result `sha256` from `uri` and its adapter files (each verified) into `out`
/// (`out/adapter/` PEFT, `out/adapter.gguf`, `out/result.json`), after checking that the
/// manifest names the job, recipe and checkpoint root the chain holds.
pub async fn fetch_result(cache: &Cache, uri: &str, sha256: &str, expected: &Expected, out: &Path) -> Result<ResultManifest> {
	let path = cache.fetch(uri, sha256, None).await?;
	let bytes = std::fs::read(&path)?;
	if molting_store::sha256_hex(&bytes) != sha256 {
		bail!("{}: changed on disk since it was fetched", path.display());
	}
	let manifest = ResultManifest::parse(&bytes, uri)?;
	if manifest.job_id != expected.job_id
		|| manifest.recipe != expected.recipe_sha256
		|| manifest.merkle_root != expected.checkpoint_root
	{
		bail!(
			"{uri}: the result is for job {} (recipe {}, checkpoint root {}), not for job {} (recipe {}, attested root {})",
			manifest.job_id,
			manifest.recipe,
			manifest.merkle_root,
			expected.job_id,
			expected.recipe_sha256,
			expected.checkpoint_root
		);
	}
	let names: Vec<&str> = manifest.peft.keys().map(String::as_str).collect();
	if names != PEFT_FILES {
		bail!("{uri}: the result's PEFT adapter has the files {names:?}, not exactly {PEFT_FILES:?}");
	}
	std::fs::create_dir_all(out.join("adapter")).with_context(|| out.display().to_string())?;
	for (name, blob) in &manifest.peft {
		let p = cache.fetch(&blob.uri, &blob.sha256, Some(blob.size)).await?;
		std::fs::copy(&p, out.join("adapter").join(name))?;
	}
	let p = cache.fetch(&manifest.gguf.uri, &manifest.gguf.sha256, Some(manifest.gguf.size)).await?;
	std::fs::copy(&p, out.join("adapter.gguf"))?;
	std::fs::write(out.join("result.json"), &bytes)?;
	Ok(manifest)
}
