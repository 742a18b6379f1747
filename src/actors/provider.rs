//! `ProviderActor`: one per worker thread, owning that worker's `awc` client and so its pool of
//! keep-alive upstream connections. (`awc::Client` is `!Send`: a per-worker owner keeps the hot
//! path on one thread.) It sends each upstream request, and for a streamed 200 hands the body
//! to a new `StreamActor`.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Context};
use actix_web::http::{header, StatusCode, Uri};
use actix_web::HttpMessage;
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;
use futures_util::future::{select, Either};
use tokio::sync::{mpsc, oneshot};

use super::messages::{Exchange, ReplyBody, StreamPlan, UpstreamReply};
use super::stream::StreamActor;
use super::write_timeout;
use crate::error::GatewayError;
use crate::providers::{TokenSource, UpstreamRequest};
use crate::proxy::compile::Timeouts;
use crate::proxy::request::is_json_type;
use crate::proxy::upload::Upload;

/// Largest upstream body the gateway buffers for translation.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

pub struct ProviderActor {
    pools: Pools,
}

impl ProviderActor {
    /// `max_connections` caps each of this worker's pools (awc's default of 100 is too low for
    /// an AI gateway holding long streams).
    pub fn new(max_connections: usize, idle_timeout: Duration, stream_buffer: usize) -> Self {
        // rustls needs one process-wide crypto provider; a second install attempt is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ProviderActor {
            pools: Pools(Rc::new(PoolSet {
                clients: RefCell::new(hashbrown::HashMap::new()),
                max_connections,
                idle_timeout,
                stream_buffer: stream_buffer.max(1),
            })),
        }
    }

    /// This worker's pools, for the route actors started on the same worker: they call
    /// [`Pools::exchange`] directly rather than through this actor's mailbox (one actor hop
    /// per request fewer; loadtest/ANALYSIS.md, session 3).
    pub fn pools(&self) -> Pools {
        self.pools.clone()
    }
}

/// A worker's upstream connection pools, owned by its `ProviderActor` and lent to the route
/// actors of the same thread (`awc::Client` is `!Send`, and so is this handle).
#[derive(Clone)]
pub struct Pools(Rc<PoolSet>);

struct PoolSet {
    /// One keep-alive pool per connect timeout in use: awc sets the connect timeout per client,
    /// and Kong's services each have their own. Most configs have exactly one.
    clients: RefCell<hashbrown::HashMap<Duration, awc::Client>>,
    max_connections: usize,
    idle_timeout: Duration,
    stream_buffer: usize,
}

impl Pools {
    fn client(&self, connect_timeout: Duration) -> awc::Client {
        let set = &self.0;
        let (max_connections, idle_timeout) = (set.max_connections, set.idle_timeout);
        set.clients
            .borrow_mut()
            .entry(connect_timeout)
            .or_insert_with(|| {
                let connector = awc::Connector::new()
                    .timeout(connect_timeout)
                    .limit(max_connections)
                    // awc's liveness check misses some connections the provider closed while
                    // idle (a 502 per ~150 after a quiet spell); expiring them first avoids it.
                    .conn_keep_alive(idle_timeout);
                awc::Client::builder()
                    .connector(connector)
                    .no_default_headers()
                    .disable_redirects()
                    // Per-request timeouts come from each route's service; this is a ceiling.
                    .timeout(Duration::from_secs(24 * 3600))
                    .finish()
            })
            .clone()
    }

