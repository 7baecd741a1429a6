//! Writing an object from blocking code: a [`std::io::Write`] on a blocking
//! thread whose bytes become the [`ByteStream`] an [`ObjectStore::put_new`]
//! reads, through a bounded channel, so that producer and store run together
//! and hold a few buffers between them, not the object.
//!
//! [`ObjectStore::put_new`]: super::ObjectStore::put_new

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{ByteStream, StorageError};

/// Bytes gathered before they are handed to the store.
const CHUNK_LEN: usize = 1 << 20;
/// Chunks in flight between the writer and the store.
const IN_FLIGHT: usize = 4;

/// The writing end; use it on a blocking thread (it blocks while the store is
/// behind). Call [`BlockingSink::finish`] when every byte is written: a sink
/// dropped without it (an error, a panic) ends the stream with an error, so the
/// store never takes the bytes written so far for the whole object.
pub struct BlockingSink {
    sender: mpsc::Sender<Result<Bytes, StorageError>>,
    pending: BytesMut,
    finished: Arc<AtomicBool>,
}

/// A sink and the stream to store what is written to it.
pub fn blocking_sink() -> (BlockingSink, ByteStream) {
    let (sender, receiver) = mpsc::channel(IN_FLIGHT);
    let finished = Arc::new(AtomicBool::new(false));
    // When the sender is gone the stream ends cleanly only if it finished;
    // otherwise its last item is an error.
    let stream = futures::stream::unfold(
        (Some(receiver), Arc::clone(&finished)),
        |(receiver, finished)| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(item) => Some((item, (Some(receiver), finished))),
                None if finished.load(Ordering::SeqCst) => None,
                None => Some((
                    Err(StorageError::SourceFailed(
                        "the object's writer stopped before its end".into(),
                    )),
                    (None, finished),
                )),
            }
        },
    );
    (
        BlockingSink {
            sender,
            pending: BytesMut::with_capacity(CHUNK_LEN),
            finished,
        },
        Box::pin(stream),
    )
}

impl BlockingSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the store stopped reading the object",
            )
        })
    }

    /// Hands on the last bytes and ends the stream cleanly.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.send()?;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl std::io::Write for BlockingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let take = buf.len().min(CHUNK_LEN - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        if self.pending.len() == CHUNK_LEN {
            self.send()?;
        }
        Ok(take)
    }

    /// Buffers stay until a chunk is full or the sink finishes: a flush is not
    /// the end of the object, and the store takes what it gets in any sizes.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn what_is_written_arrives_in_order_and_a_dropped_sink_fails_the_stream() {
        let (mut sink, stream) = blocking_sink();
        let writer = tokio::task::spawn_blocking(move || {
            for n in 0..3_000u32 {
                sink.write_all(&[n as u8; 1_000]).unwrap();
            }
            sink.finish().unwrap();
        });
        let got: Vec<u8> = stream.map(|chunk| chunk.unwrap().to_vec()).concat().await;
        writer.await.unwrap();
        let expected: Vec<u8> = (0..3_000u32).flat_map(|n| [n as u8; 1_000]).collect();
        assert_eq!(got, expected);

        let (mut sink, stream) = blocking_sink();
        let writer = tokio::task::spawn_blocking(move || {
            sink.write_all(b"half").unwrap();
            drop(sink);
        });
        let items: Vec<_> = stream.collect().await;
        writer.await.unwrap();
        assert!(
            items.last().unwrap().is_err(),
            "a dropped sink ended cleanly"
        );

        // A store that stops reading makes the writer fail, not hang.
        let (mut sink, stream) = blocking_sink();
        drop(stream);
        let failed = tokio::task::spawn_blocking(move || sink.write_all(&vec![0u8; 3 * CHUNK_LEN]))
            .await
            .unwrap();
        assert!(failed.is_err());
    }
}
