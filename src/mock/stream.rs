//! The streaming response body shared by every format, plus the framings they use.
//!
//! [`MockStream`] writes one frame per flush (like a real provider emitting tokens), optionally
//! waits `chunk_delay` between frames, can stop with an error to drop the connection
//! (`close_mid_stream`), and counts itself in the mock's stats: open while alive, cancelled when
//! dropped before its end (the client went away).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use actix_rt::time::{sleep, Sleep};
use actix_web::web::{self, Bytes};
use futures_util::Stream;
use serde_json::Value;

use super::log::MockState;

/// `data: [DONE]` — the terminator of OpenAI-style SSE streams.
pub(crate) const SSE_DONE: &str = "data: [DONE]\n\n";

/// One SSE event carrying only `data`.
pub(crate) fn sse_data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// One SSE event with an `event:` name (Anthropic).
pub(crate) fn sse_event(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// One newline-delimited JSON line (Ollama, Cohere).
pub(crate) fn ndjson(line: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// What the stream does between two frames.
enum Pause {
    /// Nothing pending: the next frame may go.
    None,
    /// Return `Pending` once so actix flushes the frame just written on its own.
    Flush,
    /// Wait for `chunk_delay`.
    Sleep(Pin<Box<Sleep>>),
}

/// A response body that yields pre-built frames one per write.
pub(crate) struct MockStream {
    frames: std::vec::IntoIter<Bytes>,
    chunk_delay: Option<Duration>,
    pause: Pause,
    /// End with an error instead of cleanly, so actix drops the connection mid-stream.
    cut: bool,
    guard: StreamGuard,
}

impl MockStream {
    pub(crate) fn new(
        frames: Vec<Bytes>,
        chunk_delay: Option<Duration>,
        cut: bool,
        state: Option<web::Data<MockState>>,
    ) -> MockStream {
        if let Some(state) = &state {
            state.stream_opened();
        }
        MockStream {
            frames: frames.into_iter(),
            chunk_delay,
            pause: Pause::None,
            cut,
            guard: StreamGuard {
                state,
                finished: false,
            },
        }
    }

    /// The pause after a frame: the delay only between frames, never after the last one.
    fn pause_after_frame(&self) -> Pause {
        match self.chunk_delay {
            Some(delay) if self.frames.len() > 0 => Pause::Sleep(Box::pin(sleep(delay))),
            _ => Pause::Flush,
        }
    }
}

impl Stream for MockStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.pause {
            Pause::None => {}
            Pause::Flush => {
                self.pause = Pause::None;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Pause::Sleep(timer) => {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.pause = Pause::None;
            }
        }
        if let Some(frame) = self.frames.next() {
            self.pause = self.pause_after_frame();
            return Poll::Ready(Some(Ok(frame)));
        }
        // Ending on purpose (cleanly or by `close_mid_stream`) is not a cancellation.
        self.guard.finished = true;
        if std::mem::take(&mut self.cut) {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock fault: close_mid_stream",
            ))));
        }
        Poll::Ready(None)
    }
}

/// Keeps the open/cancelled stream counters right however the body ends.
struct StreamGuard {
    state: Option<web::Data<MockState>>,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.stream_closed(!self.finished);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn frames(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("f{i}"))).collect()
    }

    #[actix_rt::test]
    async fn yields_every_frame_then_ends_and_counts_nothing_cancelled() {
        let state = web::Data::new(MockState::new());
        let stream = MockStream::new(frames(3), None, false, Some(state.clone()));
        let items: Vec<_> = stream.collect().await;
        let items: Vec<Bytes> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(items, frames(3));
        assert_eq!(state.stats()["open_streams"], 0);
        assert_eq!(state.stats()["cancelled_streams"], 0);
    }

    #[actix_rt::test]
    async fn dropping_early_counts_a_cancelled_stream() {
        let state = web::Data::new(MockState::new());
        let mut stream = MockStream::new(frames(3), None, false, Some(state.clone()));
        assert!(stream.next().await.is_some());
        assert_eq!(state.stats()["open_streams"], 1);
        drop(stream);
        assert_eq!(state.stats()["open_streams"], 0);
        assert_eq!(state.stats()["cancelled_streams"], 1);
    }

    #[actix_rt::test]
    async fn cut_streams_end_with_an_error_and_are_not_cancellations() {
        let state = web::Data::new(MockState::new());
        let stream = MockStream::new(frames(1), None, true, Some(state.clone()));
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
        assert_eq!(state.stats()["cancelled_streams"], 0);
    }

    #[actix_rt::test]
    async fn chunk_delay_spaces_frames() {
        let started = std::time::Instant::now();
        let stream = MockStream::new(frames(3), Some(Duration::from_millis(30)), false, None);
        assert_eq!(stream.count().await, 3);
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}
