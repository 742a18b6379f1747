//! Consumers and key-auth through the real binary: accepted and refused keys (Kong's 401
//! texts), hide_credentials, the consumer headers the provider sees, anonymous, the consumer in
//! the access log, keys from the environment, and the OpenAI SDK with a consumer key.

mod common;

use common::*;
use serde_json::Value;

fn deck_with_key_auth(mock_port: u16, key_auth: &str) -> String {
    consumer_deck(
        mock_port,
        &[("/chat", plugin("key-auth", key_auth))],
        r#"consumers:
  - username: alice
    custom_id: alice-7
    keyauth_credentials: [{key: '${{ env "DECK_ALICE_KEY" }}'}]
  - username: guest
    id: 11111111-2222-3333-4444-555555555555
"#,
    )
}

const ALICE_KEY: &str = "alice-secret-key-0123";

fn start(key_auth: &str) -> (Proc, Proc) {
    let mock = start_mock();
    let deck = write_deck(&deck_with_key_auth(mock.port, key_auth));
    let gw = start_gateway(&deck, &[("DECK_ALICE_KEY", ALICE_KEY)]);
    (mock, gw)
}

fn chat(gw: &Proc, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(
        gw.port,
        "POST",
        path,
        &all,
        chat_body("hello", false).to_string().as_bytes(),
    )
}

#[test]
fn keys_are_checked_and_the_provider_learns_the_consumer() {
    let (mock, gw) = start("{hide_credentials: true}");

    let none = chat(&gw, "/chat", &[]);
    assert_eq!(none.status, 401);
    assert_eq!(
        none.json(),
        serde_json::json!({"message": "No API key found in request"})
    );
    assert_eq!(none.header("www-authenticate"), Some("Key realm=\"kong\""));

    let wrong = chat(&gw, "/chat", &[("apikey", "alice-secret-key-0124")]);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json(), serde_json::json!({"message": "Unauthorized"}));
    assert_eq!(
        mock_stats(&mock)["requests"],
        0,
        "refused requests never reach the provider"
    );

    let ok = chat(
        &gw,
        "/chat",
        &[("apikey", ALICE_KEY), ("x-consumer-username", "mallory")],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = mock_last(&mock);
    let headers = &seen["headers"];
    assert!(
        headers.get("apikey").is_none(),
        "hide_credentials strips the key"
    );
    assert_eq!(
        headers["x-consumer-username"], "alice",
        "never the client's claim"
    );
    assert_eq!(headers["x-consumer-custom-id"], "alice-7");
    assert_eq!(headers["x-consumer-id"].as_str().unwrap().len(), 36);
    assert_eq!(headers["authorization"], "Bearer sk-gateway-key");

    let by_query = chat(&gw, &format!("/chat?apikey={ALICE_KEY}&x=1"), &[]);
    assert_eq!(by_query.status, 200);
    assert_eq!(
        mock_last(&mock)["query"],
        "x=1",
        "the query key is stripped too"
    );

    assert!(
        gw.wait_for_log("consumer=\"alice\"", std::time::Duration::from_secs(5))
            || gw.wait_for_log("consumer=alice", std::time::Duration::from_secs(5))
    );
    assert!(!gw.logs().contains(ALICE_KEY), "keys never reach the log");
}

#[test]
fn credentials_stay_without_hide_credentials_and_anonymous_serves_the_rest() {
    let (mock, gw) = start("{anonymous: guest}");
    assert_eq!(chat(&gw, "/chat", &[("apikey", ALICE_KEY)]).status, 200);
    assert_eq!(mock_last(&mock)["headers"]["apikey"], ALICE_KEY);

    let anonymous = chat(&gw, "/chat", &[("apikey", "not-a-key")]);
    assert_eq!(anonymous.status, 200);
    let headers = mock_last(&mock)["headers"].clone();
    assert_eq!(headers["x-consumer-username"], "guest");
    assert_eq!(
        headers["x-consumer-id"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(headers["x-anonymous-consumer"], "true");
}

#[test]
fn the_openai_sdk_authenticates_with_a_consumer_key() {
    let (mock, gw) = start("{}");
    let base = gw.url("/chat");
    let ok: Value =
        serde_json::from_str(&run_python("limits_client.py", &["call", &base, ALICE_KEY])).unwrap();
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["content"], "Mock openai reply to: hello there");
    assert_eq!(mock_last(&mock)["headers"]["x-consumer-username"], "alice");

    let refused: Value =
        serde_json::from_str(&run_python("limits_client.py", &["call", &base, "nope"])).unwrap();
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["body"], r#"{"message":"Unauthorized"}"#);
}
