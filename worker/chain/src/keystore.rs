//! The keystore: a directory holding the worker key (sr25519, signs attestations: a hot
//! key, never the account's) and the account key (signs extrinsics, holds the collateral
//! and is paid).
//!
//! ```text
//! <dir>/            mode 0700
//!   worker.secret   mode 0600  the worker key's secret URI (`0x` + 32-byte seed, or a URI)
//!   account.secret  mode 0600  the account's secret URI (`//Bob` on a dev chain)
//! ```
//!
//! Secrets are read from these files and never printed; commands print public keys and
//! addresses only.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subxt_signer::{sr25519::Keypair, SecretUri};

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error("{path}: not a valid sr25519 secret URI")]
	BadSecret { path: PathBuf },
	#[error("{path}: already exists; refusing to overwrite a key")]
	Exists { path: PathBuf },
	#[error("{path}: readable by others (mode {mode:o}); keys must be 0600")]
	Permissions { path: PathBuf, mode: u32 },
	#[error("`{0}` is not a valid sr25519 secret URI")]
	BadUri(String),
}

pub struct Keystore {
	pub worker: Keypair,
	pub account: Keypair,
}

const WORKER: &str = "worker.secret";
const ACCOUNT: &str = "account.secret";

impl Keystore {
	/// Creates a keystore in `dir`: a fresh random worker key, and the account `account`
	/// (a secret URI such as `//Bob`) or a fresh random one.
	pub fn create(dir: &Path, account: Option<&str>) -> Result<Keystore, KeystoreError> {
		let io = |path: &Path| {
			let path = path.to_path_buf();
			move |source| KeystoreError::Io { path, source }
		};
		std::fs::create_dir_all(dir).map_err(io(dir))?;
		std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
		let worker_uri = format!("0x{}", hex::encode(random_seed().map_err(io(Path::new("/dev/urandom")))?));
		let account_uri = match account {
			Some(uri) => {
				parse(uri).ok_or_else(|| KeystoreError::BadUri("the --account value".into()))?;
				uri.to_string()
			},
			None => format!("0x{}", hex::encode(random_seed().map_err(io(Path::new("/dev/urandom")))?)),
		};
		for (name, secret) in [(WORKER, &worker_uri), (ACCOUNT, &account_uri)] {
			let path = dir.join(name);
			let mut f = std::fs::OpenOptions::new()
				.write(true)
				.create_new(true)
				.mode(0o600)
				.open(&path)
				.map_err(|source| {
					if source.kind() == std::io::ErrorKind::AlreadyExists {
						KeystoreError::Exists { path: path.clone() }
					} else {
						KeystoreError::Io { path: path.clone(), source }
					}
				})?;
			f.write_all(secret.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&path))?;
		}
		Self::open(dir)
	}

	/// Opens the keystore in `dir`, refusing key files others can read.
	pub fn open(dir: &Path) -> Result<Keystore, KeystoreError> {
		Ok(Keystore { worker: read_key(&dir.join(WORKER))?, account: read_key(&dir.join(ACCOUNT))? })
	}
}

fn read_key(path: &Path) -> Result<Keypair, KeystoreError> {
	let meta = std::fs::metadata(path).map_err(|source| KeystoreError::Io { path: path.into(), source })?;
	let mode = meta.permissions().mode() & 0o777;
	if mode & 0o077 != 0 {
		return Err(KeystoreError::Permissions { path: path.into(), mode });
	}
	let mut text = String::new();
	std::fs::File::open(path)
		.and_then(|mut f| f.read_to_string(&mut text))
		.map_err(|source| KeystoreError::Io { path: path.into(), source })?;
	parse(text.trim()).ok_or_else(|| KeystoreError::BadSecret { path: path.into() })
}

/// A keypair from a secret URI (`//Alice`, `0x<seed>`, a phrase with derivations).
pub fn parse(uri: &str) -> Option<Keypair> {
	let uri: SecretUri = uri.parse().ok()?;
	Keypair::from_uri(&uri).ok()
}

/// Writes `bytes` to `path` readable by the owner only (0600): a temporary file, synced,
/// then renamed over `path`, so a crash leaves the old file or the new one.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
	let io = |source| KeystoreError::Io { path: path.into(), source };
	let tmp = path.with_extension("tmp");
	let _ = std::fs::remove_file(&tmp);
	let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
	f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
	std::fs::rename(&tmp, path).map_err(io)
}

/// 32 random bytes from the operating system.
pub fn random_seed() -> std::io::Result<[u8; 32]> {
	let mut seed = [0u8; 32];
	std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
	Ok(seed)
}
