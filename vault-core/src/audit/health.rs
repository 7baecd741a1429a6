//! Whether the audit log can be written now, and the sampling of events about
//! unauthenticated requests.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long after a failed write, with no success since, `/readyz` reports the
/// audit log as failing. Bounded so that a server taken out of rotation (and so
/// getting no requests that would prove the log writable again) comes back to be
/// tried; a write that still fails marks it again.
pub const FAILING_FOR: Duration = Duration::from_secs(60);

/// Sample at most one unauthenticated request per reason in this interval.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);

/// The outcome of the latest audit write.
#[derive(Debug, Default)]
pub struct AuditHealth {
    failed_at: Mutex<Option<Instant>>,
}

impl AuditHealth {
    /// Records the outcome of a write.
    pub fn record(&self, ok: bool) {
        *self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (!ok).then(Instant::now);
    }

    /// Whether the latest write failed, less than [`FAILING_FOR`] ago.
    pub fn failing(&self) -> bool {
        self.failing_at(Instant::now())
    }

    fn failing_at(&self, now: Instant) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| now.saturating_duration_since(at) < FAILING_FOR)
    }
}

/// Rate-limited sampling by reason: the first request of a reason is admitted,
/// then at most one per interval, each carrying how many were suppressed since
/// the previous admitted one. Reasons are a fixed set, so the map stays small.
#[derive(Debug)]
pub struct Sampler {
    interval: Duration,
    reasons: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new(SAMPLE_INTERVAL)
    }
}

impl Sampler {
    /// A sampler admitting one per `interval` and reason.
    pub fn new(interval: Duration) -> Self {
        Sampler {
            interval,
            reasons: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed since the previous sample)` when this one is to be recorded.
    pub fn admit(&self, reason: &'static str) -> Option<u64> {
        self.admit_at(reason, Instant::now())
    }

    fn admit_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        match reasons.get_mut(reason) {
            Some((last, suppressed)) if now.saturating_duration_since(*last) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                reasons.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sample_per_interval_and_reason_with_the_suppressed_count() {
        let sampler = Sampler::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(sampler.admit_at("wrong_secret", t0), Some(0));
        for i in 1..=500 {
            assert_eq!(
                sampler.admit_at("wrong_secret", t0 + Duration::from_micros(i)),
                None
            );
        }
        assert_eq!(sampler.admit_at("missing_credential", t0), Some(0));
        assert_eq!(
            sampler.admit_at("wrong_secret", t0 + Duration::from_millis(1000)),
            Some(500)
        );
        assert_eq!(
            sampler.admit_at("wrong_secret", t0 + Duration::from_millis(1001)),
            None
        );
        assert_eq!(
            sampler.admit_at("wrong_secret", t0 + Duration::from_millis(2500)),
            Some(1)
        );
    }

    #[test]
    fn a_failure_shows_until_a_success_or_for_a_while() {
        let health = AuditHealth::default();
        assert!(!health.failing());
        health.record(false);
        assert!(health.failing());
        assert!(!health.failing_at(Instant::now() + FAILING_FOR));
        health.record(true);
        assert!(!health.failing());
    }
}
