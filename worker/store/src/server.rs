//! The store server: a content-addressed blob store over HTTP/1.1, for dev chains and for
//! miners who publish from their own machine.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /blobs/<sha256>` | `200` and the bytes; `206` for a `Range: bytes=a-b` (or `a-`, `-n`) read, `416` outside the blob; `404` if absent |
//! | `HEAD /blobs/<sha256>` | as `GET`, without the body (`Content-Length` is the size) |
//! | `PUT /blobs/<sha256>` | the body is streamed to a temporary file and hashed: `201` when stored, `204` when it was there already; `400` when it does not hash to its name (nothing is kept); `413` above the size cap; `401` without the bearer token, when the server has one |
//! | anything else | `404` / `405` |
//!
//! Blobs live in `<dir>/sha256/<hex>` (the same layout as a worker's cache), written
//! atomically: a reader never sees half a blob.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
	pub dir: PathBuf,
	/// Largest blob accepted, in bytes.
	pub max_size: u64,
	/// If set, `PUT` needs `Authorization: Bearer <token>`.
	pub token: Option<String>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
	let mut msg = msg.into();
	msg.push('\n');
	Response::builder()
		.status(status)
		.header("content-type", "text/plain; charset=utf-8")
		.body(Full::new(Bytes::from(msg)).map_err(|never| match never {}).boxed())
		.expect("a valid response")
}

/// Serves `config` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: Config) -> std::io::Result<()> {
	tokio::fs::create_dir_all(config.dir.join("sha256")).await?;
	tokio::fs::create_dir_all(config.dir.join("tmp")).await?;
	// Uploads cut short by a crash are never finished: drop them.
	let mut tmp = tokio::fs::read_dir(config.dir.join("tmp")).await?;
	while let Some(e) = tmp.next_entry().await? {
		if e.path().extension().is_some_and(|x| x == "part") {
			let _ = tokio::fs::remove_file(e.path()).await;
		}
	}
	let config = Arc::new(config);
	loop {
		// An accept error (out of file descriptors, a reset connection) ends one connection,
		// never the server.
		let (stream, peer) = match listener.accept().await {
			Ok(c) => c,
			Err(e) => {
				tracing::warn!("accept: {e}");
				tokio::time::sleep(std::time::Duration::from_millis(100)).await;
				continue;
			},
		};
		let config = config.clone();
		tokio::spawn(async move {
			let io = hyper_util::rt::TokioIo::new(stream);
			let service = hyper::service::service_fn(move |req| {
				let config = config.clone();
				async move { Ok::<_, Infallible>(handle(&config, req, peer).await) }
			});
			// Headers must arrive within 30 s (a slow client cannot hold a connection open
			// without sending anything).
			let conn = hyper::server::conn::http1::Builder::new()
				.timer(hyper_util::rt::TokioTimer::new())
				.header_read_timeout(std::time::Duration::from_secs(30))
				.serve_connection(io, service)
				.await;
			if let Err(e) = conn {
				tracing::debug!(%peer, "connection ended: {e}");
			}
		});
	}
}

/// Binds `addr` and serves; returns the bound address and the serving task.
pub async fn spawn(addr: SocketAddr, config: Config) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
	let listener = tokio::net::TcpListener::bind(addr).await?;
	let bound = listener.local_addr()?;
	Ok((bound, tokio::spawn(serve(listener, config))))
}

