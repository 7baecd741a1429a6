//! A fault-injecting TCP proxy in front of the S3 endpoint (moto), so tests see
//! S3 the way S3 fails: connections refused, answers lost after the request was
//! carried out (a retried create-only put then meets 412), answers cut off,
//! delayed or never sent. Faults are drawn per answer with the rates set on the
//! proxy, which can change while a test runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each fault happens (each a probability per answer, 0 to 1).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// A new connection is closed before anything is forwarded.
    pub refuse: f64,
    /// The request is forwarded and carried out; its answer is dropped with the
    /// connection.
    pub drop_answer: f64,
    /// Only the first part of the answer is forwarded, then the connection closes.
    pub truncate_answer: f64,
    /// The answer is held for `delay` first.
    pub delay_answer: f64,
    /// How long a delayed answer is held.
    pub delay: Duration,
    /// The answer is never forwarded (the connection stays open, silent).
    pub stall: f64,
    /// An answer longer than 64 KiB is cut off somewhere after its first 64 KiB
    /// (its head and part of its body arrive: a GET body cut mid-way).
    pub cut_long_answer: f64,
}

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct Injected {
    /// Connections refused.
    pub refused: AtomicU64,
    /// Answers dropped after the request was carried out.
    pub dropped: AtomicU64,
    /// Answers cut off.
    pub truncated: AtomicU64,
    /// Answers delayed.
    pub delayed: AtomicU64,
    /// Answers never sent.
    pub stalled: AtomicU64,
    /// Long answers cut off mid-body.
    pub cut: AtomicU64,
}

impl Injected {
    /// All faults injected so far.
    pub fn total(&self) -> u64 {
        [
            &self.refused,
            &self.dropped,
            &self.truncated,
            &self.delayed,
            &self.stalled,
            &self.cut,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// A running proxy; stops with the test's runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to give the vault.
    pub url: String,
    faults: Arc<Mutex<Faults>>,
    /// What it injected.
    pub injected: Arc<Injected>,
    /// Answers it began to carry (one per request): the vault's S3 requests.
    pub answers: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`) with no faults.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let injected = Arc::new(Injected::default());
        let answers = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let (f, i, a) = (faults.clone(), injected.clone(), answers.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let faults = *f.lock().unwrap_or_else(PoisonError::into_inner);
                if chance(faults.refuse) {
                    i.refused.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let (upstream, f, i, a) = (upstream.clone(), f.clone(), i.clone(), a.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        carry(client, server, f, i, a).await;
                    }
                });
            }
        });
        FaultProxy {
            url,
            faults,
            injected,
            answers,
        }
    }

    /// Sets the fault rates from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }
}

/// Carries one connection, drawing a fault at the start of each answer.
async fn carry(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Mutex<Faults>>,
    injected: Arc<Injected>,
    answers: Arc<AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Set when the client sent bytes since the last answer began: the next bytes
    // from the server start a new answer.
    let asked = Arc::new(AtomicBool::new(false));
    let asked_up = asked.clone();
    let up = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    asked_up.store(true, Ordering::SeqCst);
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    // Where the current answer is to be cut off, and how much of it went out.
    let mut cut_at: Option<usize> = None;
    let mut forwarded = 0usize;
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if asked.swap(false, Ordering::SeqCst) {
            answers.fetch_add(1, Ordering::Relaxed);
            let f = *faults.lock().unwrap_or_else(PoisonError::into_inner);
            forwarded = 0;
            cut_at = chance(f.cut_long_answer)
                .then(|| LONG_ANSWER + rand::thread_rng().gen_range(0..4 * LONG_ANSWER));
            match draw(&f) {
                Some(Fault::Drop) => {
                    injected.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Fault::Truncate) => {
                    injected.truncated.fetch_add(1, Ordering::Relaxed);
                    let _ = client_write.write_all(&buffer[..n / 2]).await;
                    break;
                }
                Some(Fault::Stall) => {
                    injected.stalled.fetch_add(1, Ordering::Relaxed);
                    // Silent until the client gives up and closes.
                    while !up.is_finished() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    break;
                }
                Some(Fault::Delay) => {
                    injected.delayed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(f.delay).await;
                }
                None => {}
            }
        }
        if let Some(at) = cut_at {
            if forwarded + n > at {
                injected.cut.fetch_add(1, Ordering::Relaxed);
                let _ = client_write.write_all(&buffer[..at - forwarded]).await;
                break;
            }
        }
        forwarded += n;
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

/// Answers longer than this may be cut off (`Faults::cut_long_answer`).
const LONG_ANSWER: usize = 64 * 1024;

enum Fault {
    Drop,
    Truncate,
    Stall,
    Delay,
}

fn chance(p: f64) -> bool {
    rand::thread_rng().gen_bool(p.clamp(0.0, 1.0))
}

/// The fault for the next answer, if any.
fn draw(f: &Faults) -> Option<Fault> {
    if chance(f.drop_answer) {
        Some(Fault::Drop)
    } else if chance(f.truncate_answer) {
        Some(Fault::Truncate)
    } else if chance(f.stall) {
        Some(Fault::Stall)
    } else if chance(f.delay_answer) {
        Some(Fault::Delay)
    } else {
        None
    }
}
