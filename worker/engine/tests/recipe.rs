//! Recipes: one canonical byte form, so one hash; refused when not canonical or invalid;
//! a run directory that holds a recipe, not a spec directory; the miner's seed.

use molting_engine::recipe::{miner_seed, Recipe, RecipeError};
use molting_engine::testing::write_tiny_job;
use molting_engine::train::{self, Job, RunOptions};

fn tiny_recipe(dir: &std::path::Path) -> Recipe {
	let spec = write_tiny_job(dir, |s| s);
	let (spec_value, _) = molting_engine::spec::Spec::load(&spec).unwrap();
	spec_value.to_recipe(&spec).unwrap()
}

#[test]
fn the_canonical_form_is_sorted_compact_and_reads_back_to_the_same_bytes() {
	let dir = tempfile::tempdir().unwrap();
	let recipe = tiny_recipe(dir.path());
	let bytes = recipe.to_canonical();
	let text = std::str::from_utf8(&bytes).unwrap();
	assert!(!text.contains(' ') || text.contains("\" "), "no whitespace outside strings: {text}");
	assert!(text.starts_with("{\"data\":{\"eval\":{\"sha256\":"), "keys sorted: {text}");
	assert!(text.contains("\"format\":\"chat\",\"train\":{\"sha256\":"), "keys sorted: {text}");
	// Floats are the shortest decimal that reads back as the same f32; no exponents.
	assert!(text.contains("\"lr\":0.01,"), "{text}");
	assert!(text.contains("\"eps\":0.00000001"), "{text}");
	assert!(text.contains("\"recipe\":\"molting/recipe/v1\""), "{text}");
	let back = Recipe::parse(&bytes, "test").unwrap();
	assert_eq!(back, recipe);
	assert_eq!(back.to_canonical(), bytes);
	// What another implementation reads (f64) rounds to the trained f32 exactly.
	let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
	assert_eq!(v["train"]["lr"].as_f64().unwrap() as f32, recipe.train.lr);
	assert_eq!(v["lora"]["alpha"].as_f64().unwrap() as f32, recipe.lora.alpha);
}

#[test]
fn the_same_recipe_written_another_way_is_refused_not_rehashed() {
	let dir = tempfile::tempdir().unwrap();
	let bytes = tiny_recipe(dir.path()).to_canonical();
	let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()).unwrap();
	assert!(matches!(Recipe::parse(&pretty, "pretty.json"), Err(RecipeError::NotCanonical { .. })));
	let text = String::from_utf8(bytes.clone()).unwrap();
	let long_float = text.replace("\"lr\":0.01,", "\"lr\":0.0100,");
	assert!(matches!(Recipe::parse(long_float.as_bytes(), "x"), Err(RecipeError::NotCanonical { .. })));
	let eval_start = text.find("\"eval\":").unwrap();
	let eval_end = text.find("\"format\":").unwrap();
	let null_eval = format!("{}\"eval\":null,{}", &text[..eval_start], &text[eval_end..]);
	assert!(Recipe::parse(null_eval.as_bytes(), "x").is_err(), "absent is absent, never null");
	let unknown = text.replacen("{\"data\"", "{\"comment\":\"hi\",\"data\"", 1);
	assert!(matches!(Recipe::parse(unknown.as_bytes(), "x"), Err(RecipeError::Parse { .. })));
	let other_version = text.replace("molting/recipe/v1", "molting/recipe/v9");
	match Recipe::parse(other_version.as_bytes(), "x") {
		Err(RecipeError::Invalid { field, .. }) => assert_eq!(field, "recipe"),
		r => panic!("{r:?}"),
	}
	let bad_name = text.replacen("\"files\":{\"", "\"files\":{\"../", 1);
	match Recipe::parse(bad_name.as_bytes(), "x") {
		Err(RecipeError::Invalid { field, reason, .. }) => {
			assert_eq!(field, "model.files");
			assert!(reason.contains("not a plain file name"), "{reason}");
		},
		r => panic!("a path in a model file name must be refused, got {r:?}"),
	}
}

#[test]
fn where_the_blobs_come_from_changes_the_recipe_hash_but_not_the_training_identity() {
	let dir = tempfile::tempdir().unwrap();
	let a = tiny_recipe(dir.path());
	let mut b = a.clone();
	b.data.train.uri = "https://mirror.example.org/blobs/x".into();
	assert_ne!(a.sha256(), b.sha256());
	assert_eq!(a.training_id(), b.training_id());
	let mut c = a.clone();
	c.train.lr *= 2.0;
	assert_ne!(a.training_id(), c.training_id(), "a parameter is part of the identity");
}