async fn handle(config: &Config, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
	let path = req.uri().path().to_string();
	let Some(name) = path.strip_prefix("/blobs/") else {
		return text(StatusCode::NOT_FOUND, "not found: blobs are at /blobs/<sha256>");
	};
	if !crate::is_blob_name(name) {
		return text(StatusCode::NOT_FOUND, format!("`{name}` is not a blob name (64 lower-case hex digits)"));
	}
	let name = name.to_string();
	let method = req.method().clone();
	let response = match method {
		Method::GET | Method::HEAD => get(config, &name, &req, method == Method::HEAD).await,
		Method::PUT => put(config, &name, req).await,
		_ => text(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD and PUT only"),
	};
	tracing::info!(%peer, %method, blob = %name, status = response.status().as_u16(), "store");
	response
}

fn blob_path(dir: &Path, name: &str) -> PathBuf {
	dir.join("sha256").join(name)
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against a blob of `size` bytes into an
/// inclusive range; `Err` when it cannot be satisfied.
pub fn parse_range(header: &str, size: u64) -> Result<(u64, u64), ()> {
	let spec = header.trim().strip_prefix("bytes=").ok_or(())?;
	if spec.contains(',') || size == 0 {
		return Err(());
	}
	let (a, b) = spec.split_once('-').ok_or(())?;
	let (start, end) = match (a.trim(), b.trim()) {
		("", n) => {
			let n: u64 = n.parse().map_err(|_| ())?;
			if n == 0 {
				return Err(());
			}
			(size.saturating_sub(n), size - 1)
		},
		(a, "") => (a.parse().map_err(|_| ())?, size - 1),
		(a, b) => (a.parse().map_err(|_| ())?, b.parse::<u64>().map_err(|_| ())?.min(size - 1)),
	};
	if start > end || start >= size {
		return Err(());
	}
	Ok((start, end))
}

async fn get(config: &Config, name: &str, req: &Request<Incoming>, head: bool) -> Response<Body> {
	let path = blob_path(&config.dir, name);
	let Ok(mut file) = tokio::fs::File::open(&path).await else {
		return text(StatusCode::NOT_FOUND, format!("no blob {name}"));
	};
	let size = match file.metadata().await {
		Ok(m) => m.len(),
		Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
	};
	let range = req.headers().get("range").and_then(|v| v.to_str().ok());
	let (status, start, end) = match range {
		None => (StatusCode::OK, 0, size.saturating_sub(1)),
		Some(r) => match parse_range(r, size) {
			Ok((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
			Err(()) => {
				let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, format!("range `{r}` is outside the blob's {size} bytes"));
				resp.headers_mut().insert("content-range", format!("bytes */{size}").parse().expect("header"));
				return resp;
			},
		},
	};
	let len = if size == 0 { 0 } else { end - start + 1 };
	let mut builder = Response::builder()
		.status(status)
		.header("content-type", "application/octet-stream")
		.header("content-length", len)
		.header("accept-ranges", "bytes")
		.header("etag", format!("\"{name}\""));
	if status == StatusCode::PARTIAL_CONTENT {
		builder = builder.header("content-range", format!("bytes {start}-{end}/{size}"));
	}
	if head || len == 0 {
		return builder.body(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()).expect("response");
	}
	if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
		return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
	}
	// Stream the file in 256 KiB chunks.
	let stream = futures::stream::unfold((file, len), |(mut file, left)| async move {
		if left == 0 {
			return None;
		}
		let mut buf = vec![0u8; left.min(256 * 1024) as usize];
		match file.read_exact(&mut buf).await {
			Ok(_) => Some((Ok(Frame::data(Bytes::from(buf))), (file, left - buf_len(left)))),
			Err(e) => Some((Err(e), (file, 0))),
		}
	});
	builder.body(BodyExt::boxed(StreamBody::new(stream))).expect("response")
}

fn buf_len(left: u64) -> u64 {
	left.min(256 * 1024)
}

async fn put(config: &Config, name: &str, req: Request<Incoming>) -> Response<Body> {
	if let Some(token) = &config.token {
		let given = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
		if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
			return text(StatusCode::UNAUTHORIZED, "writes need `Authorization: Bearer <token>`");
		}
	}
	let declared = req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
	if declared.is_some_and(|n| n > config.max_size) {
		return text(StatusCode::PAYLOAD_TOO_LARGE, format!("larger than the store's cap of {} bytes", config.max_size));
	}
	let tmp = config.dir.join("tmp").join(format!("{name}.{:x}.part", rand_suffix()));
	let result = receive(config, req.into_body(), &tmp).await;
	let found = match result {
		Ok(found) => found,
		Err(resp) => {
			let _ = tokio::fs::remove_file(&tmp).await;
			return resp;
		},
	};
	if found != name {
		let _ = tokio::fs::remove_file(&tmp).await;
		return text(StatusCode::BAD_REQUEST, format!("the body hashes to {found}, not to its name {name}; not stored"));
	}
	let dest = blob_path(&config.dir, name);
	let existed = dest.is_file();
	if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
		let _ = tokio::fs::remove_file(&tmp).await;
		return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
	}
	if existed {
		Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()).expect("response")
	} else {
		text(StatusCode::CREATED, format!("stored {name}"))
	}
}

/// Streams the body to `tmp` (fsynced) and returns its SHA-256.
async fn receive(config: &Config, mut body: Incoming, tmp: &Path) -> Result<String, Response<Body>> {
	let err = |e: std::io::Error| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
	let mut file = tokio::fs::File::create(tmp).await.map_err(err)?;
	let mut hasher = Sha256::new();
	let mut received = 0u64;
	while let Some(frame) = body.frame().await {
		let frame = frame.map_err(|e| text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
		if let Some(data) = frame.data_ref() {
			received += data.len() as u64;
			if received > config.max_size {
				return Err(text(StatusCode::PAYLOAD_TOO_LARGE, format!("larger than the store's cap of {} bytes", config.max_size)));
			}
			hasher.update(data);
			file.write_all(data).await.map_err(err)?;
		}
	}
	file.sync_all().await.map_err(err)?;
	Ok(hex::encode(hasher.finalize()))
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
	if a.len() != b.len() {
		return false;
	}
	a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn rand_suffix() -> u64 {
	use std::sync::atomic::{AtomicU64, Ordering};
	static N: AtomicU64 = AtomicU64::new(0);
	let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
	t ^ (u64::from(std::process::id()) << 32) ^ N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
	use super::parse_range;

	#[test]
	fn ranges_are_parsed_as_rfc_9110_says() {
		assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 9)));
		assert_eq!(parse_range("bytes=90-", 100), Ok((90, 99)));
		assert_eq!(parse_range("bytes=-10", 100), Ok((90, 99)));
		assert_eq!(parse_range("bytes=-200", 100), Ok((0, 99)));
		assert_eq!(parse_range("bytes=95-200", 100), Ok((95, 99)), "an end past the blob is clipped");
		assert_eq!(parse_range("bytes=100-", 100), Err(()), "starts past the end");
		assert_eq!(parse_range("bytes=9-0", 100), Err(()));
		assert_eq!(parse_range("bytes=0-1,5-6", 100), Err(()), "multipart ranges are not served");
		assert_eq!(parse_range("items=0-1", 100), Err(()));
		assert_eq!(parse_range("bytes=0-0", 0), Err(()));
	}
}
