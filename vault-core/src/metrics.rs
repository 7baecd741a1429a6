//! Prometheus metrics of the vault's work (the server serves them at `/metrics`
//! in the OpenMetrics text format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of per-request metrics: route template and status class; never ids or PHI.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (e.g. `/v1/documents/{id}`).
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// Label of an unauthenticated request: why it could not be attributed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `missing_credential`, `malformed_credential`, `unknown_credential`, ...
    pub reason: &'static str,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds by route and status.
    pub latency: Family<RequestLabels, Histogram>,
    /// Documents stored.
    pub uploads: Counter,
    /// Plaintext bytes stored.
    pub upload_bytes: Counter,
    /// Documents read (downloads and ranged reads).
    pub downloads: Counter,
    /// Calls made to key services (KMS or the local keystore): the key provider
    /// counts them, and each scrape raises this counter to its count.
    pub key_provider_calls: Counter,
    /// Searches answered.
    pub searches: Counter,
    /// Candidates the blind index returned (token matches their sealed exact tags
    /// did not rule out).
    pub search_candidates: Counter,
    /// Candidates checked against the document itself (no sealed exact tags).
    pub search_documents_read: Counter,
    /// Exact search results.
    pub search_results: Counter,
    /// Searches answered from an index that may lack documents (`complete: false`).
    pub incomplete_searches: Counter,
    /// Index reads of document listings (pages read from the blind index).
    pub listed_from_index: Counter,
    /// Document listings that walked the store (the index was not current).
    pub listed_from_store: Counter,
    /// Index updates, reconciliations or openings that failed.
    pub index_failures: Counter,
    /// Index snapshots written to the store.
    pub index_snapshots_written: Counter,
    /// Indexes opened from a snapshot in the store instead of built.
    pub index_snapshots_restored: Counter,
    /// Audit events written.
    pub audit_events: Counter,
    /// Audit segments written (one per group commit).
    pub audit_segments: Counter,
    /// Audit segment writes lost to another replica (then retried as the next).
    pub audit_segment_races: Counter,
    /// Audit segments decrypted to answer reads of events (time-bounded reads
    /// pass over the segments outside their window by the headers' times).
    pub audit_read_segments: Counter,
    /// Objects of crashed uploads removed (`leftovers.rs`).
    pub leftovers_removed: Counter,
    /// Requests failed because their audit event could not be written.
    pub audit_failures: Counter,
    /// Keys flagged for bulk document reads.
    pub bulk_access_anomalies: Counter,
    /// Operators' MFA codes refused as wrong, and lock-outs.
    pub mfa_failures: Counter,
    /// Unix time of the last successful backup (0: none yet).
    pub backup_last_success: Gauge,
    /// Seconds since the last successful backup (set when scraped; -1: none yet).
    pub backup_age: Gauge,
    /// Wall time of the last successful backup, in milliseconds.
    pub backup_last_duration_seconds: Gauge<f64, AtomicU64>,
    /// Total size of the last successful snapshot, in bytes.
    pub backup_last_size: Gauge,
    /// Bytes the last successful backup copied.
    pub backup_last_added: Gauge,
    /// Backups that failed.
    pub backup_failures: Counter,
    /// `/v1` requests without a valid credential, by reason (not audited one by one).
    pub unauthenticated: Family<ReasonLabels, Counter>,
    /// 1 while the audit log cannot be written (the last write failed), else 0.
    pub audit_failing: Gauge,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Connections closed at once because `max_connections` were open.
    pub connections_rejected: Counter,
    /// Requests refused because their credential was over its rate.
    pub rate_limited: Counter,
    /// Uploads refused because `max_concurrent_uploads` were in progress.
    pub uploads_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vault");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let uploads = Counter::default();
        let upload_bytes = Counter::default();
        let downloads = Counter::default();
        let key_provider_calls = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register("documents_uploaded", "Documents stored", uploads.clone());
        registry.register(
            "uploaded_bytes",
            "Plaintext bytes stored",
            upload_bytes.clone(),
        );
        registry.register("documents_read", "Documents read", downloads.clone());
        registry.register(
            "key_provider_calls",
            "Calls made to key services",
            key_provider_calls.clone(),
        );
        let searches = Counter::default();
        let search_candidates = Counter::default();
        let search_documents_read = Counter::default();
        let search_results = Counter::default();
        let incomplete_searches = Counter::default();
        let listed_from_index = Counter::default();
        let listed_from_store = Counter::default();
        let index_failures = Counter::default();
        registry.register("searches", "Searches answered", searches.clone());
        registry.register(
            "search_candidates",
            "Candidates from the blind index that their sealed exact tags did not rule out",
            search_candidates.clone(),
        );
        registry.register(
            "search_documents_read",
            "Search candidates checked against the document itself (too many values to seal their exact tags)",
            search_documents_read.clone(),
        );
        registry.register(
            "search_results",
            "Exact search results",
            search_results.clone(),
        );
        registry.register(
            "incomplete_searches",
            "Searches answered from an index that may lack documents (its last reconciliation left some out, or following other replicas' changes is failing)",
            incomplete_searches.clone(),
        );
        registry.register(
            "listings_from_index",
            "Index reads of document listings (the blind index's ids, kinds and upload times)",
            listed_from_index.clone(),
        );
        registry.register(
            "listings_from_store",
            "Document listings that walked the store because the tenant's index was not current",
            listed_from_store.clone(),
        );
        registry.register(
            "index_failures",
            "Blind index updates, reconciliations or openings that failed, and indexes from a snapshot that a check against the store corrected",
            index_failures.clone(),
        );
        let index_snapshots_written = Counter::default();
        let index_snapshots_restored = Counter::default();
        registry.register(
            "index_snapshots_written",
            "Blind index snapshots sealed into the store",
            index_snapshots_written.clone(),
        );
        registry.register(
            "index_snapshots_restored",
            "Blind indexes opened from a snapshot in the store instead of built from the documents",
            index_snapshots_restored.clone(),
        );
        let audit_events = Counter::default();
        let audit_segments = Counter::default();
        let audit_segment_races = Counter::default();
        let audit_read_segments = Counter::default();
        let leftovers_removed = Counter::default();
        registry.register(
            "leftovers_removed",
            "Objects of uploads that never became visible (a crash), removed after the grace period",
            leftovers_removed.clone(),
        );
        let audit_failures = Counter::default();
        let bulk_access_anomalies = Counter::default();
        let mfa_failures = Counter::default();
        registry.register(
            "mfa_failures",
            "Operators' MFA codes refused as wrong (and lock-outs after too many)",
            mfa_failures.clone(),
        );
        registry.register("audit_events", "Audit events written", audit_events.clone());
        registry.register(
            "audit_segments",
            "Audit segments written (one per group commit)",
            audit_segments.clone(),
        );
        registry.register(
            "audit_segment_races",
            "Audit segment writes lost to another replica, then retried as the next segment",
            audit_segment_races.clone(),
        );
        registry.register(
            "audit_read_segments",
            "Audit segments decrypted to answer reads of events",
            audit_read_segments.clone(),
        );
        registry.register(
            "audit_failures",
            "Requests failed closed because their audit event could not be written",
            audit_failures.clone(),
        );
        registry.register(
            "bulk_access_anomalies",
            "API keys flagged for bulk document reads",
            bulk_access_anomalies.clone(),
        );
        let backup_last_success = Gauge::default();
        let backup_age = Gauge::default();
        let backup_last_duration_seconds = Gauge::<f64, AtomicU64>::default();
        let backup_last_size = Gauge::default();
        let backup_last_added = Gauge::default();
        let backup_failures = Counter::default();
        backup_age.set(-1);
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup",
            backup_last_success.clone(),
        );
        registry.register(
            "backup_age_seconds",
            "Seconds since the last successful backup (-1: none)",
            backup_age.clone(),
        );
        registry.register(
            "backup_last_duration_seconds",
            "Wall time of the last successful backup",
            backup_last_duration_seconds.clone(),
        );
        registry.register(
            "backup_last_size_bytes",
            "Total size of the last successful snapshot",
            backup_last_size.clone(),
        );
        registry.register(
            "backup_last_added_bytes",
            "Bytes the last successful backup copied",
            backup_last_added.clone(),
        );
        registry.register(
            "backup_failures",
            "Backups that failed",
            backup_failures.clone(),
        );
        let unauthenticated = Family::<ReasonLabels, Counter>::default();
        let audit_failing = Gauge::default();
        let open_connections = Gauge::default();
        let connections_rejected = Counter::default();
        let rate_limited = Counter::default();
        let uploads_refused = Counter::default();
        registry.register(
            "unauthenticated_requests",
            "API requests without a valid credential, by reason (sampled into the system audit log)",
            unauthenticated.clone(),
        );
        registry.register(
            "audit_failing",
            "1 while the audit log cannot be written (its last write failed)",
            audit_failing.clone(),
        );
        registry.register(
            "open_connections",
            "HTTP connections open now",
            open_connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed at once because max_connections were open",
            connections_rejected.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused because their credential was over its rate",
            rate_limited.clone(),
        );
        registry.register(
            "uploads_refused",
            "Uploads refused because max_concurrent_uploads were in progress",
            uploads_refused.clone(),
        );
        Metrics {
            registry,
            unauthenticated,
            audit_failing,
            open_connections,
            connections_rejected,
            rate_limited,
            uploads_refused,
            backup_last_success,
            backup_age,
            backup_last_duration_seconds,
            backup_last_size,
            backup_last_added,
            backup_failures,
            audit_events,
            audit_segments,
            audit_segment_races,
            audit_read_segments,
            leftovers_removed,
            audit_failures,
            bulk_access_anomalies,
            mfa_failures,
            searches,
            search_candidates,
            search_documents_read,
            search_results,
            incomplete_searches,
            listed_from_index,
            listed_from_store,
            index_failures,
            index_snapshots_written,
            index_snapshots_restored,
            requests,
            latency,
            uploads,
            upload_bytes,
            downloads,
            key_provider_calls,
        }
    }
}

