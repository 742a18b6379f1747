//! The deployment files under deploy/ are checked with the tools at hand: the systemd unit with
//! `systemd-analyze verify` (when installed; a structural check otherwise), the Kubernetes
//! manifests parsed as YAML (and the decK file in their ConfigMap loaded by the gateway), the
//! Dockerfile's stages, user and inputs; and several instances start side by side from one
//! checkout (the demo mock only starts for the demo).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_json::Value;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn systemd_unit_verifies_and_reloads_with_sighup() {
    let unit = repo("deploy/ai-gateway.service");
    assert!(unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "{section}");
    }
    for line in unit
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        assert!(
            line.starts_with('[') || line.contains('='),
            "not a unit line: {line}"
        );
    }
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: structural check only");
        return;
    };
    // Verify the unit as installed, pointing at the binary this build produced.
    let dir = std::env::temp_dir().join(format!("aigw-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ai-gateway.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/ai-gateway", BIN)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("ai-gateway")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {text}");
}

fn which(name: &str) -> Result<String, ()> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map_err(|_| ())?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !path.is_empty() {
        Ok(path)
    } else {
        Err(())
    }
}

#[test]
fn kubernetes_manifests_parse_and_carry_a_valid_deck_file() {
    let text = repo("deploy/kubernetes/ai-gateway.yaml");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML document"))
        .collect();
    let of = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let gateway = of("Deployment", "ai-gateway");
    assert!(gateway["spec"]["replicas"].as_u64().unwrap() >= 2);
    let container = &gateway["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/status");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "status");
    assert!(container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "status" && p["containerPort"] == 8100));
    assert_eq!(
        gateway["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    of("Service", "ai-gateway");
    of("Deployment", "ai-gateway-redis");
    of("Service", "ai-gateway-redis");
    let secret = of("Secret", "ai-gateway-keys");
    let deck = of("ConfigMap", "ai-gateway-deck")["data"]["kong.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let env = |name: &str| secret["stringData"][name].as_str().map(str::to_string);
    let config = ai_gateway::config::load::load_deck(&deck, &env)
        .unwrap_or_else(|p| panic!("the ConfigMap's decK file is invalid: {p:?}"));
    let route = &config.routes[0];
    assert!(route.key_auth.is_some() && route.rate_limit.is_some());
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_its_inputs_exist() {
    let file = repo("deploy/Dockerfile");
    let stages = file.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    let user = file
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "non-root: {user}"
    );
    for line in file
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
            assert!(path.exists(), "COPY source {src} is missing");
        }
    }
    // The settings the image ships are valid.
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/settings.toml");
    let loaded = ai_gateway::config::settings::Settings::load(
        Some(&settings),
        std::iter::empty(),
        &Default::default(),
    )
    .expect("deploy/settings.toml loads");
    assert!(!loaded.mock.enabled);
    assert_eq!(loaded.status_listen.as_deref(), Some("0.0.0.0:8100"));
}

#[test]
fn instances_start_side_by_side_from_one_checkout() {
    let mock = start_mock();
    let deck = write_deck(&common::deck(&[(
        "chat",
        "/chat",
        &openai_route(mock.port, ""),
    )]));
    // The checkout's settings enable the demo mock on a fixed port: a gateway given its own
    // decK file must not start it, or the second instance could not start.
    let start = || {
        start_listening("gateway", |port| {
            Command::new(BIN)
                .args(["--config", deck.to_str().unwrap(), "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("AIGW_WORKERS", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
    };
    let (a, b) = (start(), start());
    for gw in [&a, &b] {
        assert_eq!(
            post_json(gw.port, "/chat", &chat_body("hi", false)).status,
            200
        );
        assert!(!gw.logs().contains("demo mock provider listening"));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(a.child.id() != b.child.id());
}
