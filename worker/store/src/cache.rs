//! The local blob cache and fetching into it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
	#[error("{uri}: {reason}")]
	Unreachable { uri: String, reason: String },
	#[error("{uri}: the body hashes to {found}, not {expected}, the name it was asked for")]
	HashMismatch { uri: String, expected: String, found: String },
	#[error("{uri}: larger than the limit of {limit} bytes")]
	TooLarge { uri: String, limit: u64 },
	#[error("{uri}: not the {expected} bytes it should be (read {size})")]
	WrongSize { uri: String, size: u64, expected: u64 },
	#[error("{uri}: unsupported URI scheme (http://, https:// and file:// are)")]
	Scheme { uri: String },
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
}

/// A directory of blobs, each stored under its SHA-256 (`sha256/<hex>`) once verified.
#[derive(Clone)]
pub struct Cache {
	dir: PathBuf,
	client: reqwest::Client,
	/// Largest blob fetched.
	pub max_size: u64,
}

impl Cache {
	/// A cache in `dir` (created on first write); blobs above `max_size` bytes are refused.
	pub fn new(dir: impl Into<PathBuf>, max_size: u64) -> Cache {
		crate::install_tls_provider();
		let client = reqwest::Client::builder()
			.connect_timeout(Duration::from_secs(10))
			.read_timeout(Duration::from_secs(60))
			.user_agent(concat!("molt-worker/", env!("CARGO_PKG_VERSION")))
			.build()
			.expect("a reqwest client with rustls builds");
		let dir = dir.into();
		// Partial downloads of a process that died (kill -9) are never resumed: drop them.
		if let Ok(entries) = std::fs::read_dir(dir.join("tmp")) {
			for e in entries.flatten() {
				if e.path().extension().is_some_and(|x| x == "part") {
					let _ = std::fs::remove_file(e.path());
				}
			}
		}
		Cache { dir, client, max_size }
	}

	pub fn dir(&self) -> &Path {
		&self.dir
	}

	/// Where blob `sha256` lives once cached.
	pub fn path_of(&self, sha256: &str) -> PathBuf {
		self.dir.join("sha256").join(sha256)
	}

	/// The cached blob, if it is there and its bytes still hash to its name (checked on
	/// every read: a file corrupted on disk is dropped, and fetched again by `fetch`).
	pub fn get(&self, sha256: &str) -> Option<PathBuf> {
		let p = self.path_of(sha256);
		if !p.is_file() {
			return None;
		}
		match hash_file(&p) {
			Ok(h) if h == sha256 => Some(p),
			_ => {
				tracing::warn!("{}: does not hash to its name; dropped from the cache", p.display());
				let _ = std::fs::remove_file(&p);
				None
			},
		}
	}

	/// Fetches `uri` unless blob `sha256` is cached already, checks that its bytes hash to
	/// `sha256` (and have `size` bytes, if given), and returns its path in the cache.
	pub async fn fetch(&self, uri: &str, sha256: &str, size: Option<u64>) -> Result<PathBuf, FetchError> {
		if !crate::is_blob_name(sha256) {
			return Err(FetchError::Unreachable { uri: uri.into(), reason: format!("`{sha256}` is not a SHA-256") });
		}
		if let Some(p) = self.get(sha256) {
			return Ok(p);
		}
		if let Some(size) = size {
			if size > self.max_size {
				return Err(FetchError::TooLarge { uri: uri.into(), limit: self.max_size });
			}
		}
		let limit = size.unwrap_or(self.max_size);
		let tmp_dir = self.dir.join("tmp");
		let io = |path: &Path| {
			let path = path.to_path_buf();
			move |source| FetchError::Io { path, source }
		};
		tokio::fs::create_dir_all(&tmp_dir).await.map_err(io(&tmp_dir))?;
		tokio::fs::create_dir_all(self.dir.join("sha256")).await.map_err(io(&self.dir))?;
		let tmp = tmp_dir.join(format!("{sha256}.{}.part", std::process::id()));
		let result = match self.download(uri, &tmp, limit).await {
			// Longer than the size it was asked for (within the cap): the wrong blob.
			Err(FetchError::TooLarge { .. }) if size.is_some() => {
				Err(FetchError::WrongSize { uri: uri.into(), size: limit + 1, expected: limit })
			},
			r => r,
		};
		let (found, written) = match result {
			Ok(r) => r,
			Err(e) => {
				let _ = tokio::fs::remove_file(&tmp).await;
				return Err(e);
			},
		};
		let bad = if found != sha256 {
			Some(FetchError::HashMismatch { uri: uri.into(), expected: sha256.into(), found })
		} else if size.is_some_and(|s| s != written) {
			Some(FetchError::WrongSize { uri: uri.into(), size: written, expected: size.unwrap_or_default() })
		} else {
			None
		};
		if let Some(e) = bad {
			let _ = tokio::fs::remove_file(&tmp).await;
			return Err(e);
		}
		let dest = self.path_of(sha256);
		tokio::fs::rename(&tmp, &dest).await.map_err(io(&dest))?;
		Ok(dest)
	}