    /// One upstream call: sends the request on this worker's pool for its connect timeout and
    /// answers with the response head and the buffered body, or a channel fed by a new
    /// `StreamActor` for a streamed 200.
    pub fn exchange(
        &self,
        msg: Exchange,
    ) -> impl Future<Output = Result<UpstreamReply, GatewayError>> + 'static {
        let client = self.client(msg.timeouts.connect);
        let connect_timeout = msg.timeouts.connect;
        let buffer = self.0.stream_buffer;
        crate::panic_guard::catch_future("provider actor", async move {
            let Exchange {
                mut request,
                timeouts,
                stream,
                token,
                cancel,
                access,
                on_end,
                upload,
            } = msg;
            let started = Instant::now();
            let work = async move {
                // The connect timeout in force is the pool's: awc sets it per client.
                let timeouts = Timeouts {
                    connect: connect_timeout,
                    ..timeouts
                };
                if let Some(source) = token {
                    let bearer = fetch_token(&client, source.as_ref(), timeouts).await?;
                    let value = header::HeaderValue::from_str(&format!("Bearer {bearer}"))
                        .map_err(|_| GatewayError::Identity("unusable token".into()))?;
                    request.headers.push((header::AUTHORIZATION, value));
                }
                let response = match upload {
                    Some(upload) => send_upload(&client, request, upload, timeouts).await?,
                    None => send(&client, request, timeouts).await?,
                };
                let status = response.status();
                let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
                let relayed = relayed_headers(response.headers());
                let latency = started.elapsed();
                let streamed = match &stream {
                    StreamPlan::None => false,
                    StreamPlan::Translate(_) => status == StatusCode::OK,
                    StreamPlan::PassthroughIfStreamed => {
                        status == StatusCode::OK && is_stream_type(content_type.as_ref())
                    }
                    StreamPlan::Relay { buffer_json } => {
                        status.is_success()
                            && !(*buffer_json && content_type.as_ref().is_some_and(is_json_type))
                    }
                };
                if streamed {
                    let mut translator = match stream {
                        StreamPlan::Translate(t) => t,
                        StreamPlan::Relay { .. } => {
                            Box::new(crate::providers::relay::RelayStream::default())
                        }
                        _ => Box::new(crate::providers::RawPassthrough),
                    };
                    translator.content_type(content_type.as_ref());
                    let (tx, rx) = mpsc::channel(buffer);
                    // Only the body stream lives on: the response head (its header map) is
                    // dropped now rather than held for the whole stream.
                    let mut response = response;
                    let body = response.take_payload();
                    StreamActor::start_for(body, translator, tx, timeouts.read, access, on_end);
                    return Ok(UpstreamReply {
                        status,
                        content_type,
                        relayed,
                        body: ReplyBody::Stream(rx),
                        latency,
                    });
                }
                let mut response = response.timeout(timeouts.read);
                let body = response
                    .body()
                    .limit(MAX_UPSTREAM_BODY)
                    .await
                    .map_err(|e| payload_error(e, timeouts.read))?;
                Ok(UpstreamReply {
                    status,
                    content_type,
                    relayed,
                    body: ReplyBody::Full(body),
                    latency,
                })
            };
            // A client that goes away drops its end of `cancel`; the upstream call is dropped
            // with it, which closes the connection.
            match select(Box::pin(work), Box::pin(cancel_signal(cancel))).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(GatewayError::ClientGone),
            }
        })
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;
}

async fn cancel_signal(cancel: oneshot::Receiver<()>) {
    // Either outcome means the client is gone: a send, or the sender dropped.
    let _ = cancel.await;
}

/// SDKs pace their retries on these (OpenAI's `x-ratelimit-*`, Anthropic's
/// `anthropic-ratelimit-*`, the standard `retry-after`), so they reach the client.
fn relayed_headers(headers: &header::HeaderMap) -> Vec<(header::HeaderName, header::HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n == "retry-after"
                || n == "retry-after-ms"
                || n.starts_with("x-ratelimit-")
                || n.starts_with("anthropic-ratelimit-")
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn is_stream_type(content_type: Option<&header::HeaderValue>) -> bool {
    content_type.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        v.starts_with("text/event-stream")
            || v.starts_with("application/x-ndjson")
            || v.starts_with("application/vnd.amazon.eventstream")
            || v.starts_with("application/stream+json")
    })
}

