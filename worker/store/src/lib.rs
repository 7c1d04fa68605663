//! Content-addressed blobs: every input and output of a job is a blob named by the
//! SHA-256 of its bytes.
//!
//! - [`Cache`]: a local directory of verified blobs (`<dir>/sha256/<hex>`), filled by
//!   [`Cache::fetch`] from `http(s)://` (any web server, a Hugging Face `resolve` URL, an S3
//!   presigned URL) or `file://` URIs: streamed to a temporary file, hashed on the way,
//!   size-capped, and renamed into place only when the hash is the one asked for.
//! - [`Publisher`]: writes blobs through `object_store` (a local directory, or HTTP PUT to
//!   a store server) and returns the URI to read them back from.
//! - [`server`]: the store server (`molt-worker store serve`): `PUT`/`GET`/`HEAD
//!   /blobs/<sha256>`, range reads, a size cap, an optional bearer token for writes; a
//!   body whose hash is not its name is refused.

mod cache;
mod publish;
pub mod server;

pub use cache::{Cache, FetchError};
pub use publish::{PublishError, Publisher};

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
	use sha2::Digest;
	hex::encode(sha2::Sha256::digest(bytes))
}

/// Whether `s` is a blob name: 64 lower-case hex digits.
pub fn is_blob_name(s: &str) -> bool {
	s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Installs the TLS crypto provider (ring) for this process, once. HTTPS reads need it.
pub fn install_tls_provider() {
	let _ = rustls::crypto::ring::default_provider().install_default();
}
