//! What one request, one credential or one client may hold: time budgets,
//! per-credential request rates, concurrent uploads, and the stall and
//! deadline guards of streamed bodies. The connection-level limits (header-read
//! timeout, connection cap, write stalls) are in `http_server.rs`.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use futures::Stream;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use vault_core::config::LimitsConfig;

/// How long a request may take: each endpoint names its budget
/// (`endpoint.rs`); the middleware that applies it is `routes/mod.rs`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// JSON endpoints: `request_timeout_secs`.
    Request,
    /// Uploads and downloads: `transfer_timeout_secs`.
    Transfer,
    /// Long operator operations: `maintenance_timeout_secs`.
    Maintenance,
}

impl Budget {
    /// Its duration under `limits`.
    pub fn duration(self, limits: &LimitsConfig) -> Duration {
        Duration::from_secs(match self {
            Budget::Request => limits.request_timeout_secs,
            Budget::Transfer => limits.transfer_timeout_secs,
            Budget::Maintenance => limits.maintenance_timeout_secs,
        })
    }
}

/// Per-credential request rates (GCRA, `governor`), keyed by the credential's
/// public id. Checked only after the secret was verified, so a caller cannot spend
/// another credential's budget by naming its id.
pub struct CredentialRates {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl CredentialRates {
    /// Rates from the configuration (none when `requests_per_second` is 0).
    pub fn new(limits: &LimitsConfig) -> Self {
        let limiter = NonZeroU32::new(limits.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        CredentialRates { limiter }
    }

    /// Counts one request of `credential_id`; `Err(wait)` when it is over its rate.
    pub fn check(&self, credential_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&credential_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets credentials whose budget is full again (bounded memory).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The answer to a credential over its rate.
pub fn rate_limited(wait: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "this credential sent more requests than its rate allows; retry after the Retry-After seconds",
    )
    .retry_after(retry_after_secs(wait))
}

fn retry_after_secs(wait: Duration) -> u64 {
    // Never 0: a client told to retry after 0 seconds retries at once.
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Uploads in progress; beyond the configured number an upload is refused at once
/// (503 with Retry-After) rather than queued: a queued upload would hold its
/// connection and body while it waits, which is what the cap is there to bound.
/// One tenant holds at most its share of the slots, so a tenant's slow uploads
/// cannot shut every other tenant out.
pub struct UploadSlots {
    all: Arc<Semaphore>,
    per_tenant: Shares<vault_crypto::TenantId>,
}

/// A held upload slot (released on drop).
pub struct UploadSlot {
    _all: OwnedSemaphorePermit,
    _tenant: Option<Share<vault_crypto::TenantId>>,
}

impl UploadSlots {
    /// `max` slots, at most `per_tenant` of them for one tenant (0: no share limit).
    pub fn new(max: usize, per_tenant: usize) -> Self {
        UploadSlots {
            all: Arc::new(Semaphore::new(max)),
            per_tenant: Shares::new(per_tenant),
        }
    }

    /// A slot, held until the upload is answered; 503 `too_many_uploads` when none is
    /// free for the vault or for this tenant.
    pub fn acquire(&self, tenant: &vault_crypto::TenantId) -> Result<UploadSlot, ApiError> {
        let busy = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_uploads",
                "the vault is receiving as many uploads as it takes at once; retry shortly",
            )
            .retry_after(1)
        };
        let tenant = self.per_tenant.take(tenant).ok_or_else(busy)?;
        let all = Arc::clone(&self.all)
            .try_acquire_owned()
            .map_err(|_| busy())?;
        Ok(UploadSlot {
            _all: all,
            _tenant: tenant,
        })
    }
}

/// Counts what each key (a tenant, a client address) holds, up to `max` each.
pub struct Shares<K: std::hash::Hash + Eq + Clone> {
    max: usize,
    held: Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
}

/// One unit of a key's share, given back on drop.
pub struct Share<K: std::hash::Hash + Eq + Clone> {
    key: K,
    held: Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
}

impl<K: std::hash::Hash + Eq + Clone> Shares<K> {
    /// At most `max` units per key; 0 means no limit.
    pub fn new(max: usize) -> Self {
        Shares {
            max,
            held: Arc::default(),
        }
    }