/// Parsed upstream URLs kept per worker thread: most routes call one fixed URL, and parsing
/// it (~1.2k instructions) on every request was the largest part of building the request.
/// Bounded, because a URL built from templates or query-param auth can differ per request.
const CACHED_URIS: usize = 256;

/// An upstream URL parsed, and the `Host` header awc would otherwise format for it on every
/// request (`write!`, ~0.7k instructions).
#[derive(Clone, Debug, PartialEq)]
struct Target {
    uri: Uri,
    host: Option<header::HeaderValue>,
}

impl Target {
    fn new(uri: Uri) -> Target {
        // awc's rule: the port only when it is not 80 or 443.
        let host = uri.host().and_then(|host| {
            let value = match uri.port_u16() {
                None | Some(80) | Some(443) => host.to_string(),
                Some(port) => format!("{host}:{port}"),
            };
            header::HeaderValue::try_from(value).ok()
        });
        Target { uri, host }
    }
}

thread_local! {
    static URIS: RefCell<hashbrown::HashMap<String, Target>> = RefCell::new(hashbrown::HashMap::new());
}

/// `url` parsed with its `Host` value, from this thread's cache when it was seen before.
fn upstream_target(url: String) -> Result<Target, GatewayError> {
    URIS.with_borrow_mut(|uris| {
        if let Some(target) = uris.get(url.as_str()) {
            return Ok(target.clone());
        }
        let uri = Uri::try_from(url.as_str())
            .map_err(|e| GatewayError::UpstreamConnect(format!("invalid upstream URL: {e}")))?;
        if uris.len() >= CACHED_URIS {
            uris.clear();
        }
        let target = Target::new(uri);
        uris.insert(url, target.clone());
        Ok(target)
    })
}

/// The upstream request with its head set, allowing `timeouts.read` up to the response head
/// (awc's request timeout), and its buffered body.
fn build(
    client: &awc::Client,
    request: UpstreamRequest,
    timeouts: Timeouts,
) -> Result<(awc::ClientRequest, Bytes), GatewayError> {
    let Target { uri, host } = upstream_target(request.url)?;
    let mut req = client.request(request.method, uri).timeout(timeouts.read);
    let map = req.headers_mut();
    for (name, value) in request.headers {
        map.append(name, value);
    }
    // As awc would set it: only when the request carries none.
    if let Some(host) = host.filter(|_| !map.contains_key(header::HOST)) {
        map.insert(header::HOST, host);
    }
    Ok((req, request.body))
}

type Response = awc::ClientResponse<actix_web::dev::Decompress<actix_web::dev::Payload>>;

/// Sends `request`, allowing `timeouts.write` for each write of the body and `timeouts.read`
/// up to the response head.
async fn send(
    client: &awc::Client,
    request: UpstreamRequest,
    timeouts: Timeouts,
) -> Result<Response, GatewayError> {
    let (req, body) = build(client, request, timeouts)?;
    if !write_timeout::needs_watch(&body) {
        return req
            .send_body(body)
            .await
            .map_err(|e| send_error(e, timeouts));
    }
    let (body, watch) = write_timeout::paced(body, timeouts.write);
    match select(req.send_body(body), Box::pin(watch.stalled())).await {
        Either::Left((result, _)) => result.map_err(|e| send_error(e, timeouts)),
        Either::Right(_) => Err(GatewayError::UpstreamTimeout(
            timeouts.write.as_millis() as u64
        )),
    }
}

/// Sends `request` with a streamed body: its declared length when known, else chunked. A send
/// that failed because of the upload answers with the upload's own fault (413, 400, 408).
async fn send_upload(
    client: &awc::Client,
    request: UpstreamRequest,
    upload: Upload,
    timeouts: Timeouts,
) -> Result<Response, GatewayError> {
    let state = upload.state.clone();
    let (req, _) = build(client, request, timeouts)?;
    let sent = match upload.length {
        Some(length) => {
            req.send_body(actix_web::body::SizedStream::new(
                length,
                upload.into_stream(),
            ))
            .await
        }
        None => req.send_stream(upload.into_stream()).await,
    };
    sent.map_err(|e| match state.fault() {
        Some(fault) => fault.into(),
        None => send_error(e, timeouts),
    })
}

