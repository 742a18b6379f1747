//! `StreamActor`: one per streamed answer. It pumps the upstream body through its mailbox (one
//! message per upstream read: the chunks awc has already decoded, joined), translates each
//! read with the route's stream state machine into one batch of OpenAI SSE bytes, and pushes
//! the batch into a bounded channel that is the client's response body. A full channel makes
//! the actor wait, which stops the upstream read: a slow client slows the provider instead of
//! growing memory. A client that goes away closes the channel; the actor stops and drops the
//! upstream body, which cancels the upstream call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::fut::ActorFutureExt;
use actix::{Actor, ActorContext, AsyncContext, Context, StreamHandler, WrapFuture};
use awc::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::messages::{AccessInfo, StreamEnd};
use crate::error::GatewayError;
use crate::logging;
use crate::panic_guard;
use crate::providers::{oai, StreamError, StreamTranslate};
use crate::telemetry;

/// Streams alive right now, process-wide (tests check that none leak).
pub static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// At most this many of awc's chunks make one message. awc yields every HTTP chunk of a chunked
/// body on its own, and OpenAI-compatible servers write one event per chunk: one upstream read
/// of 20 events was 20 messages, translator calls, channel items and client chunks
/// (loadtest/ANALYSIS.md, session 8). The cap only bounds the batch's size.
const READ_BATCH: usize = 64;

/// The chunks of one read as one buffer (the chunk itself when there is one), and the error
/// that ended the read, if any.
fn joined(items: Vec<Result<Bytes, PayloadError>>) -> (Bytes, Option<PayloadError>) {
    let mut chunks = Vec::with_capacity(items.len());
    let mut error = None;
    for item in items {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut data = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            chunks.iter().for_each(|c| data.extend_from_slice(c));
            data.freeze()
        }
    };
    (data, error)
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamOutcome {
    /// The upstream body ended and everything reached the client's channel.
    Completed,
    /// The client went away first; the upstream call was dropped.
    ClientClosed,
    /// An upstream or translation failure ended it with an error event.
    Failed,
}

impl StreamOutcome {
    /// The access log's words.
    fn as_str(self) -> &'static str {
        match self {
            StreamOutcome::Completed => "completed",
            StreamOutcome::ClientClosed => "client closed",
            StreamOutcome::Failed => "upstream error",
        }
    }
}

pub struct StreamActor {
    translator: Box<dyn StreamTranslate>,
    tx: mpsc::Sender<Bytes>,
    idle_timeout: Duration,
    last_read: Instant,
    access: AccessInfo,
    /// How the stream ended, for the access log.
    outcome: StreamOutcome,
    first_chunk: Option<Duration>,
    /// The model the first batch names (traces only).
    model: Option<String>,
    on_end: Option<tokio::sync::oneshot::Sender<StreamEnd>>,
}

impl StreamActor {
    /// Starts the actor on the current worker, reading `body` until it ends or the client goes.
    pub fn start_for<S>(
        body: S,
        translator: Box<dyn StreamTranslate>,
        tx: mpsc::Sender<Bytes>,
        idle_timeout: Duration,
        access: AccessInfo,
        on_end: Option<tokio::sync::oneshot::Sender<StreamEnd>>,
    ) where
        S: futures_util::Stream<Item = Result<Bytes, PayloadError>> + 'static,
    {
        StreamActor::create(move |ctx| {
            ctx.add_stream(body.ready_chunks(READ_BATCH));
            StreamActor {
                translator,
                tx,
                idle_timeout,
                last_read: Instant::now(),
                access,
                outcome: StreamOutcome::Completed,
                first_chunk: None,
                model: None,
                on_end,
            }
        });
    }

    /// Hands one batch to the client, waiting (and so pausing upstream reads) when the channel
    /// is full. With `last`, the actor stops once the batch is handed over.
    fn deliver(&mut self, batch: BytesMut, last: bool, ctx: &mut Context<Self>) {
        let result = if batch.is_empty() {
            Ok(())
        } else {
            if self.first_chunk.is_none() {
                self.first_chunk = Some(self.access.started.elapsed());
                if telemetry::enabled() {
                    self.model = telemetry::stream_model(&batch);
                }
            }
            self.tx.try_send(batch.freeze())
        };
        match result {
            Ok(()) if last => ctx.stop(),
            Ok(()) => {}
            Err(TrySendError::Full(batch)) => {
                let tx = self.tx.clone();
                ctx.wait(
                    async move { tx.send(batch).await.is_ok() }
                        .into_actor(self)
                        .map(move |delivered, act, ctx| {
                            // Time spent waiting for a slow client is not upstream idleness.
                            act.last_read = Instant::now();
                            if !delivered {
                                act.client_gone(ctx);
                            } else if last {
                                ctx.stop();
                            }
                        }),
                );
            }
            Err(TrySendError::Closed(_)) => self.client_gone(ctx),
        }
    }

