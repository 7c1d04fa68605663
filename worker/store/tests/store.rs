//! The store server and the readers and writers against it, over real HTTP on loopback.

use std::time::Duration;

use molting_store::server::{spawn, Config};
use molting_store::{sha256_hex, Cache, FetchError, Publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn server(dir: &std::path::Path, max_size: u64, token: Option<&str>) -> String {
	let config = Config { dir: dir.to_path_buf(), max_size, token: token.map(str::to_string) };
	let (addr, _task) = spawn("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
	format!("http://{addr}")
}

/// One raw HTTP/1.1 request; (status, headers, body).
async fn http(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
	let addr = base.trim_start_matches("http://");
	let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
	let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
	for (k, v) in headers {
		req.push_str(&format!("{k}: {v}\r\n"));
	}
	req.push_str("\r\n");
	s.write_all(req.as_bytes()).await.unwrap();
	s.write_all(body).await.unwrap();
	let mut out = Vec::new();
	tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
	let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
	let head = String::from_utf8_lossy(&out[..split]).to_string();
	let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
	(status, head, out[split + 4..].to_vec())
}

#[tokio::test]
async fn the_store_keeps_only_bodies_that_hash_to_their_name_and_serves_ranges() {
	let dir = tempfile::tempdir().unwrap();
	let base = server(dir.path(), 1 << 20, None).await;
	let blob = b"the keeper of the light".to_vec();
	let name = sha256_hex(&blob);

	// A body that is not its name's: refused, nothing kept.
	let wrong = sha256_hex(b"something else");
	let (status, _, body) = http(&base, "PUT", &format!("/blobs/{wrong}"), &[], &blob).await;
	assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
	assert!(String::from_utf8_lossy(&body).contains(&name), "the refusal says what the body hashes to");
	assert_eq!(http(&base, "GET", &format!("/blobs/{wrong}"), &[], b"").await.0, 404);
	assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no partial file left behind");

	// The right name: stored once, then idempotent.
	assert_eq!(http(&base, "PUT", &format!("/blobs/{name}"), &[], &blob).await.0, 201);
	assert_eq!(http(&base, "PUT", &format!("/blobs/{name}"), &[], &blob).await.0, 204);
	let (status, _, body) = http(&base, "GET", &format!("/blobs/{name}"), &[], b"").await;
	assert_eq!((status, body), (200, blob.clone()));
	let (status, head, body) = http(&base, "HEAD", &format!("/blobs/{name}"), &[], b"").await;
	assert_eq!(status, 200);
	assert!(head.to_ascii_lowercase().contains(&format!("content-length: {}", blob.len())), "{head}");
	assert!(body.is_empty());

	// Range reads.
	let (status, head, body) = http(&base, "GET", &format!("/blobs/{name}"), &[("Range", "bytes=4-9")], b"").await;
	assert_eq!((status, body.as_slice()), (206, &blob[4..10]));
	assert!(head.to_ascii_lowercase().contains(&format!("content-range: bytes 4-9/{}", blob.len())), "{head}");
	let (status, _, body) = http(&base, "GET", &format!("/blobs/{name}"), &[("Range", "bytes=-5")], b"").await;
	assert_eq!((status, body.as_slice()), (206, &blob[blob.len() - 5..]));
	assert_eq!(http(&base, "GET", &format!("/blobs/{name}"), &[("Range", "bytes=999-")], b"").await.0, 416);

	// Names that are not SHA-256s, and other paths and methods.
	assert_eq!(http(&base, "GET", "/blobs/../../etc/passwd", &[], b"").await.0, 404);
	assert_eq!(http(&base, "GET", &format!("/blobs/{}", name.to_uppercase()), &[], b"").await.0, 404);
	assert_eq!(http(&base, "DELETE", &format!("/blobs/{name}"), &[], b"").await.0, 405);
}

#[tokio::test]
async fn the_store_caps_sizes_and_checks_the_write_token() {
	let dir = tempfile::tempdir().unwrap();
	let base = server(dir.path(), 16, Some("s3cret")).await;
	let small = b"0123456789".to_vec();
	let big = vec![7u8; 17];
	let auth = [("Authorization", "Bearer s3cret")];
	assert_eq!(http(&base, "PUT", &format!("/blobs/{}", sha256_hex(&small)), &[], &small).await.0, 401);
	assert_eq!(http(&base, "PUT", &format!("/blobs/{}", sha256_hex(&small)), &[("Authorization", "Bearer nope")], &small).await.0, 401);
	assert_eq!(http(&base, "PUT", &format!("/blobs/{}", sha256_hex(&big)), &auth, &big).await.0, 413);
	assert_eq!(http(&base, "PUT", &format!("/blobs/{}", sha256_hex(&small)), &auth, &small).await.0, 201);
	// Reads need no token.
	assert_eq!(http(&base, "GET", &format!("/blobs/{}", sha256_hex(&small)), &[], b"").await.2, small);
}

#[tokio::test]
async fn a_reader_refuses_a_body_that_is_not_the_hash_it_asked_for() {
	let dir = tempfile::tempdir().unwrap();
	let base = server(&dir.path().join("store"), 1 << 20, None).await;
	let publisher = Publisher::new(&base, None).unwrap();
	let (sha, uri) = publisher.put(b"persona data".to_vec()).await.unwrap();
	assert_eq!(sha, sha256_hex(b"persona data"));
	assert_eq!(uri, format!("{base}/blobs/{sha}"));

	let cache = Cache::new(dir.path().join("cache"), 1 << 20);
	// Asked for another hash at this URI (a store or mirror serving the wrong bytes).
	let other = sha256_hex(b"other data");
	match cache.fetch(&uri, &other, None).await {
		Err(FetchError::HashMismatch { expected, found, .. }) => assert_eq!((expected, found), (other.clone(), sha.clone())),
		r => panic!("expected a hash mismatch, got {r:?}"),
	}
	assert!(cache.get(&other).is_none(), "nothing is cached under a name its bytes do not have");
	// The same through file://.
	let file = dir.path().join("local.bin");
	std::fs::write(&file, b"persona data").unwrap();
	assert!(matches!(
		cache.fetch(&format!("file://{}", file.display()), &other, None).await,
		Err(FetchError::HashMismatch { .. })
	));
	// A wrong size is refused too, and a size over the cap before anything is read.
	assert!(matches!(cache.fetch(&uri, &sha, Some(3)).await, Err(FetchError::WrongSize { .. })));
	assert!(matches!(cache.fetch(&uri, &sha, Some(2 << 20)).await, Err(FetchError::TooLarge { .. })));
	// The right name: fetched, verified, cached; then served from the cache.
	let p = cache.fetch(&uri, &sha, Some(12)).await.unwrap();
	assert_eq!(std::fs::read(&p).unwrap(), b"persona data");
	assert_eq!(cache.fetch("http://127.0.0.1:1/unreachable", &sha, None).await.unwrap(), p);
	assert!(matches!(cache.fetch("ftp://example.org/x", &other, None).await, Err(FetchError::Scheme { .. })));
	assert!(matches!(cache.fetch("http://127.0.0.1:1/x", &other, None).await, Err(FetchError::Unreachable { .. })));
}

#[tokio::test]
async fn a_local_directory_store_publishes_file_uris_the_cache_reads_back() {
	let dir = tempfile::tempdir().unwrap();
	let store = format!("file://{}", dir.path().join("published").display());
	let publisher = Publisher::new(&store, None).unwrap();
	let (sha, uri) = publisher.put(b"adapter bytes".to_vec()).await.unwrap();
	assert!(uri.starts_with("file://"), "{uri}");
	let cache = Cache::new(dir.path().join("cache"), 1 << 20);
	let p = cache.fetch(&uri, &sha, None).await.unwrap();
	assert_eq!(std::fs::read(p).unwrap(), b"adapter bytes");
}
