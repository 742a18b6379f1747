//! Kong's per-service `write_timeout` while the request body goes upstream: like nginx's
//! `proxy_send_timeout`, the longest the provider may leave two successive writes waiting (a
//! provider that stops reading the body), not a limit on the whole upload.
//!
//! awc pulls the next piece of a body only once the previous one is in its write buffer and the
//! buffer has room, so the time since the last pull is the time the write has been stuck.

use std::cell::Cell;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use awc::body::{BodySize, MessageBody};
use bytes::Bytes;

/// Handed to awc in pieces this size, so a stalled write is seen within one piece.
const PIECE: usize = 16 * 1024;

/// A body that fits in one piece is one write into a socket buffer that holds it (Linux's
/// smallest default send buffer is 16 KiB), so it cannot stall and needs no watch.
pub(crate) fn needs_watch(body: &Bytes) -> bool {
    body.len() > PIECE
}

#[derive(Clone, Copy)]
enum Phase {
    /// Connecting and sending the head (the connect timeout applies).
    Waiting,
    /// The last piece was taken at this instant.
    Writing(Instant),
    /// Every piece was taken; what is left in awc's write buffer is covered by the read
    /// timeout, which runs until the response head.
    Done,
}

/// The request body, recording when awc takes each piece.
pub(crate) struct PacedBody {
    rest: Bytes,
    size: u64,
    phase: Rc<Cell<Phase>>,
}

/// Resolves once the body has waited `limit` for its next write; never once it is all written.
pub(crate) struct Watch {
    phase: Rc<Cell<Phase>>,
    limit: Duration,
}

pub(crate) fn paced(body: Bytes, limit: Duration) -> (PacedBody, Watch) {
    let phase = Rc::new(Cell::new(Phase::Waiting));
    let size = body.len() as u64;
    let watch = Watch {
        phase: phase.clone(),
        limit,
    };
    (
        PacedBody {
            rest: body,
            size,
            phase,
        },
        watch,
    )
}

impl MessageBody for PacedBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.size)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            this.phase.set(Phase::Done);
            return Poll::Ready(None);
        }
        let piece = this.rest.split_to(this.rest.len().min(PIECE));
        this.phase.set(Phase::Writing(Instant::now()));
        Poll::Ready(Some(Ok(piece)))
    }
}

impl Watch {
    /// Waits until a write has been stuck for the limit.
    pub(crate) async fn stalled(self) {
        loop {
            let due = match self.phase.get() {
                Phase::Waiting => Instant::now() + self.limit,
                Phase::Writing(at) if at.elapsed() >= self.limit => return,
                Phase::Writing(at) => at + self.limit,
                Phase::Done => std::future::pending().await,
            };
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_goes_out_whole_in_pieces_and_ends_done() {
        let body = Bytes::from(vec![7u8; PIECE * 2 + 5]);
        assert!(needs_watch(&body));
        assert!(!needs_watch(&Bytes::from_static(b"{}")));
        let (mut paced, watch) = paced(body.clone(), Duration::from_millis(10));
        assert_eq!(paced.size(), BodySize::Sized(body.len() as u64));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(piece))) = Pin::new(&mut paced).poll_next(&mut cx) {
            assert!(piece.len() <= PIECE);
            assert!(matches!(watch.phase.get(), Phase::Writing(_)));
            out.extend_from_slice(&piece);
        }
        assert_eq!(out, body);
        assert!(matches!(watch.phase.get(), Phase::Done));
    }

    #[actix_rt::test]
    async fn a_write_stuck_for_the_limit_is_reported_and_a_finished_body_never_is() {
        let (mut paced, watch) =
            paced(Bytes::from(vec![0u8; PIECE * 2]), Duration::from_millis(30));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _ = Pin::new(&mut paced).poll_next(&mut cx);
        let started = Instant::now();
        watch.stalled().await;
        assert!(started.elapsed() >= Duration::from_millis(25));

        let (mut paced, watch) = paced_done();
        let _ = Pin::new(&mut paced).poll_next(&mut cx);
        let finished = tokio::time::timeout(Duration::from_millis(100), watch.stalled()).await;
        assert!(finished.is_err(), "a written body must not time out");
    }

    fn paced_done() -> (PacedBody, Watch) {
        paced(Bytes::new(), Duration::from_millis(10))
    }
}
