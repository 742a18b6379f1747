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
use crate::proxy::compile::Timeouts;
use crate::proxy::request::ClientRequest;

/// What the access log line of a request says, gathered along the way.
#[derive(Clone)]
pub struct AccessInfo {
    pub request_id: String,
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
}

/// A client request for one route: sent by the HTTP handler to that route's `RouteActor`.
/// The reply is the response to send, or the error to answer with.
#[derive(Message)]
#[rtype(result = "Result<ProxyReply, GatewayError>")]
pub struct Proxy {
    pub client: ClientRequest,
    pub body: Bytes,
    pub request_id: String,
    pub started: Instant,
    /// Who key-auth says is calling (empty without key-auth).
    pub identity: Identity,
    /// The client's address, for `identifier: ip` limits.
    pub peer: Option<IpAddr>,
    /// Resolves (with an error) when the client has gone away, so the upstream call stops.
    pub cancel: oneshot::Receiver<()>,
}

/// The body of an answer: complete, or a bounded channel of translated chunk batches fed by a
/// `StreamActor` (a full channel pauses the upstream read).
pub enum ReplyBody {
    Full(Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

pub struct ProxyReply {
    pub status: StatusCode,
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
}

/// One upstream call: sent by a `RouteActor` to its worker's `ProviderActor`.
#[derive(Message)]
#[rtype(result = "Result<UpstreamReply, GatewayError>")]
pub struct Exchange {
    pub request: UpstreamRequest,
    pub timeouts: Timeouts,
    pub stream: StreamPlan,
    pub token: Option<Arc<dyn TokenSource>>,
    pub cancel: oneshot::Receiver<()>,
    /// The stream's access-log line is written by its `StreamActor`.
    pub access: AccessInfo,
    /// Told how a streamed answer ended (balancer and metrics bookkeeping).
    pub on_end: Option<oneshot::Sender<StreamEnd>>,
}

/// How a streamed answer ended, sent by its `StreamActor` when it stops.
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd {
    pub usage: crate::providers::oai::Usage,
    /// From the request's start to the first chunk for the client.
    pub first_chunk: Option<Duration>,
    pub completed: bool,
}

pub struct UpstreamReply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// Provider headers a client needs to behave well (`retry-after`, rate limits).
    pub relayed: Vec<(HeaderName, HeaderValue)>,
    pub body: ReplyBody,
    pub latency: Duration,
}

/// Re-read the decK file and swap it in if valid: sent by the SIGHUP listener (and tests) to
/// the `ConfigActor`.
#[derive(Message)]
#[rtype(result = "ReloadOutcome")]
pub struct Reload;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied { generation: u64, routes: usize },
    Rejected { problems: Vec<ConfigProblem> },
}
