//! Adapters out, in the two formats personas are used in:
//!
//! - Hugging Face PEFT: `adapter_config.json` + `adapter_model.safetensors`, loadable with
//!   `PeftModel.from_pretrained` unchanged (`lora_A`: `[r × in]`, `lora_B`: `[out × r]`).
//! - GGUF LoRA, as llama.cpp's `--lora` loads it: `general.type = adapter`,
//!   `adapter.type = lora`, `adapter.lora.alpha`, tensors `blk.N.<layer>.weight.lora_a` /
//!   `lora_b`; for `llama` models the Q/K `lora_b` rows in llama.cpp's permuted order, as
//!   its base Q/K weights are.

use std::collections::HashMap;
use std::path::Path;

use crate::gguf::{GgmlType, GgufWriter, Value};
use crate::lora::{Adapter, Target};
use crate::model::{permute_rows_to_gguf, ModelConfig};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
	v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The PEFT name of a slot's tensor (`A` or `B`).
pub fn peft_name(layer: usize, target: Target, which: char) -> String {
	format!("base_model.model.model.layers.{layer}.{}.lora_{which}.weight", target.hf_module())
}

/// Writes the PEFT adapter into `dir`; `base_model` names the base model (a name, never a
/// local path: the adapter is a published, content-addressed result).
pub fn write_peft(adapter: &Adapter, _config: &ModelConfig, dir: &Path, base_model: &str) -> std::io::Result<()> {
	std::fs::create_dir_all(dir)?;
	let l = &adapter.layout;
	let r = l.rank;
	let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
	for s in &l.slots {
		tensors.push((peft_name(s.layer, s.target, 'A'), vec![r, s.in_dim], f32_bytes(l.a(s, &adapter.params))));
		tensors.push((peft_name(s.layer, s.target, 'B'), vec![s.out_dim, r], f32_bytes(l.b(s, &adapter.params))));
	}
	let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
		.iter()
		.map(|(n, shape, bytes)| {
			(
				n.clone(),
				safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
					.expect("shape matches data"),
			)
		})
		.collect();
	let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
	let bytes = safetensors::serialize(views, Some(meta)).map_err(std::io::Error::other)?;
	std::fs::write(dir.join("adapter_model.safetensors"), bytes)?;
	let targets: Vec<String> = adapter
		.config
		.targets
		.iter()
		.map(|t| t.hf_module().rsplit('.').next().unwrap_or_default().to_string())
		.collect();
	let config = serde_json::json!({
		"peft_type": "LORA",
		"task_type": "CAUSAL_LM",
		"base_model_name_or_path": base_model,
		"r": r,
		"lora_alpha": adapter.config.alpha,
		"lora_dropout": adapter.config.dropout,
		"target_modules": targets,
		"bias": "none",
		"fan_in_fan_out": false,
		"inference_mode": true,
		"init_lora_weights": true,
		"use_rslora": false,
		"use_dora": false,
		"modules_to_save": null,
	});
	std::fs::write(dir.join("adapter_config.json"), serde_json::to_vec_pretty(&config)?)
}

/// Writes the GGUF LoRA to `path`; `base_model` as for [`write_peft`].
pub fn write_gguf(adapter: &Adapter, config: &ModelConfig, path: &Path, base_model: &str) -> std::io::Result<()> {
	// llama.cpp permutes Q/K rows for `llama` models (GGUF bases say so; HF bases are
	// converted by llama.cpp as `llama` unless they are qwen2, which carries biases).
	let arch = if config.attention_bias { "qwen2" } else { "llama" };
	let permuted = arch == "llama";
	let l = &adapter.layout;
	let r = l.rank;
	let mut w = GgufWriter::new();
	w.meta("general.architecture", Value::Str(arch.into()))
		.meta("general.type", Value::Str("adapter".into()))
		.meta("general.name", Value::Str("molting persona adapter".into()))
		.meta("general.base_model", Value::Str(base_model.into()))
		.meta("adapter.type", Value::Str("lora".into()))
		.meta("adapter.lora.alpha", Value::F32(adapter.config.alpha));
	for s in &l.slots {
		let name = format!("blk.{}.{}.weight", s.layer, s.target.gguf_name());
		let mut b = l.b(s, &adapter.params).to_vec();
		if permuted && s.target == Target::Q {
			b = permute_rows_to_gguf(&b, config.num_heads, r);
		} else if permuted && s.target == Target::K {
			b = permute_rows_to_gguf(&b, config.num_kv_heads, r);
		}
		w.tensor(&format!("{name}.lora_a"), &[r, s.in_dim], l.a(s, &adapter.params), GgmlType::F32);
		w.tensor(&format!("{name}.lora_b"), &[s.out_dim, r], &b, GgmlType::F32);
	}
	w.write(path)
}

/// Reads a PEFT adapter directory (as written by [`write_peft`], or by PEFT for a model of
/// this shape) into the canonical layout.
pub fn read_peft(dir: &Path, config: &ModelConfig) -> Result<Adapter, String> {
	let cfg_path = dir.join("adapter_config.json");
	let text = std::fs::read_to_string(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
	let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
	let rank = j["r"]
		.as_u64()
		.filter(|&r| r > 0)
		.ok_or_else(|| format!("{}: `r` must be a positive integer", cfg_path.display()))? as usize;
	if j["use_rslora"].as_bool() == Some(true) || j["use_dora"].as_bool() == Some(true) {
		return Err(format!("{}: rsLoRA and DoRA adapters are not supported", cfg_path.display()));
	}
	let alpha = j["lora_alpha"].as_f64().ok_or_else(|| format!("{}: no `lora_alpha`", cfg_path.display()))? as f32;
	let mut targets: Vec<Target> = j["target_modules"]
		.as_array()
		.ok_or_else(|| format!("{}: `target_modules` must be a list", cfg_path.display()))?
		.iter()
		.map(|t| {
			t.as_str()
				.and_then(Target::parse)
				.ok_or_else(|| format!("{}: unknown target module {t}", cfg_path.display()))
		})
		.collect::<Result<_, _>>()?;
	targets.sort();
	targets.dedup();
	let lcfg = crate::lora::LoraConfig { rank, alpha, dropout: 0.0, targets };
	let n = crate::lora::Layout::new(config, &lcfg).len;
	let mut adapter = Adapter::from_params(config, lcfg, vec![0.0; n]);
	let st_path = dir.join("adapter_model.safetensors");
	let bytes = std::fs::read(&st_path).map_err(|e| format!("{}: {e}", st_path.display()))?;
	let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", st_path.display()))?;
	let slots = adapter.layout.slots.clone();
	for s in &slots {
		for (which, off, shape) in [('A', s.a, [rank, s.in_dim]), ('B', s.b, [s.out_dim, rank])] {
			let name = peft_name(s.layer, s.target, which);
			let t = st.tensor(&name).map_err(|_| format!("{}: tensor `{name}` is missing", st_path.display()))?;
			if t.shape() != shape || t.dtype() != safetensors::Dtype::F32 {
				return Err(format!(
					"{}: tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
					st_path.display(),
					t.dtype(),
					t.shape()
				));
			}
			for (p, c) in adapter.params[off..off + shape[0] * shape[1]].iter_mut().zip(t.data().chunks_exact(4)) {
				*p = f32::from_le_bytes(c.try_into().unwrap());
			}
		}
	}
	Ok(adapter)
}
