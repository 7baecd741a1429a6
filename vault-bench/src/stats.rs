//! Latency and throughput summaries, and the pools that run an operation `n`
//! times at a fixed concurrency (async tasks for HTTP, threads for files).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Nearest-rank percentile (`p` in 0..=100) of ascending values; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // Rank k (1-based) is the smallest with k / n >= p / 100.
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What a timed batch of operations did. MB are 10^6 bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Operations completed.
    pub ops: usize,
    /// Payload bytes moved (bodies, not headers).
    pub bytes: u64,
    /// Wall time of the whole batch.
    pub seconds: f64,
    /// Operations per second of wall time.
    pub ops_per_s: f64,
    /// Payload MB per second of wall time.
    pub mb_per_s: f64,
    /// Median latency of one operation, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest operation, ms.
    pub max_ms: f64,
    /// CPU the server used, in cores (CPU seconds over wall seconds), when measured.
    pub server_cores: Option<f64>,
    /// CPU this program used, in cores, when measured.
    pub client_cores: Option<f64>,
}

impl Summary {
    /// A summary of per-operation latencies (ms), the bytes moved and the wall time.
    pub fn new(mut latencies_ms: Vec<f64>, bytes: u64, wall: Duration) -> Summary {
        latencies_ms.sort_by(f64::total_cmp);
        let seconds = wall.as_secs_f64().max(1e-9);
        Summary {
            ops: latencies_ms.len(),
            bytes,
            seconds,
            ops_per_s: latencies_ms.len() as f64 / seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds,
            p50_ms: percentile(&latencies_ms, 50.0).unwrap_or(0.0),
            p99_ms: percentile(&latencies_ms, 99.0).unwrap_or(0.0),
            max_ms: latencies_ms.last().copied().unwrap_or(0.0),
            server_cores: None,
            client_cores: None,
        }
    }
}

/// Raw figures of a batch: per-operation latencies (ms), bytes, wall time, and
/// the CPU seconds used by the server and by this program, when measured.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    /// Latency of each operation, ms.
    pub latencies_ms: Vec<f64>,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Wall time.
    pub wall: Duration,
    /// CPU seconds of the server and of this program.
    pub cpu_s: Option<(f64, f64)>,
}

impl Timed {
    /// Adds another batch (run after this one).
    pub fn merge(&mut self, other: Timed) {
        self.latencies_ms.extend(other.latencies_ms);
        self.bytes += other.bytes;
        self.wall += other.wall;
        self.cpu_s = match (self.cpu_s, other.cpu_s) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1)),
            (a, b) => a.or(b),
        };
    }

    /// The summary.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::new(self.latencies_ms.clone(), self.bytes, self.wall);
        if let Some((server, client)) = self.cpu_s {
            s.server_cores = Some(server / s.seconds);
            s.client_cores = Some(client / s.seconds);
        }
        s
    }
}

/// `a / b`, or `None` when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// Runs `op(0..ops)` on `concurrency` tokio tasks pulling the next index; `op`
/// returns the payload bytes it moved. The first error stops the batch.
pub async fn run_tasks<F, Fut>(ops: usize, concurrency: usize, op: F) -> anyhow::Result<Timed>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, ops.max(1)) {
        let (op, next) = (op.clone(), next.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let t = Instant::now();
                bytes += op(i).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok((latencies, bytes))
        });
    }
    let mut latencies = Vec::with_capacity(ops);
    let mut bytes = 0;
    while let Some(joined) = set.join_next().await {
        let (l, b) = joined??;
        latencies.extend(l);
        bytes += b;
    }
    Ok(Timed {
        latencies_ms: latencies,
        bytes,
        wall: started.elapsed(),
        cpu_s: None,
    })
}

/// [`run_tasks`] for blocking work (file I/O, CPU): `concurrency` OS threads.
pub fn run_threads<F>(ops: usize, concurrency: usize, op: F) -> anyhow::Result<Timed>
where
    F: Fn(usize) -> anyhow::Result<u64> + Sync,
{
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Vec<f64>, u64)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency.clamp(1, ops.max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies = Vec::new();
                    let mut bytes = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= ops {
                            break;
                        }
                        let t = Instant::now();
                        bytes += op(i)?;
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    anyhow::Ok((latencies, bytes))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut latencies = Vec::with_capacity(ops);
    let mut bytes = 0;
    for r in results {
        let (l, b) = r?;
        latencies.extend(l);
        bytes += b;
    }
    Ok(Timed {
        latencies_ms: latencies,
        bytes,
        wall,
        cpu_s: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 99.5), Some(100.0));
        // Ten values: p99 is the largest, p50 the fifth.
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0, 2.0], f64::NAN), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 250.0), Some(2.0));
    }

    #[test]
    fn summaries_sort_and_rate() {
        let s = Summary::new(vec![3.0, 1.0, 2.0, 4.0], 4_000_000, Duration::from_secs(2));
        assert_eq!(s.ops, 4);
        assert_eq!(s.ops_per_s, 2.0);
        assert_eq!(s.mb_per_s, 2.0);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 4.0);
        assert_eq!(s.max_ms, 4.0);
        let empty = Summary::new(Vec::new(), 0, Duration::ZERO);
        assert_eq!(empty.ops, 0);
        assert_eq!(empty.p99_ms, 0.0);
    }

    #[test]
    fn merged_batches_add_up() {
        let mut a = Timed {
            latencies_ms: vec![1.0, 2.0],
            bytes: 10,
            wall: Duration::from_secs(1),
            cpu_s: None,
        };
        a.merge(Timed {
            latencies_ms: vec![3.0],
            bytes: 20,
            wall: Duration::from_secs(2),
            cpu_s: Some((3.0, 1.5)),
        });
        let s = a.summary();
        assert_eq!((s.ops, s.bytes, s.seconds, s.max_ms), (3, 30, 3.0, 3.0));
        assert_eq!((s.server_cores, s.client_cores), (Some(1.0), Some(0.5)));
    }

    #[test]
    fn ratios_need_a_positive_divisor() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn thread_pool_runs_every_index_once() {
        let seen = std::sync::Mutex::new(vec![0u8; 100]);
        let s = run_threads(100, 7, |i| {
            seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] += 1;
            Ok(10)
        })
        .unwrap()
        .summary();
        assert_eq!(s.ops, 100);
        assert_eq!(s.bytes, 1000);
        assert!(seen.into_inner().unwrap().iter().all(|&n| n == 1));
        assert!(run_threads(10, 3, |i| if i == 5 {
            Err(anyhow::anyhow!("boom"))
        } else {
            Ok(0)
        })
        .is_err());
    }

    #[tokio::test]
    async fn task_pool_runs_every_index_once() {
        let seen = Arc::new(std::sync::Mutex::new(vec![0u8; 50]));
        let s = {
            let seen = seen.clone();
            run_tasks(50, 8, move |i| {
                let seen = seen.clone();
                async move {
                    seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] += 1;
                    Ok(1)
                }
            })
            .await
            .unwrap()
            .summary()
        };
        assert_eq!(s.ops, 50);
        assert!(seen.lock().unwrap().iter().all(|&n| n == 1));
    }
}
