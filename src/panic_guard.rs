//! A panic while handling one request costs only that request. The release profile unwinds
//! (`panic = "unwind"`), and every boundary where one request's work runs catches it here: the
//! pure request translation, each actor handler (route, provider, config) and the stream
//! translator. A caught panic is logged and becomes a 500, or, mid-stream, an error event then
//! `[DONE]`; the worker, its actors and every other request carry on.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use futures_util::FutureExt;

use crate::error::GatewayError;

/// Runs `f`, turning a panic into [`GatewayError::Internal`]. `site` names the boundary in the
/// log line.
pub(crate) fn catch<T>(site: &'static str, f: impl FnOnce() -> T) -> Result<T, GatewayError> {
    // The state a panicking request leaves behind is its own (its translator, its body): it is
    // dropped with the request, so observing it half-updated is not possible.
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| caught(site, payload.as_ref()))
}

/// [`catch`] for an actor handler's future.
///
/// A combinator rather than an `async fn`: an `async fn` keeps its unpolled argument beside
/// the future it awaits, doubling the size of every request's future (6.7 KiB on the route
/// actor's path), and each move of a future copies all of it.
pub(crate) fn catch_future<T>(
    site: &'static str,
    work: impl Future<Output = Result<T, GatewayError>>,
) -> impl Future<Output = Result<T, GatewayError>> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .map(move |caught_or_not| {
            caught_or_not.unwrap_or_else(|payload| Err(caught(site, payload.as_ref())))
        })
}

fn caught(site: &'static str, payload: &(dyn Any + Send)) -> GatewayError {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload");
    tracing::error!(
        site,
        panic = message,
        "a request panicked; answered 500, serving on"
    );
    GatewayError::Internal(format!("panic in {site}"))
}

/// Test-only fault injection: a request whose model is `panic-in-<site>` panics at `site`.
#[cfg(test)]
pub(crate) fn hook(site: &str, model: &str) {
    if model.strip_prefix("panic-in-") == Some(site) {
        panic!("injected panic in {site}");
    }
}

#[cfg(test)]
mod tests;
