//! Process metrics in the Prometheus (OpenMetrics) text format: requests by
//! API, operation and outcome with latency; Vault calls by endpoint and HTTP
//! status with latency; requests in flight; seconds left on the Vault token;
//! the transit key version; build info. One process-wide set, recorded from
//! the gRPC workers and the Vault client, read by `/metrics`.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets in seconds: a loopback transit call takes about 0.5 ms,
/// a LAN one a few ms; the apiserver gives up at 3 s (10 s at most when
/// configured), so buckets run from 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    api: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    endpoint: &'static str,
    status: Cow<'static, str>,
}

/// The status label, without an allocation for the statuses Vault answers
/// with day to day.
fn status_label(status: Option<u16>) -> Cow<'static, str> {
    Cow::Borrowed(match status {
        None => "error",
        Some(200) => "200",
        Some(204) => "204",
        Some(400) => "400",
        Some(403) => "403",
        Some(429) => "429",
        Some(500) => "500",
        Some(503) => "503",
        Some(other) => return Cow::Owned(other.to_string()),
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Requests one coalesced transit call served: 1 (alone) up to
/// `COALESCE_MAX_ITEMS` (128).
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoalesceLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Values read at scrape time rather than recorded as they change.
pub struct Snapshot {
    pub in_flight: usize,
    /// Seconds left on the token; `None` when it never expires.
    pub token_ttl: Option<Duration>,
    pub key_version: Option<u64>,
    pub ready: bool,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<OperationLabels>,
    vault_requests: Family<VaultLabels, Counter>,
    vault_seconds: HistogramFamily<EndpointLabels>,
    in_flight: Gauge,
    token_ttl: Gauge<f64, AtomicU64>,
    key_version: Gauge,
    ready: Gauge,
    panics: Family<PartLabels, Counter>,
    dns_lookups: Counter,
    batch_items: HistogramFamily<CoalesceLabels>,
    calls_saved: Family<CoalesceLabels, Counter>,
    kek_rotations: Family<ReasonLabels, Counter>,
    kek_unwraps: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("trousseau");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kms_requests",
            "KMS requests by API version, operation and outcome (ok or the error class)",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<OperationLabels> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "kms_request_duration",
            "Time to answer a KMS request",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let vault_requests = Family::<VaultLabels, Counter>::default();
        registry.register(
            "vault_requests",
            "HTTP calls to Vault by endpoint and HTTP status (\"error\" when no answer came)",
            vault_requests.clone(),
        );
        let vault_seconds: HistogramFamily<EndpointLabels> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "vault_request_duration",
            "Time of one HTTP call to Vault",
            Unit::Seconds,
            vault_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "kms_requests_in_flight",
            "KMS requests being handled",
            in_flight.clone(),
        );
        let token_ttl = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "vault_token_ttl",
            "Time left on the Vault token (-1 when it never expires)",
            Unit::Seconds,
            token_ttl.clone(),
        );
        let key_version = Gauge::default();
        registry.register(
            "transit_key_version",
            "Latest transit key version seen (0 before the first answer)",
            key_version.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the last health probe (transit encrypt and decrypt) succeeded",
            ready.clone(),
        );
        let panics = Family::<PartLabels, Counter>::default();
        registry.register(
            "panics",
            "Panics caught and recovered from, by part (request, health_check, login, session_keeper); any is a bug to report",
            panics.clone(),
        );
        let dns_lookups = Counter::default();
        registry.register(
            "vault_dns_lookups",
            "DNS lookups of Vault node names (IP literals need none; names are cached for 30 s)",
            dns_lookups.clone(),
        );
        let batch_items: HistogramFamily<CoalesceLabels> =
            Family::new_with_constructor(|| Histogram::new(BATCH_BUCKETS));
        registry.register(
            "coalesced_requests_per_call",
            "Requests one transit call served with --coalesce (1 when a request went alone), by operation",
            batch_items.clone(),
        );
        let calls_saved = Family::<CoalesceLabels, Counter>::default();
        registry.register(
            "vault_calls_saved",
            "Transit calls not made because requests were coalesced into batch_input calls, by operation",
            calls_saved.clone(),
        );
        let kek_rotations = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "local_kek_rotations",
            "Local KEKs made (--local-kek), each one transit encrypt, by reason: start, uses, age, key",
            kek_rotations.clone(),
        );
        let kek_unwraps = Counter::default();
        registry.register(
            "local_kek_unwraps",
            "Transit decrypts of wrapped local KEKs that were not in the cache",
            kek_unwraps.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information; always 1", build);
        Metrics {
            registry,
            requests,
            request_seconds,
            vault_requests,
            vault_seconds,
            in_flight,
            token_ttl,
            key_version,
            ready,
            panics,
            dns_lookups,
            batch_items,
            calls_saved,
            kek_rotations,
            kek_unwraps,
        }
    }

    /// One transit call that served `items` requests.
    pub fn coalesced(&self, operation: &'static str, items: usize) {
        let labels = CoalesceLabels { operation };
        self.batch_items.get_or_create(&labels).observe(items as f64);
        if let Some(saved) = items.checked_sub(1).filter(|s| *s > 0) {
            self.calls_saved.get_or_create(&labels).inc_by(saved as u64);
        }
    }

    /// A new local KEK, and why.
    pub fn local_kek_rotated(&self, reason: &'static str) {
        self.kek_rotations.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A wrapped local KEK unwrapped by transit (not in the cache).
    pub fn local_kek_unwrapped(&self) {
        self.kek_unwraps.inc();
    }

    /// DNS lookup threads started so far (for the resolver's tests).
    #[cfg(test)]
    pub fn dns_lookups(&self) -> u64 {
        self.dns_lookups.get()
    }

    /// One DNS lookup thread started for a Vault node's name.
    pub fn dns_lookup(&self) {
        self.dns_lookups.inc();
    }

    /// A panic caught in `part`, which carried on (or was restarted).
    pub fn panicked(&self, part: &'static str) {
        self.panics.get_or_create(&PartLabels { part }).inc();
    }

    /// One answered KMS request.
    pub fn request(&self, api: &'static str, operation: &'static str, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                api,
                operation,
                outcome,
            })
            .inc();
        self.request_seconds
            .get_or_create(&OperationLabels { api, operation })
            .observe(took.as_secs_f64());
    }

    /// One HTTP call to Vault; `status` is `None` when no answer came.
    pub fn vault_call(&self, endpoint: &'static str, status: Option<u16>, took: Duration) {
        let status = status_label(status);
        self.vault_requests
            .get_or_create(&VaultLabels { endpoint, status })
            .inc();
        self.vault_seconds
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// The exposition text, with the scrape-time values filled in.
    pub fn render(&self, s: &Snapshot) -> String {
        self.in_flight.set(i64::try_from(s.in_flight).unwrap_or(i64::MAX));
        self.token_ttl.set(s.token_ttl.map_or(-1.0, |d| d.as_secs_f64()));
        self.key_version
            .set(s.key_version.and_then(|v| i64::try_from(v).ok()).unwrap_or(0));
        self.ready.set(i64::from(s.ready));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# metrics encoding failed\n# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_counts() {
        let m = Metrics::new();
        m.request("v2", "encrypt", "ok", Duration::from_millis(2));
        m.request("v2", "encrypt", "ok", Duration::from_millis(3));
        m.vault_call("encrypt", Some(200), Duration::from_millis(1));
        m.vault_call("login", None, Duration::from_millis(1));
        m.vault_call("login", Some(418), Duration::from_millis(1));
        m.coalesced("decrypt", 1);
        m.coalesced("decrypt", 5);
        let text = m.render(&Snapshot {
            in_flight: 3,
            token_ttl: Some(Duration::from_secs(90)),
            key_version: Some(4),
            ready: true,
        });
        for want in [
            "trousseau_kms_requests_total{api=\"v2\",operation=\"encrypt\",outcome=\"ok\"} 2",
            "trousseau_kms_request_duration_seconds_count{api=\"v2\",operation=\"encrypt\"} 2",
            "trousseau_vault_requests_total{endpoint=\"encrypt\",status=\"200\"} 1",
            "trousseau_vault_requests_total{endpoint=\"login\",status=\"error\"} 1",
            "trousseau_vault_requests_total{endpoint=\"login\",status=\"418\"} 1",
            "trousseau_kms_requests_in_flight 3",
            "trousseau_coalesced_requests_per_call_count{operation=\"decrypt\"} 2",
            "trousseau_coalesced_requests_per_call_sum{operation=\"decrypt\"} 6.0",
            "trousseau_vault_calls_saved_total{operation=\"decrypt\"} 4",
            "trousseau_vault_token_ttl_seconds 90.0",
            "trousseau_transit_key_version 4",
            "trousseau_ready 1",
            "trousseau_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        let text = m.render(&Snapshot {
            in_flight: 0,
            token_ttl: None,
            key_version: None,
            ready: false,
        });
        assert!(text.contains("trousseau_vault_token_ttl_seconds -1.0"), "{text}");
    }
}
