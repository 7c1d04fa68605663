//! The miner's Prometheus metrics, served on `--prometheus-port` at `/metrics`.

use std::net::SocketAddr;

use bytes_body::full;
use prometheus::{Encoder, Gauge, IntCounter, Registry, TextEncoder};

pub struct Metrics {
	pub registry: Registry,
	pub jobs_seen: IntCounter,
	pub jobs_claimed: IntCounter,
	pub jobs_delivered: IntCounter,
	pub jobs_paid: IntCounter,
	pub jobs_given_up: IntCounter,
	pub training_steps: IntCounter,
	pub tokens_per_second: Gauge,
	pub earnings_planck: Gauge,
}

impl Metrics {
	pub fn new() -> Metrics {
		let registry = Registry::new_custom(Some("molting_miner".into()), None).expect("a valid prefix");
		let counter = |name: &str, help: &str| {
			let c = IntCounter::new(name, help).expect("a valid metric");
			registry.register(Box::new(c.clone())).expect("registered once");
			c
		};
		let gauge = |name: &str, help: &str| {
			let g = Gauge::new(name, help).expect("a valid metric");
			registry.register(Box::new(g.clone())).expect("registered once");
			g
		};
		Metrics {
			jobs_seen: counter("jobs_seen_total", "Jobs looked at (posted or open at start-up)."),
			jobs_claimed: counter("jobs_claimed_total", "Jobs claimed on chain."),
			jobs_delivered: counter("jobs_delivered_total", "Results submitted on chain."),
			jobs_paid: counter("jobs_paid_total", "Results accepted and paid."),
			jobs_given_up: counter("jobs_given_up_total", "Claimed jobs given up (bad or unreachable input, deadline)."),
			training_steps: counter("training_steps_total", "Optimizer steps trained."),
			tokens_per_second: gauge("tokens_per_second", "Training throughput of the last step."),
			earnings_planck: gauge("earnings_planck", "MOLT earned (planck) since the miner started."),
			registry,
		}
	}

}

/// A set of metrics the exporter can serve (the miner's, the validator's).
pub trait Gather {
	fn gather(&self) -> Vec<prometheus::proto::MetricFamily>;

	/// Prometheus' text format.
	fn render(&self) -> String {
		let mut out = Vec::new();
		TextEncoder::new().encode(&self.gather(), &mut out).expect("text encoding");
		String::from_utf8(out).unwrap_or_default()
	}
}

impl Gather for Metrics {
	fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
		self.registry.gather()
	}
}

mod bytes_body {
	use http_body_util::Full;
	pub fn full(s: String) -> Full<hyper::body::Bytes> {
		Full::new(hyper::body::Bytes::from(s))
	}
}

/// Serves `metrics` on `127.0.0.1:port` (Prometheus' text format at `/metrics`); like the
/// node's own exporter, loopback only (put a scraper or proxy beside it).
pub async fn serve<M: Gather + Send + Sync + 'static>(metrics: std::sync::Arc<M>, port: u16) -> std::io::Result<SocketAddr> {
	let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
	let addr = listener.local_addr()?;
	tokio::spawn(async move {
		loop {
			let Ok((stream, _)) = listener.accept().await else {
				tokio::time::sleep(std::time::Duration::from_millis(100)).await;
				continue;
			};
			let metrics = metrics.clone();
			tokio::spawn(async move {
				let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
					let metrics = metrics.clone();
					async move {
						let resp = if req.uri().path() == "/metrics" {
							hyper::Response::builder()
								.header("content-type", "text/plain; version=0.0.4")
								.body(full(metrics.render()))
						} else {
							hyper::Response::builder().status(404).body(full("metrics are at /metrics\n".into()))
						};
						Ok::<_, std::convert::Infallible>(resp.expect("a valid response"))
					}
				});
				let io = hyper_util::rt::TokioIo::new(stream);
				let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
			});
		}
	});
	Ok(addr)
}