impl Metrics {
    /// Renders the registry.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus naming: a counter's samples end in `_total`, units are base
    /// units (seconds, bytes) named as a suffix, every family has help text.
    #[test]
    fn metric_names_follow_the_prometheus_conventions() {
        let metrics = Metrics::default();
        metrics.uploads.inc();
        let text = metrics.render().unwrap();
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families += 1;
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("vault_"), "{name}");
                assert!(
                    ![
                        "millis",
                        "milliseconds",
                        "_ms",
                        "kilobytes",
                        "_kb",
                        "minutes"
                    ]
                    .iter()
                    .any(|unit| name.contains(unit)),
                    "{name}: use base units (seconds, bytes)"
                );
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} has no help"
                );
                if kind == "counter" {
                    assert!(
                        !name.ends_with("_total"),
                        "{name}: _total is added to samples"
                    );
                    let samples = text
                        .lines()
                        .filter(|l| !l.starts_with('#'))
                        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
                        .filter(|sample| sample.starts_with(name));
                    for sample in samples {
                        assert_eq!(sample, format!("{name}_total"), "a counter's sample");
                    }
                }
                if kind == "gauge" {
                    assert!(!name.ends_with("_total"), "{name}: a gauge is not a total");
                }
            }
        }
        assert!(families > 20, "{text}");
        assert!(text.contains("vault_key_provider_calls_total 0"), "{text}");
        assert!(
            text.contains("vault_backup_last_duration_seconds"),
            "{text}"
        );
    }
}
