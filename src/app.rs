//! The HTTP server: start-up of the config actor and of the workers (see [`crate::worker`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use arc_swap::ArcSwap;

use crate::actors::config::{build_snapshot, ConfigActor, SharedSnapshot};
use crate::config::problem::ConfigProblem;
use crate::config::settings::Settings;
use crate::worker::WorkerState;

/// A running gateway: its server and the config actor (tests send `Reload` to it directly).
pub struct Gateway {
    pub server: Server,
    pub addrs: Vec<SocketAddr>,
    pub config: Addr<ConfigActor>,
}

/// Loads the decK file and starts the proxy listener and the config actor on the current
/// actix system. An invalid initial config is returned as its problems.
pub fn start(settings: Settings) -> Result<Gateway, StartError> {
    let settings = Arc::new(settings);
    let path = PathBuf::from(&settings.config);
    let snapshot = build_snapshot(&path, &settings, 1).map_err(StartError::Config)?;
    let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let config = ConfigActor::new(path, settings.clone(), shared.clone()).start();
    let workers = if settings.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        settings.workers
    };
    let factory_settings = settings.clone();
    let factory_shared = shared.clone();
    let server = HttpServer::new(move || {
        let state = WorkerState::new(&factory_settings, factory_shared.clone());
        App::new()
            .app_data(web::Data::new(state))
            .default_service(web::to(crate::handler::proxy))
    })
    .workers(workers)
    // Nagle would hold a stream's first chunk back ~40 ms waiting for the client's ACK.
    .tcp_nodelay(true)
    // A client that closes its side is gone (as nginx treats it): without this, actix keeps
    // waiting on a request or a quiet stream whose client left, and the upstream call with it.
    .h1_allow_half_closed(false)
    .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
    .shutdown_timeout(settings.shutdown_grace_ms.div_ceil(1000))
    .bind(&settings.listen)
    .map_err(StartError::Io)?;
    let addrs = server.addrs();
    let server = server.run();
    if let Some(listen) = &settings.status_listen {
        actix_rt::spawn(crate::status::start(listen, shared.clone()).map_err(StartError::Io)?);
    }
    Ok(Gateway {
        server,
        addrs,
        config,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid config")]
    Config(Vec<ConfigProblem>),
    #[error("{0}")]
    Io(std::io::Error),
}
