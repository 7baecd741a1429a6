//! Bulk-access detection: per API key, a sliding-window count of document reads,
//! compared with a fixed threshold and with the key's usual rate.
//!
//! The window is a sliding-window counter (the previous window's count weighted by
//! how much of it still overlaps, plus the current one). The usual rate is an
//! exponentially weighted average of completed windows. A key crossing both the
//! threshold and `factor` times its usual rate is flagged once per window; when
//! throttling is configured it is refused (429) until a window has passed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use vault_crypto::TenantId;

use crate::config::AuditConfig;

/// Weight of the newest completed window in the usual rate.
const EWMA_WEIGHT: f64 = 0.2;
/// Keys tracked at most (the least recently seen are forgotten beyond that).
const MAX_KEYS: usize = 100_000;

/// A key reading far beyond its usual rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anomaly {
    /// Reads in the sliding window.
    pub reads_in_window: f64,
    /// The key's usual reads per window.
    pub usual: f64,
    /// Whether the key is now throttled.
    pub throttled: bool,
}

struct KeyRate {
    tenant: TenantId,
    window_start: Instant,
    current: u64,
    previous: u64,
    usual: f64,
    flagged_in_window: bool,
    throttled_until: Option<Instant>,
    last_seen: Instant,
}

/// The detector.
pub struct BulkAccess {
    window: Duration,
    threshold: f64,
    factor: f64,
    throttle: bool,
    keys: Mutex<HashMap<String, KeyRate>>,
}

impl BulkAccess {
    /// A detector with the configured window, threshold and factor.
    pub fn new(config: &AuditConfig) -> Self {
        BulkAccess {
            window: Duration::from_secs(config.bulk_read_window_secs.max(1)),
            threshold: config.bulk_read_threshold as f64,
            factor: config.bulk_read_factor,
            throttle: config.throttle_bulk_readers,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The key's tenant when the key is being throttled now.
    pub fn throttled(&self, key_id: &str) -> Option<TenantId> {
        self.throttled_at(key_id, Instant::now())
    }

    fn throttled_at(&self, key_id: &str, now: Instant) -> Option<TenantId> {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.get(key_id)
            .filter(|k| k.throttled_until.is_some_and(|until| now < until))
            .map(|k| k.tenant.clone())
    }

    /// Counts one document read by the key; returns an anomaly the first time in a
    /// window that the key crosses the limits.
    pub fn record_read(&self, key_id: &str, tenant: &TenantId) -> Option<Anomaly> {
        self.record_read_at(key_id, tenant, Instant::now())
    }

    fn record_read_at(&self, key_id: &str, tenant: &TenantId, now: Instant) -> Option<Anomaly> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_KEYS && !keys.contains_key(key_id) {
            if let Some(oldest) = keys
                .iter()
                .min_by_key(|(_, k)| k.last_seen)
                .map(|(id, _)| id.clone())
            {
                keys.remove(&oldest);
            }
        }
        let rate = keys.entry(key_id.to_owned()).or_insert(KeyRate {
            tenant: tenant.clone(),
            window_start: now,
            current: 0,
            previous: 0,
            usual: 0.0,
            flagged_in_window: false,
            throttled_until: None,
            last_seen: now,
        });
        rate.last_seen = now;
        // Roll the windows forward; windows with no reads count as zero.
        while now.duration_since(rate.window_start) >= self.window {
            rate.usual = (1.0 - EWMA_WEIGHT) * rate.usual + EWMA_WEIGHT * rate.current as f64;
            rate.previous = rate.current;
            rate.current = 0;
            rate.flagged_in_window = false;
            rate.window_start += self.window;
            if now.duration_since(rate.window_start) >= self.window * 2 {
                // Long idle: skip ahead without iterating every empty window.
                rate.usual = 0.0;
                rate.previous = 0;
                rate.window_start = now;
            }
        }
        rate.current += 1;
        let elapsed =
            now.duration_since(rate.window_start).as_secs_f64() / self.window.as_secs_f64();
        let in_window = rate.previous as f64 * (1.0 - elapsed) + rate.current as f64;
        let limit = self.threshold.max(self.factor * rate.usual);
        if in_window > limit && !rate.flagged_in_window {
            rate.flagged_in_window = true;
            if self.throttle {
                rate.throttled_until = Some(now + self.window);
            }
            return Some(Anomaly {
                reads_in_window: in_window,
                usual: rate.usual,
                throttled: self.throttle,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn detector(throttle: bool) -> BulkAccess {
        BulkAccess::new(&AuditConfig {
            bulk_read_window_secs: 60,
            bulk_read_threshold: 100,
            bulk_read_factor: 10.0,
            throttle_bulk_readers: throttle,
            ..AuditConfig::default()
        })
    }

    #[test]
    fn a_burst_is_flagged_once_and_throttled_when_configured() {
        let d = detector(true);
        let t0 = Instant::now();
        let flags: Vec<Anomaly> = (0..300)
            .filter_map(|i| d.record_read_at("k", &acme(), t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(flags.len(), 1);
        assert!(flags[0].reads_in_window > 100.0 && flags[0].throttled);
        assert_eq!(
            d.throttled_at("k", t0 + Duration::from_secs(1)),
            Some(acme())
        );
        assert_eq!(d.throttled_at("k", t0 + Duration::from_secs(120)), None);
        assert_eq!(d.throttled_at("other", t0), None);
    }

    #[test]
    fn a_steady_reader_below_the_threshold_is_not_flagged() {
        let d = detector(false);
        let t0 = Instant::now();
        for i in 0..(50 * 10) {
            // 50 reads a minute for ten minutes.
            let at = t0 + Duration::from_millis(i * 1200);
            assert_eq!(d.record_read_at("k", &acme(), at), None);
        }
    }

    #[test]
    fn the_usual_rate_raises_the_bar() {
        let d = detector(false);
        let t0 = Instant::now();
        // A heavy but usual reader: 90 a minute for 30 minutes.
        for i in 0..(90 * 30) {
            let at = t0 + Duration::from_millis(i * 60_000 / 90);
            d.record_read_at("k", &acme(), at);
        }
        // 150 in the next minute: above the fixed threshold, but not 10x usual.
        let t1 = t0 + Duration::from_secs(30 * 60);
        let flagged = (0..150)
            .filter_map(|i| d.record_read_at("k", &acme(), t1 + Duration::from_millis(i * 400)))
            .count();
        assert_eq!(flagged, 0);
    }
}
