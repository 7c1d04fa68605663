//! Publishing blobs through `object_store`.
//!
//! A store is named by a URL: `http(s)://host[:port]` is a store server (blobs go to
//! `PUT <url>/blobs/<sha256>` and are read back from `GET` there), `file:///dir` a local
//! directory (blobs at `/dir/<sha256>`, read back as `file:///dir/<sha256>`).

use std::sync::Arc;

use object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
	#[error("{url}: not a store URL (http://, https:// or file:///dir): {reason}")]
	BadUrl { url: String, reason: String },
	#[error("{url}: publishing {sha256} failed: {source}")]
	Put { url: String, sha256: String, source: object_store::Error },
}

/// Where this worker publishes blobs.
#[derive(Clone)]
pub struct Publisher {
	url: String,
	/// Blobs are read back from `<read_base>/<sha256>`.
	read_base: String,
	store: Arc<dyn ObjectStore>,
}

impl Publisher {
	/// A publisher to the store at `url`; `token`, if given, is sent as a bearer token.
	pub fn new(url: &str, token: Option<&str>) -> Result<Publisher, PublishError> {
		crate::install_tls_provider();
		let bad = |reason: String| PublishError::BadUrl { url: url.into(), reason };
		let url = url.trim_end_matches('/');
		if let Some(dir) = url.strip_prefix("file://") {
			std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
			let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
			return Ok(Publisher { url: url.into(), read_base: url.into(), store: Arc::new(store) });
		}
		if url.starts_with("http://") || url.starts_with("https://") {
			let base = format!("{url}/blobs");
			let mut options = object_store::ClientOptions::new().with_allow_http(true);
			if let Some(token) = token {
				let mut headers = object_store::HeaderMap::new();
				let value = format!("Bearer {token}").parse().map_err(|_| bad("the token is not a header value".into()))?;
				headers.insert("authorization", value);
				options = options.with_default_headers(headers);
			}
			let store = object_store::http::HttpBuilder::new()
				.with_url(&base)
				.with_client_options(options)
				.build()
				.map_err(|e| bad(e.to_string()))?;
			return Ok(Publisher { url: url.into(), read_base: base, store: Arc::new(store) });
		}
		Err(bad("unknown scheme".into()))
	}

	/// The URI blob `sha256` is read from once published.
	pub fn uri_of(&self, sha256: &str) -> String {
		format!("{}/{sha256}", self.read_base)
	}

	/// Publishes `bytes` under their SHA-256; returns (hash, URI). Publishing a blob twice
	/// is harmless (same name, same bytes).
	pub async fn put(&self, bytes: Vec<u8>) -> Result<(String, String), PublishError> {
		let sha256 = crate::sha256_hex(&bytes);
		let location = StorePath::from(sha256.as_str());
		self.store
			.put(&location, PutPayload::from(bytes))
			.await
			.map_err(|source| PublishError::Put { url: self.url.clone(), sha256: sha256.clone(), source })?;
		let uri = self.uri_of(&sha256);
		Ok((sha256, uri))
	}

	/// Publishes the file at `path`.
	pub async fn put_file(&self, path: &std::path::Path) -> Result<(String, String), PublishError> {
		let bytes = tokio::fs::read(path).await.map_err(|e| PublishError::Put {
			url: self.url.clone(),
			sha256: path.display().to_string(),
			source: object_store::Error::Generic { store: "local", source: Box::new(e) },
		})?;
		self.put(bytes).await
	}
}
