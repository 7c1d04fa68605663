//! The `molt-worker` binary itself: a run killed with SIGKILL mid-way and resumed ends at
//! the hash of an uninterrupted run; `replay` confirms and refuses; errors are one line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molting_engine::checkpoint::Manifest;
use molting_engine::testing::write_tiny_job;

fn worker() -> Command {
	let mut c = Command::new(env!("CARGO_BIN_EXE_molt-worker"));
	c.stdout(Stdio::piped()).stderr(Stdio::piped());
	c
}

/// A spec for a bigger tiny job (long enough to kill it in the middle).
fn setup(dir: &Path) -> std::path::PathBuf {
	write_tiny_job(dir, |s| {
		s.replace("steps = 12", "steps = 400")
			.replace("checkpoint_every = 4", "checkpoint_every = 20")
			.replace("seq_len = 256", "seq_len = 64")
	})
}

fn final_hash(run: &Path) -> String {
	let s: serde_json::Value =
		serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
	s["final_state_hash"].as_str().unwrap().to_string()
}

#[test]
fn a_run_killed_by_sigkill_resumes_to_the_uninterrupted_hash() {
	let dir = tempfile::tempdir().unwrap();
	let spec = setup(dir.path());
	let whole = dir.path().join("whole");
	let out = worker().args(["train", "--spec"]).arg(&spec).arg("--out").arg(&whole).output().unwrap();
	assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
	assert!(String::from_utf8_lossy(&out.stdout).contains("merkle root:"));

	// Kill -9 once a few checkpoints exist (not at a checkpoint boundary on purpose).
	let killed = dir.path().join("killed");
	let mut child =
		worker().args(["--threads", "1", "train", "--spec"]).arg(&spec).arg("--out").arg(&killed).spawn().unwrap();
	let started = Instant::now();
	loop {
		let n = Manifest::load(&killed).map(|m| m.hashes.len()).unwrap_or(0);
		if n >= 4 {
			break;
		}
		assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
		assert!(started.elapsed() < Duration::from_secs(120), "no checkpoints appeared");
		std::thread::sleep(Duration::from_millis(5));
	}
	child.kill().unwrap(); // SIGKILL
	child.wait().unwrap();
	assert!(!killed.join("summary.json").exists(), "killed before the end");

	let out = worker().args(["--threads", "2", "resume"]).arg(&killed).output().unwrap();
	assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
	assert_eq!(final_hash(&killed), final_hash(&whole));
	assert_eq!(Manifest::load(&killed).unwrap().merkle_root, Manifest::load(&whole).unwrap().merkle_root);

	// Replay through the binary: a match exits 0, a tampered file is a one-line error.
	let out = worker().args(["replay"]).arg(&whole).args(["--from", "2"]).output().unwrap();
	assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("MATCH: checkpoint 3 is confirmed"));
	let ckpt = Manifest::checkpoint_path(&whole, 2);
	let mut bytes = std::fs::read(&ckpt).unwrap();
	let last = bytes.len() - 1;
	bytes[last] ^= 0x40;
	std::fs::write(&ckpt, bytes).unwrap();
	let out = worker().args(["replay"]).arg(&whole).args(["--from", "2"]).output().unwrap();
	assert!(!out.status.success());
	let err = String::from_utf8_lossy(&out.stderr);
	assert!(err.contains("00002.ckpt") && err.contains("does not match the recorded"), "{err}");
}

#[test]
fn bad_arguments_and_inputs_are_one_line_errors() {
	let dir = tempfile::tempdir().unwrap();
	let out = worker()
		.args(["train", "--spec"])
		.arg(dir.path().join("missing.toml"))
		.arg("--out")
		.arg(dir.path().join("r"))
		.output()
		.unwrap();
	assert!(!out.status.success());
	let err = String::from_utf8_lossy(&out.stderr);
	assert!(err.contains("missing.toml"), "{err}");
	let out = worker().args(["inspect"]).arg(dir.path()).output().unwrap();
	assert!(!out.status.success());
	assert!(String::from_utf8_lossy(&out.stderr).contains("not a model"));
}

#[test]
fn backend_auto_trains_on_a_usable_gpu_else_on_the_cpu_after_one_line_and_cuda_says_why_not() {
	let dir = tempfile::tempdir().unwrap();
	let spec = write_tiny_job(dir.path(), |s| s.replace("steps = 12", "steps = 2"));
	let train = |backend: &str, out: &str| {
		worker().args(["--backend", backend, "train", "--spec"]).arg(&spec).arg("--out").arg(dir.path().join(out)).output().unwrap()
	};
	let gpu = molting_cuda::Cuda::new(molting_engine::spec::Precision::Fp32);
	let auto = train("auto", "auto");
	let err = String::from_utf8_lossy(&auto.stderr);
	assert!(auto.status.success(), "{err}");
	let cpu = train("cpu", "cpu");
	assert!(cpu.status.success());
	assert!(!String::from_utf8_lossy(&cpu.stderr).contains("molt-worker: "), "no notice for --backend cpu");
	let cuda = train("cuda", "cuda");
	let cuda_err = String::from_utf8_lossy(&cuda.stderr);
	match gpu {
		Err(why) => {
			assert!(why.is_unavailable(), "a GPU here, but the CUDA backend cannot be made: {why}");
			eprintln!("no CUDA backend here ({why}): auto falls back, cuda refuses");
			let notices: Vec<&str> = err.lines().filter(|l| l.starts_with("molt-worker: ")).collect();
			assert_eq!(notices.len(), 1, "one notice line:\n{err}");
			assert!(notices[0].ends_with("; using the CPU backend"), "{}", notices[0]);
			if matches!(molting_cuda::detect(), molting_cuda::Detection::Unavailable(_)) {
				assert!(notices[0].starts_with("molt-worker: no CUDA GPU to train on ("), "{}", notices[0]);
			}
			assert_eq!(final_hash(&dir.path().join("auto")), final_hash(&dir.path().join("cpu")), "auto fell back to the CPU class");
			assert!(!cuda.status.success(), "--backend cuda without a usable GPU");
			assert_eq!(cuda_err.lines().count(), 1, "{cuda_err}");
			assert!(cuda_err.starts_with("molt-worker: --backend cuda: "), "{cuda_err}");
			assert!(!dir.path().join("cuda").join("summary.json").exists(), "nothing trained");
		},
		Ok(g) => {
			let line = format!("molt-worker: using {} ({})", g.device, molting_engine::backend::Backend::class(&g));
			assert!(err.lines().any(|l| l == line), "auto names the GPU and its class:\n{err}");
			assert!(cuda.status.success(), "{cuda_err}");
			assert_eq!(final_hash(&dir.path().join("auto")), final_hash(&dir.path().join("cuda")), "auto is the CUDA class");
		},
	}
}
