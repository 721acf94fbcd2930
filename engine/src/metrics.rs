//! Prometheus metrics (`GET /metrics`), in the OpenMetrics text format.
//!
//! Counters and histograms count what this node did since it started (the
//! Prometheus convention: sum over nodes, take rates); the gauges read at
//! scrape time (queue depth, open inquiries) describe the shared store.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::{Store, StoreError};

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Seconds, 1 ms to ~9 minutes.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Every metric squall exports.
pub struct Metrics {
    registry: Registry,
    /// Scrapes refresh the store gauges one at a time.
    scrape: Mutex<()>,
    executions: Family<Labels, Counter>,
    execution_duration: HistogramFamily,
    claim_latency: Histogram,
    queue_depth: Gauge,
    stored: Family<Labels, Gauge>,
    inquiries_open: Gauge,
    received: Family<Labels, Counter>,
    chat_commands: Family<Labels, Counter>,
    chat_delivery_latency: HistogramFamily,
    adapter_connected: Family<Labels, Gauge>,
    stream_subscribers: Gauge,
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("squall");
        let executions = Family::<Labels, Counter>::default();
        registry.register(
            "executions",
            "Executions this node finished, by action and final status",
            executions.clone(),
        );
        let execution_duration: HistogramFamily = Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "execution_duration",
            "Run time of executions this node finished, by action",
            Unit::Seconds,
            execution_duration.clone(),
        );
        let claim_latency = seconds_histogram();
        registry.register_with_unit(
            "queue_claim_latency",
            "Time from an execution's request to its claim by this node",
            Unit::Seconds,
            claim_latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Executions requested and not yet claimed (whole store)",
            queue_depth.clone(),
        );
        let stored = Family::<Labels, Gauge>::default();
        registry.register(
            "executions_stored",
            "Executions in the store by status (whole store)",
            stored.clone(),
        );
        let inquiries_open = Gauge::default();
        registry.register(
            "inquiries_open",
            "Approval requests waiting for an answer (whole store)",
            inquiries_open.clone(),
        );
        let received = Family::<Labels, Counter>::default();
        registry.register(
            "requests_received",
            "Webhooks and alerts received, by kind (webhook, alert, trigger), source and answer code",
            received.clone(),
        );
        let chat_commands = Family::<Labels, Counter>::default();
        registry.register(
            "chat_commands",
            "Chat commands handled, by platform and result",
            chat_commands.clone(),
        );
        let chat_delivery_latency: HistogramFamily =
            Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "chat_delivery_latency",
            "Time from a chat message being queued to its delivery, by platform",
            Unit::Seconds,
            chat_delivery_latency.clone(),
        );
        let adapter_connected = Family::<Labels, Gauge>::default();
        registry.register(
            "chat_adapter_connected",
            "Whether a chat adapter is connected to its platform (1) or not (0)",
            adapter_connected.clone(),
        );
        let stream_subscribers = Gauge::default();
        registry.register(
            "stream_subscribers",
            "Clients connected to the event stream",
            stream_subscribers.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        registry.register("build_info", "squall's version", build);
        Self {
            registry,
            scrape: Mutex::new(()),
            executions,
            execution_duration,
            claim_latency,
            queue_depth,
            stored,
            inquiries_open,
            received,
            chat_commands,
            chat_delivery_latency,
            adapter_connected,
            stream_subscribers,
        }
    }

    /// An execution finished on this node after `seconds` of running.
    pub fn execution_finished(&self, action: &str, status: &str, seconds: Option<f64>) {
        self.executions
            .get_or_create(&labels([("action", action), ("status", status)]))
            .inc();
        if let Some(seconds) = seconds {
            self.execution_duration
                .get_or_create(&labels([("action", action)]))
                .observe(seconds.max(0.0));
        }
    }

    /// An execution was claimed `seconds` after it was requested.
    pub fn claimed(&self, seconds: f64) {
        self.claim_latency.observe(seconds.max(0.0));
    }

    /// A webhook, alert or trigger request was answered with `code`.
    pub fn received(&self, kind: &str, source: &str, code: u16) {
        self.received
            .get_or_create(&labels([
                ("kind", kind),
                ("source", source),
                ("code", &code.to_string()),
            ]))
            .inc();
    }

    /// A chat command was handled with `result`.
    pub fn chat_command(&self, platform: &str, result: &str) {
        self.chat_commands
            .get_or_create(&labels([("platform", platform), ("result", result)]))
            .inc();
    }

    /// A chat message was delivered `seconds` after it was queued.
    pub fn chat_delivered(&self, platform: &str, seconds: f64) {
        self.chat_delivery_latency
            .get_or_create(&labels([("platform", platform)]))
            .observe(seconds.max(0.0));
    }

    pub fn adapter_connected(&self, platform: &str, connected: bool) {
        self.adapter_connected
            .get_or_create(&labels([("platform", platform)]))
            .set(i64::from(connected));
    }

    pub fn stream_subscribers(&self, count: usize) {
        self.stream_subscribers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Read the store gauges and encode everything.
    pub async fn scrape(&self, store: &Store) -> Result<String, StoreError> {
        let (by_status, open) = store.scrape_counts().await?;
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let depth = by_status
            .iter()
            .find(|(s, _)| s == "requested")
            .map_or(0, |(_, n)| *n);
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.stored.clear();
        for status in crate::execution::ExecutionStatus::ALL {
            let n = by_status
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            self.stored
                .get_or_create(&labels([("status", status.as_str())]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.inquiries_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|e| {
            StoreError::Db(sea_orm::DbErr::Custom(format!(
                "encoding metrics failed: {e}"
            )))
        })?;
        Ok(text)
    }
}

/// The content type of [`Metrics::scrape`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
