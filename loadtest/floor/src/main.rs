//! A bare actix-web + awc pass-through: POST body in, the same body to `UPSTREAM`, the answer's
//! status, content type and body back. No routing, translation, actors or logging: the least
//! any gateway built on this stack can cost per request.
//! Env: FLOOR_ADDR (listen), FLOOR_UPSTREAM (full URL).
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().limit(4096))
        .timeout(Duration::from_secs(30))
        .finish();
}

async fn pass(body: web::Bytes, upstream: web::Data<String>) -> HttpResponse {
    let client = CLIENT.with(Clone::clone);
    let sent = client
        .post(upstream.as_str())
        .insert_header(("content-type", "application/json"))
        .insert_header(("authorization", "Bearer sk-bench"))
        .send_body(body)
        .await;
    let mut answer = match sent {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    match answer.body().limit(1 << 20).await {
        Ok(bytes) => HttpResponse::build(answer.status())
            .content_type("application/json")
            .body(bytes),
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::var("FLOOR_ADDR").unwrap_or_else(|_| "127.0.0.1:18020".into());
    let upstream = std::env::var("FLOOR_UPSTREAM")
        .unwrap_or_else(|_| "http://127.0.0.1:18000/v1/chat/completions".into());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    actix_rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(upstream.clone()))
                .default_service(web::to(pass))
        })
        .workers(workers)
        .tcp_nodelay(true)
        .bind(addr)?
        .run()
        .await
    })
}
