//! A circuit breaker for a remote store: after [`FAILURES_TO_OPEN`] operations in
//! a row failed (each already retried), the store is taken for dead for
//! [`OPEN_FOR`], and every operation fails at once with a retryable error (503
//! `storage_unavailable`) instead of each request spending its own time budget
//! on retries against it. After that, operations go through again; the first
//! success closes the breaker, and another failure opens it for another period.
//!
//! Only failures of the store itself count: answers that are not errors of the
//! service (a 404, a 412 of a create-only write) show that it is alive.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failed operations that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long an open breaker refuses operations.
pub const OPEN_FOR: Duration = Duration::from_secs(5);

/// The breaker of one store.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    failures_to_open: u32,
    open_for: Duration,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new(FAILURES_TO_OPEN, OPEN_FOR)
    }
}

impl CircuitBreaker {
    /// Opens after `failures_to_open` failures in a row, for `open_for`.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            state: Mutex::new(State::default()),
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an operation may go to the store now; `Err(left)` while open.
    pub fn admit(&self) -> Result<(), Duration> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<(), Duration> {
        match self.state().open_until {
            Some(until) if now < until => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts an operation's outcome.
    pub fn record(&self, succeeded: bool) {
        self.record_at(succeeded, Instant::now());
    }

    fn record_at(&self, succeeded: bool, now: Instant) {
        let mut state = self.state();
        if succeeded {
            if state.open_until.take().is_some() {
                tracing::info!("the object store answers again: circuit breaker closed");
            }
            state.consecutive_failures = 0;
            return;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.consecutive_failures >= self.failures_to_open {
            let was_open = state.open_until.is_some_and(|until| now < until);
            state.open_until = Some(now + self.open_for);
            if !was_open {
                tracing::warn!(
                    failures = state.consecutive_failures,
                    open_secs = self.open_for.as_secs_f64(),
                    "the object store keeps failing: circuit breaker open, requests fail fast"
                );
            }
        }
    }

    /// Whether it refuses operations now.
    pub fn is_open(&self) -> bool {
        self.admit().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_a_success() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        breaker.record_at(false, t0);
        breaker.record_at(false, t0);
        assert!(breaker.admit_at(t0).is_ok());
        // A success in between starts the count again.
        breaker.record_at(true, t0);
        breaker.record_at(false, t0);
        breaker.record_at(false, t0);
        assert!(breaker.admit_at(t0).is_ok());
        breaker.record_at(false, t0);
        let left = breaker.admit_at(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(left, Duration::from_secs(4));
        // After the period operations go through again; one more failure
        // opens it again, a success closes it.
        let later = t0 + Duration::from_secs(6);
        assert!(breaker.admit_at(later).is_ok());
        breaker.record_at(false, later);
        assert!(breaker.admit_at(later + Duration::from_secs(1)).is_err());
        breaker.record_at(true, later + Duration::from_secs(7));
        assert!(breaker.admit_at(later + Duration::from_secs(7)).is_ok());
        breaker.record_at(false, later + Duration::from_secs(7));
        assert!(breaker.admit_at(later + Duration::from_secs(7)).is_ok());
    }
}