    /// One unit for `key`: `Some(None)` when shares are unlimited, `Some(Some(_))`
    /// when taken, `None` when the key holds its whole share.
    pub fn take(&self, key: &K) -> Option<Option<Share<K>>> {
        if self.max == 0 {
            return Some(None);
        }
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(key.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(Share {
            key: key.clone(),
            held: Arc::clone(&self.held),
        }))
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Share<K> {
    fn drop(&mut self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Why a streamed body was cut off.
#[derive(Debug, thiserror::Error)]
pub enum TransferCut {
    /// No bytes for the stall timeout.
    #[error("no data arrived for {0} seconds")]
    Stalled(u64),
    /// The transfer's time budget ran out.
    #[error("the transfer did not finish within {0} seconds")]
    TooLong(u64),
}

impl From<TransferCut> for std::io::Error {
    fn from(cut: TransferCut) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, cut.to_string())
    }
}

/// A body stream cut off when its next chunk takes longer than `stall` or the
/// whole stream outlasts `deadline`. The cut is an error item, so a consumer
/// (the upload pipeline, or hyper sending a download) aborts instead of treating
/// it as the end.
pub struct Guarded<S> {
    inner: S,
    stall: Duration,
    stall_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    budget_secs: u64,
    done: bool,
}

/// Guards `inner` with a per-chunk `stall` timeout and an overall `budget`.
pub fn guard_stream<S>(inner: S, stall: Duration, budget: Duration) -> Guarded<S> {
    let now = Instant::now();
    Guarded {
        inner,
        stall,
        stall_timer: Box::pin(tokio::time::sleep_until(now + stall)),
        deadline: Box::pin(tokio::time::sleep_until(now + budget)),
        budget_secs: budget.as_secs(),
        done: false,
    }
}

impl<S, T, E> Stream for Guarded<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: From<TransferCut>,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(item) => {
                let next = Instant::now() + self.stall;
                self.stall_timer.as_mut().reset(next);
                if item.is_none() {
                    self.done = true;
                } else if self.deadline.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    return Poll::Ready(Some(Err(TransferCut::TooLong(self.budget_secs).into())));
                }
                Poll::Ready(item)
            }
            Poll::Pending => {
                let cut = if self.deadline.as_mut().poll(cx).is_ready() {
                    Some(TransferCut::TooLong(self.budget_secs))
                } else if self.stall_timer.as_mut().poll(cx).is_ready() {
                    Some(TransferCut::Stalled(self.stall.as_secs()))
                } else {
                    None
                };
                match cut {
                    Some(cut) => {
                        self.done = true;
                        Poll::Ready(Some(Err(cut.into())))
                    }
                    None => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn a_credential_over_its_rate_waits_and_others_do_not() {
        let limits = LimitsConfig {
            requests_per_second: 1,
            burst: 3,
            ..LimitsConfig::default()
        };
        let rates = CredentialRates::new(&limits);
        for _ in 0..3 {
            rates.check("aaaa").unwrap();
        }
        let wait = rates.check("aaaa").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        rates.check("bbbb").unwrap();
        let off = CredentialRates::new(&LimitsConfig {
            requests_per_second: 0,
            ..LimitsConfig::default()
        });
        for _ in 0..10_000 {
            off.check("aaaa").unwrap();
        }
    }

    #[test]
    fn upload_slots_refuse_beyond_the_cap() {
        let acme = vault_crypto::TenantId::new("acme").unwrap();
        let slots = UploadSlots::new(2, 0);
        let a = slots.acquire(&acme).unwrap();
        let _b = slots.acquire(&acme).unwrap();
        let refused = slots.acquire(&acme).map(|_| ()).unwrap_err();
        assert_eq!(refused.code(), "too_many_uploads");
        drop(a);
        let _c = slots.acquire(&acme).unwrap();
    }

    #[test]
    fn one_tenant_cannot_take_every_upload_slot() {
        let acme = vault_crypto::TenantId::new("acme").unwrap();
        let beta = vault_crypto::TenantId::new("beta").unwrap();
        let slots = UploadSlots::new(4, 2);
        let first = slots.acquire(&acme).unwrap();
        let _second = slots.acquire(&acme).unwrap();
        assert_eq!(
            slots.acquire(&acme).map(|_| ()).unwrap_err().code(),
            "too_many_uploads"
        );
        // The other tenant still gets its slots.
        let _b1 = slots.acquire(&beta).unwrap();
        let _b2 = slots.acquire(&beta).unwrap();
        drop(first);
        let _again = slots.acquire(&acme).unwrap();
    }

    #[test]
    fn retry_after_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[derive(Debug)]
    struct Cut(String);
    impl From<TransferCut> for Cut {
        fn from(c: TransferCut) -> Self {
            Cut(c.to_string())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_is_cut_and_a_slow_one_hits_its_deadline() {
        let stalled = futures::stream::pending::<Result<u8, Cut>>();
        let mut guarded = guard_stream(stalled, Duration::from_secs(5), Duration::from_secs(60));
        let cut = guarded.next().await.unwrap().unwrap_err();
        assert!(cut.0.contains("5 seconds"), "{cut:?}");
        assert!(guarded.next().await.is_none());

        let slow = futures::stream::unfold(0u8, |n| async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Some((Ok::<u8, Cut>(n), n.wrapping_add(1)))
        });
        let items: Vec<_> = guard_stream(
            Box::pin(slow),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
        .collect()
        .await;
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(items[..2].iter().all(Result::is_ok));
        assert!(items[2]
            .as_ref()
            .unwrap_err()
            .0
            .contains("within 10 seconds"));
    }
}
