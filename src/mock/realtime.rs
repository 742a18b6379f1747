//! The Realtime API's WebSocket (`GET /v1/realtime?model=...`, Azure's `/openai/realtime`):
//! `session.created` on connect, then every text event is answered with `mock.echo` carrying
//! it back (and `response.create` with a short response ending in `response.done` with usage),
//! binary frames are echoed as they are, and a close frame is answered with the same code.
//! Sessions count as streams in `/__mock/stats`; one that ends without a close frame counts as
//! cancelled.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{fault, log::MockState, openai::OPENAI, state_of};

pub(crate) fn serve(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    state_of(&req).record(&req, b"", None);
    let header = req
        .headers()
        .get(fault::HEADER)
        .and_then(|v| v.to_str().ok());
    let faults = fault::Faults::parse_over(&state_of(&req).default_faults(), header, "");
    if faults.status.is_some() {
        return fault::error_response(&OPENAI, &faults);
    }
    let model = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "model" || k == "deployment")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let (response, mut session, mut messages) = match actix_ws::handle(&req, payload) {
        Ok(parts) => parts,
        Err(e) => return e.error_response(),
    };
    let state: Option<web::Data<MockState>> = req.app_data::<web::Data<MockState>>().cloned();
    if let Some(state) = &state {
        state.stream_opened();
    }
    actix_rt::spawn(async move {
        let created = json!({"type": "session.created", "event_id": "event_mock_0",
                             "session": {"id": "sess_mock_1", "object": "realtime.session", "model": model}});
        let mut closed_cleanly = session.text(created.to_string()).await.is_err();
        while let Some(Ok(message)) = messages.next().await {
            let sent = match message {
                actix_ws::Message::Text(text) => answer(&mut session, &text).await,
                actix_ws::Message::Binary(bytes) => session.binary(bytes).await,
                actix_ws::Message::Ping(bytes) => session.pong(&bytes).await,
                actix_ws::Message::Close(reason) => {
                    closed_cleanly = true;
                    let _ = session.clone().close(reason).await;
                    break;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        if let Some(state) = state {
            state.stream_closed(!closed_cleanly);
        }
    });
    response
}

async fn answer(session: &mut actix_ws::Session, text: &str) -> Result<(), actix_ws::Closed> {
    let event: Value = serde_json::from_str(text).unwrap_or(Value::String(text.to_string()));
    session
        .text(json!({"type": "mock.echo", "received": event}).to_string())
        .await?;
    if event["type"] == "response.create" {
        for reply in [
            json!({"type": "response.created", "response": {"id": "resp_rt_mock_1", "status": "in_progress"}}),
            json!({"type": "response.text.delta", "response_id": "resp_rt_mock_1", "delta": "Mock openai realtime reply"}),
            json!({"type": "response.done", "response": {"id": "resp_rt_mock_1", "status": "completed",
                   "usage": {"total_tokens": 9, "input_tokens": 4, "output_tokens": 5}}}),
        ] {
            session.text(reply.to_string()).await?;
        }
    }
    Ok(())
}
