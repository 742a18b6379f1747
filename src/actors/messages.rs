//! Every message the actors exchange, in one place.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Message;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::config::problem::ConfigProblem;
use crate::error::GatewayError;
use crate::key_auth::Identity;
use crate::providers::{StreamTranslate, TokenSource, UpstreamRequest};
use crate::proxy::balancer::InFlightGuard;
use crate::proxy::compile::Timeouts;
use crate::proxy::request::ClientRequest;
use crate::proxy::upload::Upload;

/// What the access log line of a request says, gathered along the way.
#[derive(Clone)]
pub struct AccessInfo {
    /// Shared: every attempt, stream and log line of the request names it.
    pub request_id: Arc<str>,
    pub route: Arc<str>,
    pub provider: &'static str,
    pub model: String,
    pub started: Instant,
    /// ai-proxy-advanced: every attempt, as in the `x-kong-llm-tried` header.
    pub tried: Option<Arc<str>>,
    /// The consumer key-auth found (username, else custom_id).
    pub consumer: Option<Arc<str>>,
    /// Request fields the provider could not take, comma-separated (empty when none).
    pub dropped: String,
    /// The target that answered: its logging switches, prices and metrics labels.
    pub target: Option<Arc<crate::proxy::compile::CompiledRoute>>,
    /// The trace of the request's span, when tracing is on and the span is sampled.
    pub trace_id: Option<crate::telemetry::TraceId>,
}

/// A client request for one route: sent by the HTTP handler to that route's `RouteActor`.
/// The reply is the response to send, or the error to answer with.
#[derive(Message)]
#[rtype(result = "Result<ProxyReply, GatewayError>")]
pub struct Proxy {
    pub client: ClientRequest,
    pub body: RequestBody,
    pub request_id: Arc<str>,
    pub started: Instant,
    /// Who key-auth says is calling (empty without key-auth).
    pub identity: Identity,
    /// The client's address, for `identifier: ip` limits.
    pub peer: Option<IpAddr>,
    /// Resolves (with an error) when the client has gone away, so the upstream call stops.
    pub cancel: oneshot::Receiver<()>,
    /// The request's span, started by the handler (so its access line knows the trace even
    /// when the actor answers with an error); `None` when tracing is off.
    pub trace: Option<crate::telemetry::RequestSpan>,
}

/// A client's request body: read whole within the route's limit, or (multipart uploads)
/// streaming in as the provider takes it.
pub enum RequestBody {
    Full(Bytes),
    Upload(Upload),
}

impl RequestBody {
    /// The body as read; empty for an upload, which is never held (rate limits estimate
    /// tokens from what is here).
    pub fn read(&self) -> &[u8] {
        match self {
            RequestBody::Full(body) => body,
            RequestBody::Upload(_) => &[],
        }
    }
}

/// The body of an answer: complete, or a bounded channel of translated chunk batches fed by a
/// `StreamActor` (a full channel pauses the upstream read).
pub enum ReplyBody {
    /// A buffered answer, sent with its `content-length`.
    Full(Bytes),
    /// Chunk batches, one per upstream read; the channel closes when the stream ends.
    Stream(mpsc::Receiver<Bytes>),
}

/// A `RouteActor`'s answer to [`Proxy`]: the response the handler writes to the client, as
/// is (status, headers in order, body). Built once the provider answered, or at once when the
/// route answers itself.
pub struct ProxyReply {
    pub status: StatusCode,
    /// Every header of the response, the content type included.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: ReplyBody,
    /// For non-streamed answers the handler logs; a stream logs itself when it ends.
    pub access: Option<(AccessInfo, crate::providers::oai::Usage, Duration)>,
}

/// How a streamed answer is handled, if the upstream answers 200.
pub enum StreamPlan {
    /// Buffer the answer (non-streaming request).
    None,
    /// Translate every read with this state machine.
    Translate(Box<dyn StreamTranslate>),
    /// `preserve`: pass bytes through, streaming only if the upstream streams.
    PassthroughIfStreamed,
    /// OpenAI-API route types: a successful answer streams through untouched (SSE, audio,
    /// file downloads) unless it is JSON and `buffer_json` (read whole for its usage).
    Relay { buffer_json: bool },
}

/// One upstream call on a worker's upstream pools: a `RouteActor` hands it to its worker's
/// `Pools::exchange` directly (same thread, no mailbox).
pub struct Exchange {
    /// Final and signed, but without a fetched OAuth token (added from `token`).
    pub request: UpstreamRequest,
    /// The route's service timeouts (connect, read, write).
    pub timeouts: Timeouts,
    pub stream: StreamPlan,
    /// A bearer token to fetch (or take from its cache) before sending.
    pub token: Option<Arc<dyn TokenSource>>,
    /// Resolves when the client has gone away: the upstream call is dropped.
    pub cancel: oneshot::Receiver<()>,
    /// The stream's access-log line is written by its `StreamActor`.
    pub access: AccessInfo,
    /// Told how a streamed answer ended (balancer and metrics bookkeeping).
    pub on_end: Option<oneshot::Sender<StreamEnd>>,
    /// A streamed request body (multipart uploads), sent instead of `request.body`.
    pub upload: Option<Upload>,
}

/// How a streamed answer ended, sent by its `StreamActor` when it stops.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    /// Token counts the translator saw.
    pub usage: crate::providers::oai::Usage,
    /// The stream reached its end marker (not cut by the provider, an error or the client).
    pub completed: bool,
    /// The model the answer names, for traces (read only when tracing is on).
    pub model: Option<String>,
}

/// A `ProviderActor`'s answer to [`Exchange`]: the provider's response head and its body,
/// still in the provider's format when buffered (the `RouteActor` translates it), already
/// translated chunk batches when streamed (a `StreamActor` feeds the channel).
pub struct UpstreamReply {
    /// The provider's status, passed on to the client.
    pub status: StatusCode,
    /// The provider's content type (`preserve` routes answer with it).
    pub content_type: Option<HeaderValue>,
    /// Provider headers a client needs to behave well (`retry-after`, rate limits).
    pub relayed: Vec<(HeaderName, HeaderValue)>,
    pub body: ReplyBody,
    /// From sending the request to the provider's response head, for the access log.
    pub latency: Duration,
}

/// Which target of an ai-proxy-advanced route serves a realtime session: the balancer's pick
/// (weights, hashing, circuit breaker), counted in flight while the guard lives. Sent by the
/// handler to the route's `RouteActor`, which owns this worker's balancing state.
#[derive(Message)]
#[rtype(result = "Result<(usize, Option<InFlightGuard>), GatewayError>")]
pub struct PickTarget {
    /// The value of the balancer's `hash_on_header`, if the client sent it.
    pub hash_key: Option<Vec<u8>>,
    /// Targets this session already failed on.
    pub tried: Vec<usize>,
}

/// Re-read the decK file and swap it in if valid: sent by the SIGHUP listener (and tests) to
/// the `ConfigActor`.
#[derive(Message)]
#[rtype(result = "ReloadOutcome")]
pub struct Reload;

/// What a [`Reload`] did. Either way in-flight requests finish on the config they started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new file is in force for new requests as config `generation`.
    Applied { generation: u64, routes: usize },
    /// The file has problems (each with its field path); the previous config stays in force.
    Rejected { problems: Vec<ConfigProblem> },
}
