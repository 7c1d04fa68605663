//! End-to-end test harness: starts the real `molting-node` binary on loopback and waits
//! until it serves RPC and produces blocks.
//!
//! Each [`DevNode`] gets its own base path and free ports, so tests run in parallel; the
//! process is killed when the value is dropped, and also if the test process dies (the
//! child is asked to be killed with its parent).

use std::{
	io::{Read, Write},
	net::{TcpListener, TcpStream},
	path::{Path, PathBuf},
	process::{Child, Command, Stdio},
	time::{Duration, Instant},
};

/// The `molt-worker` binary: `$MOLTING_WORKER_BIN` if set, else the one cargo built beside
/// this test binary.
pub fn worker_binary() -> PathBuf {
	if let Some(p) = std::env::var_os("MOLTING_WORKER_BIN") {
		return PathBuf::from(p);
	}
	let exe = std::env::current_exe().expect("the test binary has a path");
	let profile_dir = exe.parent().and_then(Path::parent).expect("test binary is in deps/");
	profile_dir.join("molt-worker")
}

/// A child process of a test (store server, miner), its output in a log file, killed
/// (SIGKILL) when dropped or when the test process dies.
pub struct Proc {
	child: Child,
	log: PathBuf,
	pub name: String,
}

impl Proc {
	/// Starts `cmd` with stdout and stderr appended to `log`.
	pub fn start(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
		let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
		cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("log file")).stderr(file);
		kill_with_parent(&mut cmd);
		let child = cmd.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}"));
		Proc { child, log, name: name.into() }
	}

	pub fn log(&self) -> String {
		std::fs::read_to_string(&self.log).unwrap_or_default()
	}

	/// SIGKILL, and wait for it to be gone.
	pub fn kill9(&mut self) {
		let _ = self.child.kill();
		let _ = self.child.wait();
	}

	/// Whether it has exited, and how.
	pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
		self.child.try_wait().ok().flatten()
	}

	/// Waits until the log contains `needle`; panics with the log after `timeout`.
	pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
		let start = Instant::now();
		while !self.log().contains(needle) {
			if let Some(status) = self.exited() {
				if !self.log().contains(needle) {
					panic!("{} exited ({status}) before logging `{needle}`; its log:\n{}", self.name, self.log());
				}
			}
			if start.elapsed() > timeout {
				panic!("{} did not log `{needle}` within {timeout:?}; its log:\n{}", self.name, self.log());
			}
			std::thread::sleep(Duration::from_millis(200));
		}
	}

	/// Waits for it to exit; panics with the log after `timeout`.
	pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
		let start = Instant::now();
		loop {
			if let Some(s) = self.exited() {
				return s;
			}
			if start.elapsed() > timeout {
				panic!("{} still running after {timeout:?}; its log:\n{}", self.name, self.log());
			}
			std::thread::sleep(Duration::from_millis(200));
		}
	}
}

impl Drop for Proc {
	fn drop(&mut self) {
		self.kill9();
		if std::thread::panicking() {
			eprintln!("---- {} log ----\n{}", self.name, self.log());
		}
	}
}

/// The `molting-node` binary: `$MOLTING_NODE_BIN` if set, else the one cargo built beside
/// this test binary (`<target>/<profile>/molting-node`).
pub fn node_binary() -> PathBuf {
	if let Some(p) = std::env::var_os("MOLTING_NODE_BIN") {
		return PathBuf::from(p);
	}
	let exe = std::env::current_exe().expect("the test binary has a path");
	// <target>/<profile>/deps/<test-binary>
	let profile_dir = exe.parent().and_then(Path::parent).expect("test binary is in deps/");
	let bin = profile_dir.join("molting-node");
	assert!(
		bin.exists(),
		"{} not found: build it first (`cargo build -p molting-node`) or set MOLTING_NODE_BIN",
		bin.display()
	);
	bin
}

/// A TCP port on loopback that nothing listens on right now.
pub fn free_port() -> u16 {
	TcpListener::bind("127.0.0.1:0")
		.and_then(|l| l.local_addr())
		.map(|a| a.port())
		.expect("the OS hands out a free loopback port")
}

/// A fresh directory under the system temp dir (a [`DevNode`] removes its own on drop).
pub fn fresh_dir(tag: &str) -> PathBuf {
	let nanos = std::time::SystemTime::now()
		.duration_since(std::time::UNIX_EPOCH)
		.map(|d| d.as_nanos())
		.unwrap_or_default();
	let dir = std::env::temp_dir().join(format!("molting-{tag}-{}-{nanos}", std::process::id()));
	std::fs::create_dir_all(&dir).expect("temp dir is writable");
	dir
}

/// A running `molting-node --dev` on loopback.
pub struct DevNode {
	child: Child,
	base: PathBuf,
	block_time_ms: u64,
	p2p_port: u16,
	/// Port of the JSON-RPC server (WebSocket and HTTP).
	pub rpc_port: u16,
	/// Port of the Prometheus exporter.
	pub prometheus_port: u16,
}

impl DevNode {
	/// Starts a dev node sealing a block every `block_time_ms` and waits until it has
	/// produced its first block.
	pub fn start(block_time_ms: u64) -> DevNode {
		let base = fresh_dir("node");
		let (rpc_port, p2p_port, prometheus_port) = (free_port(), free_port(), free_port());
		let child = Self::spawn(&base, block_time_ms, rpc_port, p2p_port, prometheus_port);
		let mut node = DevNode { child, base, block_time_ms, p2p_port, rpc_port, prometheus_port };
		node.wait_for_block(1, Duration::from_secs(120));
		node
	}

