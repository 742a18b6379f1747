//! `ai-gateway validate`: a summary and exit 0 for a valid file; every problem with its field
//! path and exit 1 otherwise; secrets never printed.

mod common;

use std::process::Command;

use common::*;

fn validate(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["validate", "--config", path.to_str().unwrap()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn valid_file_exits_zero_with_a_summary() {
    let path = write_deck(&deck(&[(
        "chat",
        "/chat",
        "route_type: llm/v1/chat\nauth: {header_name: Authorization, header_value: \"Bearer ${{ env \\\"DECK_TEST_KEY\\\" }}\"}\nmodel: {provider: openai, name: gpt-4o}",
    )]));
    let (code, stdout, stderr) = validate(&path, &[("DECK_TEST_KEY", "sk-very-secret-value")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("valid"));
    assert!(!stdout.contains("sk-very-secret-value") && !stderr.contains("sk-very-secret-value"));
}

#[test]
fn invalid_file_lists_every_problem_with_its_path() {
    let path = write_deck(&deck(&[
        (
            "one",
            "/one",
            "route_type: llm/v1/chat\nmodel: {provider: openai, name: gpt-4o, options: {temperature: 9}}",
        ),
        (
            "two",
            "/two",
            "route_type: llm/v1/chat\nauth: {header_name: Authorization}\nmodel: {provider: anthropic, name: claude}",
        ),
    ]));
    let (code, stdout, stderr) = validate(&path, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("services[0].routes[0].plugins[0].config.model.options.temperature"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "all or none of these fields must be set: 'auth.header_name', 'auth.header_value'"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("must set 'model.options.anthropic_version' for anthropic provider"),
        "{stderr}"
    );
}

#[test]
fn missing_env_variable_is_named() {
    let path = write_deck(&deck(&[(
        "chat",
        "/chat",
        "route_type: llm/v1/chat\nauth: {header_name: Authorization, header_value: \"Bearer ${{ env \\\"DECK_NOT_SET_ANYWHERE\\\" }}\"}\nmodel: {provider: openai, name: gpt-4o}",
    )]));
    let (code, _, stderr) = validate(&path, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("DECK_NOT_SET_ANYWHERE"), "{stderr}");
}