/// Upstream failures in the gateway's taxonomy; messages carry no request data.
fn send_error(e: SendRequestError, timeouts: Timeouts) -> GatewayError {
    match e {
        SendRequestError::Timeout => {
            GatewayError::UpstreamTimeout(timeouts.read.as_millis() as u64)
        }
        SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
            GatewayError::UpstreamConnectTimeout(timeouts.connect.as_millis() as u64)
        }
        SendRequestError::Connect(c) => GatewayError::UpstreamConnect(c.to_string()),
        SendRequestError::Url(u) => {
            GatewayError::UpstreamConnect(format!("invalid upstream URL: {u}"))
        }
        other => GatewayError::UpstreamUnreachable(other.to_string()),
    }
}

fn payload_error(e: PayloadError, read_timeout: Duration) -> GatewayError {
    match e {
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            GatewayError::UpstreamTimeout(read_timeout.as_millis() as u64)
        }
        other => {
            GatewayError::UpstreamProtocol(format!("reading the upstream body failed: {other}"))
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A cached token, else one exchange with the token endpoint.
async fn fetch_token(
    client: &awc::Client,
    source: &dyn TokenSource,
    timeouts: Timeouts,
) -> Result<String, GatewayError> {
    let now = unix_now();
    if let Some(token) = source.cached(now) {
        return Ok(token);
    }
    let exchange = source.exchange_request(now)?;
    let mut response = send(client, exchange, timeouts)
        .await
        .map_err(|e| GatewayError::Identity(format!("token exchange failed: {e}")))?;
    let status = response.status();
    let body: Bytes = response
        .body()
        .limit(1024 * 1024)
        .await
        .map_err(|e| GatewayError::Identity(format!("token exchange failed: {e}")))?;
    if status != StatusCode::OK {
        return Err(GatewayError::Identity(format!(
            "token endpoint answered {status}"
        )));
    }
    source.store(&body, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_url_parses_like_a_fresh_one_and_the_cache_stays_bounded() {
        let url = "http://127.0.0.1:9/v1/chat/completions?api-version=1";
        let first = upstream_target(url.to_string()).unwrap();
        let again = upstream_target(url.to_string()).unwrap();
        assert_eq!(first, again);
        assert_eq!(
            again.uri.path_and_query().unwrap(),
            "/v1/chat/completions?api-version=1"
        );
        for n in 0..CACHED_URIS + 10 {
            upstream_target(format!("http://127.0.0.1:9/v1/{n}")).unwrap();
        }
        assert!(URIS.with_borrow(|uris| uris.len()) <= CACHED_URIS);
        assert_eq!(upstream_target(url.to_string()).unwrap(), first);
    }

    /// The `Host` header awc writes when a request has none: the port only when not 80 or 443.
    #[test]
    fn the_host_header_is_awcs() {
        for (url, host) in [
            ("http://127.0.0.1:9/v1", "127.0.0.1:9"),
            ("https://api.openai.com/v1/chat", "api.openai.com"),
            ("http://example.com:80/", "example.com"),
            ("https://example.com:443/", "example.com"),
            ("https://example.com:8443/", "example.com:8443"),
            ("http://[::1]:8080/", "[::1]:8080"),
        ] {
            let target = upstream_target(url.to_string()).unwrap();
            assert_eq!(target.host.unwrap(), host, "{url}");
        }
    }

    #[test]
    fn an_unparsable_url_is_an_upstream_connect_error() {
        let err = upstream_target("http://bad host/".to_string()).unwrap_err();
        assert!(
            matches!(&err, GatewayError::UpstreamConnect(m) if m.starts_with("invalid upstream URL")),
            "{err:?}"
        );
    }
}