	fn spawn(base: &Path, block_time_ms: u64, rpc_port: u16, p2p_port: u16, prometheus_port: u16) -> Child {
		let log = std::fs::OpenOptions::new().create(true).append(true).open(base.join("node.log")).expect("log file");
		let mut cmd = Command::new(node_binary());
		cmd.args(["--dev", "--dev-block-time", &block_time_ms.to_string()])
			.arg("--base-path")
			.arg(base.join("data"))
			.args(["--rpc-port", &rpc_port.to_string()])
			.args(["--prometheus-port", &prometheus_port.to_string()])
			.args(["--listen-addr", &format!("/ip4/127.0.0.1/tcp/{p2p_port}")])
			.args(["--no-telemetry", "--no-mdns", "--rpc-cors", "all"])
			.stdin(Stdio::null())
			.stdout(log.try_clone().expect("log file"))
			.stderr(log);
		kill_with_parent(&mut cmd);
		cmd.spawn().expect("molting-node starts")
	}

	/// Kills the node (SIGKILL: a crash) and starts it again on the same database and
	/// ports after `down`; returns once it produces blocks past where it was.
	pub fn crash_and_restart(&mut self, down: Duration) {
		let before = self.best_number().unwrap_or(0);
		let _ = self.child.kill();
		let _ = self.child.wait();
		std::thread::sleep(down);
		self.child = Self::spawn(&self.base, self.block_time_ms, self.rpc_port, self.p2p_port, self.prometheus_port);
		self.wait_for_block(before + 1, Duration::from_secs(120));
	}

	/// `ws://127.0.0.1:<rpc port>`.
	pub fn ws_url(&self) -> String {
		format!("ws://127.0.0.1:{}", self.rpc_port)
	}

	/// The node's `--base-path`.
	pub fn data_dir(&self) -> PathBuf {
		self.base.join("data")
	}

	/// The node's log so far (for failure messages).
	pub fn log(&self) -> String {
		std::fs::read_to_string(self.base.join("node.log")).unwrap_or_default()
	}

	/// One JSON-RPC call over HTTP; `None` if the server does not answer (yet).
	pub fn rpc(&self, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
		http_rpc(self.rpc_port, method, params)
	}

	/// Best block number, if the node answers.
	pub fn best_number(&self) -> Option<u64> {
		header_number(&self.rpc("chain_getHeader", serde_json::json!([]))?)
	}

	/// Finalised block number, if the node answers.
	pub fn finalized_number(&self) -> Option<u64> {
		let hash = self.rpc("chain_getFinalizedHead", serde_json::json!([]))?;
		header_number(&self.rpc("chain_getHeader", serde_json::json!([hash]))?)
	}

	/// Waits until the best block is at least `n`, or panics with the node's log.
	pub fn wait_for_block(&mut self, n: u64, timeout: Duration) {
		let start = Instant::now();
		loop {
			if let Ok(Some(status)) = self.child.try_wait() {
				panic!("molting-node exited early ({status}); its log:\n{}", self.log());
			}
			if self.best_number().is_some_and(|b| b >= n) {
				return;
			}
			if start.elapsed() > timeout {
				panic!("no block #{n} within {timeout:?}; node log:\n{}", self.log());
			}
			std::thread::sleep(Duration::from_millis(200));
		}
	}
}

impl Drop for DevNode {
	fn drop(&mut self) {
		let _ = self.child.kill();
		let _ = self.child.wait();
		if std::thread::panicking() {
			eprintln!("---- molting-node log ----\n{}", self.log());
		}
		let _ = std::fs::remove_dir_all(&self.base);
	}
}

/// Asks the kernel to kill the child when this process dies, so a crashed or killed test
/// run leaves no node behind.
fn kill_with_parent(cmd: &mut Command) {
	use std::os::unix::process::CommandExt;
	// SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
	unsafe {
		cmd.pre_exec(|| {
			libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
			Ok(())
		});
	}
}

fn header_number(header: &serde_json::Value) -> Option<u64> {
	let hex = header.get("number")?.as_str()?.trim_start_matches("0x");
	u64::from_str_radix(hex, 16).ok()
}

/// Minimal JSON-RPC over HTTP/1.1 on loopback (the node serves HTTP and WebSocket on one
/// port); enough to poll readiness without a client library.
pub fn http_rpc(port: u16, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
	let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
		.to_string();
	let addr = format!("127.0.0.1:{port}");
	let head = format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
	let (_, response) = http_exchange(&addr, &head, &body)?;
	let reply: serde_json::Value = serde_json::from_str(&response).ok()?;
	reply.get("result").cloned()
}

/// One HTTP/1.1 request on loopback (`head`: request line and headers, without the blank
/// line; `Connection: close` is added); the status line and the body.
fn http_exchange(addr: &str, head: &str, body: &str) -> Option<(String, String)> {
	let mut stream = TcpStream::connect(addr).ok()?;
	stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
	write!(stream, "{head}Connection: close\r\n\r\n{body}").ok()?;
	let mut response = String::new();
	stream.read_to_string(&mut response).ok()?;
	let status = response.lines().next()?.to_string();
	let body_start = response.find("\r\n\r\n")? + 4;
	Some((status, response[body_start..].to_string()))
}

/// A plain HTTP/1.1 GET on loopback (`addr` is `host:port`); the body, if it answers 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
	let (status, body) = http_exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n"), "")?;
	status.starts_with("HTTP/1.1 200").then_some(body)
}
