//! Retrying one object's transfer in bulk copies (backup, restore). The S3
//! client already retries each request; this covers what it cannot: a body cut
//! off past the point it resumes, a stream that failed while being copied from
//! one store to another, an operation that ran out of its time limit. One
//! object failing thus no longer aborts a backup of a million.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Tries per object.
pub const ATTEMPTS: u32 = 4;
/// Pause before the second try; doubled for each one after.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Runs `attempt(n)` for n = 1, 2, ... while it fails with an error
/// `is_transient` accepts, up to [`ATTEMPTS`] times, pausing with exponential
/// backoff and jitter between tries. `attempt` must be safe to repeat.
pub async fn retry_transient<T, E, F, Fut>(
    what: &str,
    is_transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut n = 1;
    loop {
        match attempt(n).await {
            Err(e) if n < ATTEMPTS && is_transient(&e) => {
                let jitter = rand::thread_rng().gen_range(0..=FIRST_PAUSE.as_millis() as u64);
                let pause = FIRST_PAUSE * 2u32.pow(n - 1) + Duration::from_millis(jitter);
                tracing::warn!(what, attempt = n, error = %e, "transfer failed; retrying");
                tokio::time::sleep(pause).await;
                n += 1;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_others_are_not() {
        let tries = AtomicU32::new(0);
        let result: Result<u32, String> = retry_transient(
            "object",
            |e: &String| e == "transient",
            |n| {
                tries.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err("transient".to_owned())
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));

        tries.store(0, Ordering::SeqCst);
        let result: Result<u32, String> = retry_transient(
            "object",
            |e: &String| e == "transient",
            |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err("permanent".to_owned()) }
            },
        )
        .await;
        assert_eq!(result, Err("permanent".to_owned()));
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        tries.store(0, Ordering::SeqCst);
        let result: Result<u32, String> = retry_transient(
            "object",
            |_: &String| true,
            |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err("transient".to_owned()) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), ATTEMPTS);
    }
}
