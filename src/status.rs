//! The optional status listener (Kong's `status_listen`): the process-wide counters at
//! `/status` and Prometheus metrics at `/metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::actors::config::SharedSnapshot;
use crate::actors::stream::OPEN_STREAMS;

/// Requests between arrival and the handler's answer, process-wide (a streamed answer is then
/// counted by `OPEN_STREAMS` until it ends).
pub static REQUESTS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The optional status listener (Kong's `status_listen`): `GET /status` with the counters that
/// show work in flight, so operators and tests can see that nothing leaks. It is a listener of
/// its own, so no decK route can ever collide with it.
pub fn start(listen: &str, shared: SharedSnapshot) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(shared.clone()))
            .route("/status", web::get().to(status))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .shutdown_timeout(1)
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "status listener");
    }
    Ok(server.run())
}

async fn status(shared: web::Data<SharedSnapshot>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "open_streams": OPEN_STREAMS.load(Ordering::Relaxed),
        "requests_in_flight": REQUESTS_IN_FLIGHT.load(Ordering::Relaxed),
        "config_generation": shared.load().generation,
        // Requests served without a limit check because the rate-limit store was unreachable.
        "rate_limit_failed_open": crate::actors::limiter::FAILED_OPEN.load(Ordering::Relaxed),
    }))
}

/// Prometheus text exposition (see `metrics`).
async fn metrics(shared: web::Data<SharedSnapshot>) -> HttpResponse {
    let body = crate::metrics::render(
        &shared.load(),
        OPEN_STREAMS.load(Ordering::Relaxed),
        REQUESTS_IN_FLIGHT.load(Ordering::Relaxed),
    );
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body)
}