    /// Translates one read and hands the batch on; a translation failure ends the stream.
    fn translate(&mut self, chunk: &[u8], ctx: &mut Context<Self>) {
        // Sized for the common case, a translation about as long as its input, so writing the
        // batch does not grow the buffer event by event.
        let mut out = BytesMut::with_capacity(chunk.len() + chunk.len() / 4 + 64);
        let result = panic_guard::catch("stream translation", || {
            #[cfg(test)]
            panic_guard::hook("stream", &self.access.model);
            self.translator.feed(chunk, &mut out)
        });
        self.settle(result, out, false, ctx);
    }

    /// Hands on what one translator call wrote (the stream's last batch with `last`), then
    /// ends the stream with its error, if it failed.
    fn settle(
        &mut self,
        result: Result<Result<(), StreamError>, GatewayError>,
        out: BytesMut,
        last: bool,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(Ok(())) => self.deliver(out, last, ctx),
            Ok(Err(e)) => {
                self.deliver(out, false, ctx);
                self.fail(&e.0, ctx);
            }
            // What a panicking translator wrote is not trusted; the stream ends here.
            Err(e) => self.fail(&e.to_string(), ctx),
        }
    }

    fn client_gone(&mut self, ctx: &mut Context<Self>) {
        self.outcome = StreamOutcome::ClientClosed;
        ctx.stop();
    }

    /// Ends the stream for the client with the translator's error event, so SDKs raise instead
    /// of waiting.
    fn fail(&mut self, message: &str, ctx: &mut Context<Self>) {
        let mut out = BytesMut::new();
        let written = panic_guard::catch("stream translation", || {
            self.translator.write_error(&mut out, message)
        });
        if written.is_err() {
            out.clear();
            oai::write_error_event(&mut out, message);
            oai::write_done(&mut out);
        }
        self.outcome = StreamOutcome::Failed;
        tracing::warn!(request_id = %self.access.request_id, error = message, "stream ended with an error");
        self.deliver(out, true, ctx);
    }
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        // Notice a client that leaves while the upstream is quiet, not only at the next write.
        let tx = self.tx.clone();
        ctx.spawn(
            async move { tx.closed().await }
                .into_actor(self)
                .map(|_, act, ctx| act.client_gone(ctx)),
        );
        // `awc`'s timeout covers the response head only; a stream needs its own idle limit.
        let tick = (self.idle_timeout / 4).max(Duration::from_millis(50));
        ctx.run_interval(tick, |act, ctx| {
            if act.last_read.elapsed() >= act.idle_timeout {
                let ms = act.idle_timeout.as_millis();
                act.fail(&format!("upstream stream idle for more than {ms} ms"), ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
        let usage = panic_guard::catch("stream usage", || self.translator.usage());
        let usage = usage.unwrap_or_default();
        logging::access_stream(&self.access, self.outcome.as_str(), usage, self.first_chunk);
        if let Some(on_end) = self.on_end.take() {
            let _ = on_end.send(StreamEnd {
                usage,
                completed: self.outcome == StreamOutcome::Completed,
                model: self.model.take(),
            });
        }
    }
}

impl StreamHandler<Vec<Result<Bytes, PayloadError>>> for StreamActor {
    fn handle(&mut self, items: Vec<Result<Bytes, PayloadError>>, ctx: &mut Context<Self>) {
        self.last_read = Instant::now();
        let (chunk, error) = joined(items);
        if !chunk.is_empty() {
            self.translate(&chunk, ctx);
        }
        // Unless the read's own data already ended the stream.
        if let Some(e) = error.filter(|_| self.outcome == StreamOutcome::Completed) {
            self.fail(&format!("upstream stream broke: {e}"), ctx);
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        let mut out = BytesMut::new();
        let result = panic_guard::catch("stream translation", || self.translator.finish(&mut out));
        self.settle(result, out, true, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_its_chunks_in_order_up_to_an_error() {
        let broken = || PayloadError::Incomplete(None);
        let items = vec![
            Ok(Bytes::from_static(b"data: 1\n\n")),
            Ok(Bytes::from_static(b"data: 2\n")),
            Ok(Bytes::from_static(b"\n")),
            Err(broken()),
            Ok(Bytes::from_static(b"after the error")),
        ];
        let (data, error) = joined(items);
        assert_eq!(&data[..], b"data: 1\n\ndata: 2\n\n");
        assert!(matches!(error, Some(PayloadError::Incomplete(_))));

        let (data, error) = joined(vec![Err(broken())]);
        assert!(data.is_empty() && error.is_some());
    }

    /// A read of one chunk is passed on as it is, not copied.
    #[test]
    fn a_single_chunk_is_not_copied() {
        let chunk = Bytes::from(b"data: only\n\n".to_vec());
        let at = chunk.as_ptr();
        let (data, error) = joined(vec![Ok(chunk)]);
        assert_eq!(data.as_ptr(), at);
        assert!(error.is_none());
    }
}