#[test]
fn minus_zero_is_written_as_zero_and_big_seeds_are_refused() {
	let dir = tempfile::tempdir().unwrap();
	let mut r = tiny_recipe(dir.path());
	let plus = r.to_canonical();
	r.train.weight_decay = 0.0;
	let zero = r.to_canonical();
	r.train.weight_decay = -0.0;
	assert_eq!(r.to_canonical(), zero, "-0 and 0 are one value, one spelling");
	assert_ne!(plus, zero);
	assert!(Recipe::parse(&zero, "x").is_ok());
	r.train.seed = 1 << 53;
	match Recipe::parse(&r.to_canonical(), "x") {
		Err(RecipeError::Invalid { field, .. }) => assert_eq!(field, "train.seed"),
		other => panic!("{other:?}"),
	}
}

#[test]
fn target_order_and_repeats_do_not_change_the_recipe() {
	let dir = tempfile::tempdir().unwrap();
	let a = tiny_recipe(dir.path());
	let mut b = a.clone();
	b.lora.targets.reverse();
	b.lora.targets.push(b.lora.targets[0].clone());
	assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn a_run_records_its_recipe_and_seed_and_resumes_from_them_alone() {
	let dir = tempfile::tempdir().unwrap();
	let recipe = tiny_recipe(dir.path());
	let seed = miner_seed(recipe.train.seed, 7, &[3; 32]);
	let inputs = molting_engine::recipe::LocalInputs { cache: dir.path().join("cache") };
	let job = Job::from_recipe(recipe.clone(), seed, &inputs).unwrap();
	let run = dir.path().join("run");
	train::train(&job, &run, &molting_engine::backend::cpu::Cpu, RunOptions { stop_after: Some(4), on_step: None }).unwrap();
	assert_eq!(std::fs::read(run.join("recipe.json")).unwrap(), recipe.to_canonical());
	assert!(!run.join("job.toml").exists(), "no spec in the run directory");
	let resumed = Job::from_run(&run).unwrap();
	assert_eq!((resumed.seed, resumed.recipe_hash), (seed, recipe.sha256()));
	let summary = train::resume_job(&resumed, &run, &molting_engine::backend::cpu::Cpu, RunOptions::default()).unwrap().unwrap();
	// The same recipe under the recipe's own seed is another run.
	let own = Job::from_recipe(recipe.clone(), recipe.train.seed, &inputs).unwrap();
	let other = dir.path().join("own-seed");
	let s2 = train::train(&own, &other, &molting_engine::backend::cpu::Cpu, RunOptions::default()).unwrap().unwrap();
	assert_ne!(summary.final_state_hash, s2.final_state_hash, "the seed is part of the run");
	// The adapters name their base model by content, not by a path on this machine.
	let config = std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap();
	assert!(config.contains("\"base_model_name_or_path\": \"sha256:"), "{config}");
	assert!(!config.contains(&dir.path().display().to_string()), "{config}");
}

#[test]
fn the_miner_seed_depends_on_the_recipe_seed_the_job_and_the_account() {
	let base = miner_seed(42, 0, &[1; 32]);
	assert_ne!(base, miner_seed(43, 0, &[1; 32]));
	assert_ne!(base, miner_seed(42, 1, &[1; 32]));
	assert_ne!(base, miner_seed(42, 0, &[2; 32]));
	// The documented construction, computed independently here.
	use sha2::Digest;
	let mut h = sha2::Sha256::new();
	h.update(b"molting/miner-seed/v1");
	h.update(42u64.to_le_bytes());
	h.update(0u64.to_le_bytes());
	h.update([1u8; 32]);
	let d = h.finalize();
	assert_eq!(base, u64::from_le_bytes(d[..8].try_into().unwrap()));
}

#[test]
fn inputs_whose_bytes_changed_after_the_recipe_was_written_are_refused_as_they_are_read() {
	let dir = tempfile::tempdir().unwrap();
	let recipe = tiny_recipe(dir.path());
	let inputs = molting_engine::recipe::LocalInputs { cache: dir.path().join("cache") };
	let train_path = dir.path().join("tiny.jsonl");
	let good = std::fs::read(&train_path).unwrap();
	std::fs::write(&train_path, b"{}\n").unwrap();
	let err = Job::from_recipe(recipe.clone(), 1, &inputs).err().expect("refused");
	assert!(
		matches!(err, train::TrainError::Data(molting_engine::data::DataError::HashMismatch { .. })),
		"{err}"
	);
	std::fs::write(&train_path, good).unwrap();
	let config = dir.path().join("tiny-model/config.json");
	let mut text = std::fs::read_to_string(&config).unwrap();
	text.push(' ');
	std::fs::write(&config, text).unwrap();
	let err = Job::from_recipe(recipe, 1, &inputs).err().expect("refused");
	assert!(matches!(err, train::TrainError::ModelHashMismatch { .. }), "{err}");
	assert!(err.to_string().contains("config.json"), "the error names the file: {err}");
}