	/// Streams `uri` into `tmp` (fsynced), hashing as it goes; at most `limit` bytes.
	async fn download(&self, uri: &str, tmp: &Path, limit: u64) -> Result<(String, u64), FetchError> {
		let mut file = tokio::fs::File::create(tmp).await.map_err(|source| FetchError::Io { path: tmp.into(), source })?;
		let write_err = |source| FetchError::Io { path: tmp.into(), source };
		let mut hasher = Sha256::new();
		let mut written = 0u64;
		let mut take = |chunk: &[u8], hasher: &mut Sha256| -> Result<(), FetchError> {
			written += chunk.len() as u64;
			if written > limit {
				return Err(FetchError::TooLarge { uri: uri.into(), limit });
			}
			hasher.update(chunk);
			Ok(())
		};
		if let Some(path) = uri.strip_prefix("file://") {
			let mut src = tokio::fs::File::open(path)
				.await
				.map_err(|e| FetchError::Unreachable { uri: uri.into(), reason: e.to_string() })?;
			let mut buf = vec![0u8; 1 << 20];
			loop {
				use tokio::io::AsyncReadExt;
				let n = src.read(&mut buf).await.map_err(|e| FetchError::Unreachable { uri: uri.into(), reason: e.to_string() })?;
				if n == 0 {
					break;
				}
				take(&buf[..n], &mut hasher)?;
				file.write_all(&buf[..n]).await.map_err(write_err)?;
			}
		} else if uri.starts_with("http://") || uri.starts_with("https://") {
			let unreachable = |e: reqwest::Error| FetchError::Unreachable { uri: uri.into(), reason: e.to_string() };
			let resp = self.client.get(uri).send().await.map_err(unreachable)?;
			if !resp.status().is_success() {
				return Err(FetchError::Unreachable { uri: uri.into(), reason: format!("HTTP {}", resp.status()) });
			}
			if resp.content_length().is_some_and(|n| n > limit) {
				return Err(FetchError::TooLarge { uri: uri.into(), limit });
			}
			let mut body = resp.bytes_stream();
			while let Some(chunk) = body.next().await {
				let chunk = chunk.map_err(unreachable)?;
				take(&chunk, &mut hasher)?;
				file.write_all(&chunk).await.map_err(write_err)?;
			}
		} else {
			return Err(FetchError::Scheme { uri: uri.into() });
		}
		file.flush().await.map_err(write_err)?;
		file.sync_all().await.map_err(write_err)?;
		Ok((hex::encode(hasher.finalize()), written))
	}

	/// Puts local bytes into the cache under their hash (atomic), returning the hash.
	pub async fn insert(&self, bytes: &[u8]) -> Result<String, FetchError> {
		let sha = crate::sha256_hex(bytes);
		let dest = self.path_of(&sha);
		if dest.is_file() {
			return Ok(sha);
		}
		let io = |path: &Path| {
			let path = path.to_path_buf();
			move |source| FetchError::Io { path, source }
		};
		let tmp_dir = self.dir.join("tmp");
		tokio::fs::create_dir_all(&tmp_dir).await.map_err(io(&tmp_dir))?;
		tokio::fs::create_dir_all(self.dir.join("sha256")).await.map_err(io(&self.dir))?;
		let tmp = tmp_dir.join(format!("{sha}.{}.part", std::process::id()));
		let mut f = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
		f.write_all(bytes).await.map_err(io(&tmp))?;
		f.sync_all().await.map_err(io(&tmp))?;
		tokio::fs::rename(&tmp, &dest).await.map_err(io(&dest))?;
		Ok(sha)
	}
}

fn hash_file(path: &Path) -> std::io::Result<String> {
	use std::io::Read;
	let mut f = std::fs::File::open(path)?;
	let mut h = Sha256::new();
	let mut buf = vec![0u8; 1 << 20];
	loop {
		let n = f.read(&mut buf)?;
		if n == 0 {
			return Ok(hex::encode(h.finalize()));
		}
		h.update(&buf[..n]);
	}
}
