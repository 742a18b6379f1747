//! Server settings (listen address, workers, timeouts, logging, the demo mock), read with the
//! `config` crate.
//!
//! Precedence, lowest first: the built-in defaults ([`Settings::default`], the one place they
//! are written), the settings file, `AIGW_<KEY>` environment variables (`AIGW_LISTEN`,
//! `AIGW_MOCK__ENABLED` for nested keys; names are case-insensitive), then CLI flags. The
//! environment is passed in, so tests never mutate the process environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

/// Read when no `--settings` flag is given; it may be absent.
pub const DEFAULT_SETTINGS_PATH: &str = "settings/default.toml";
/// Environment variables `AIGW_<KEY>` override the file.
pub const ENV_PREFIX: &str = "AIGW";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Proxy listener, e.g. `127.0.0.1:8000`.
    pub listen: String,
    /// Path of the decK file.
    pub config: String,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    pub log_format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `ai_gateway=debug`.
    pub log_level: String,
    /// Upstream timeouts used when the route's service gives none.
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    /// Time a client has to send its request head and body (defends against slow-loris).
    pub client_request_timeout_ms: u64,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// Upstream connection pool cap per worker.
    pub max_connections_per_worker: usize,
    /// How long an idle upstream connection is kept for reuse. Below the providers' own
    /// keep-alive, so the gateway never reuses a connection the other side already closed.
    pub upstream_idle_timeout_ms: u64,
    /// Bounded channel capacity, in chunk batches, per stream: a slow client slows the
    /// upstream read instead of growing memory.
    pub stream_buffer: usize,
    /// Optional status listener (Kong's `status_listen`) serving `GET /status`; apart from the
    /// proxy listener so no decK route can collide with it. Unset = off.
    pub status_listen: Option<String>,
    pub mock: MockSettings,
    pub opentelemetry: OtelSettings,
}

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf); off while `traces_endpoint` is
/// unset. Field names follow Kong's `opentelemetry` plugin.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelSettings {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub traces_endpoint: Option<String>,
    /// Headers sent with every export (a collector's API key, say).
    pub headers: Option<BTreeMap<String, String>>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1; a client's `traceparent` decides for its own.
    pub sampling_rate: f64,
    /// Timeout of one export request.
    pub send_timeout_ms: u64,
}

/// Header values may be credentials: only their names are shown.
impl std::fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&String> = self.headers.iter().flat_map(BTreeMap::keys).collect();
        f.debug_struct("OtelSettings")
            .field("traces_endpoint", &self.traces_endpoint)
            .field("headers", &headers)
            .field("service_name", &self.service_name)
            .field("sampling_rate", &self.sampling_rate)
            .field("send_timeout_ms", &self.send_timeout_ms)
            .finish()
    }
}

/// The in-process demo mock provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockSettings {
    pub enabled: bool,
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Values from CLI flags, which win over everything else.
#[derive(Debug, Clone, Default)]
pub struct SettingsOverrides {
    pub listen: Option<String>,
    pub config: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    #[error("invalid settings: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {message}")]
    Value {
        key: &'static str,
        message: &'static str,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8000".to_string(),
            config: "settings/kong.yaml".to_string(),
            workers: 0,
            log_format: LogFormat::Human,
            log_level: "info".to_string(),
            // Kong's service defaults.
            connect_timeout_ms: 60_000,
            read_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            client_request_timeout_ms: 60_000,
            shutdown_grace_ms: 30_000,
            max_connections_per_worker: 4096,
            upstream_idle_timeout_ms: 4_000,
            stream_buffer: 16,
            status_listen: None,
            mock: MockSettings {
                enabled: false,
                listen: "127.0.0.1:18181".to_string(),
            },
            opentelemetry: OtelSettings {
                traces_endpoint: None,
                headers: None,
                service_name: "ai-gateway".to_string(),
                sampling_rate: 1.0,
                send_timeout_ms: 10_000,
            },
        }
    }
}

impl Settings {
    /// Built-in defaults < `file` < `AIGW_*` variables in `env` < `overrides`. Without `file`,
    /// [`DEFAULT_SETTINGS_PATH`] is read if it exists; an explicit file must exist.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &SettingsOverrides,
    ) -> Result<Settings, SettingsError> {
        match file {
            Some(path) if !path.is_file() => Err(SettingsError::MissingFile(path.to_path_buf())),
            Some(path) => Self::build(path, true, env, overrides),
            None => Self::build(Path::new(DEFAULT_SETTINGS_PATH), false, env, overrides),
        }
    }

    fn build(
        file: &Path,
        required: bool,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &SettingsOverrides,
    ) -> Result<Settings, SettingsError> {
        let mut builder = Config::builder()
            .add_source(Config::try_from(&Settings::default())?)
            .add_source(File::from(file).format(FileFormat::Toml).required(required))
            .add_source(
                Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(env.into_iter().collect())),
            );
        for (key, value) in [("listen", &overrides.listen), ("config", &overrides.config)] {
            if let Some(value) = value {
                builder = builder.set_override(key, value.as_str())?;
            }
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    /// Values that parse but cannot work: a zero timeout fails every request, a zero-capacity
    /// channel cannot carry a stream.
    fn check(&self) -> Result<(), SettingsError> {
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("client_request_timeout_ms", self.client_request_timeout_ms),
            (
                "max_connections_per_worker",
                self.max_connections_per_worker as u64,
            ),
            ("stream_buffer", self.stream_buffer as u64),
            ("upstream_idle_timeout_ms", self.upstream_idle_timeout_ms),
            (
                "opentelemetry.send_timeout_ms",
                self.opentelemetry.send_timeout_ms,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(SettingsError::Value {
                key,
                message: "must be greater than 0",
            });
        }
        self.opentelemetry.check()
    }
}

impl OtelSettings {
    fn check(&self) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.sampling_rate) {
            return Err(SettingsError::Value {
                key: "opentelemetry.sampling_rate",
                message: "must be between 0 and 1",
            });
        }
        let endpoint = self.traces_endpoint.as_deref().map(url::Url::parse);
        if endpoint.is_some_and(|u| !u.is_ok_and(|u| matches!(u.scheme(), "http" | "https"))) {
            return Err(SettingsError::Value {
                key: "opentelemetry.traces_endpoint",
                message: "must be an http:// or https:// URL",
            });
        }
        let headers = self.headers.iter().flatten();
        if headers.into_iter().any(|(name, value)| {
            actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || actix_web::http::header::HeaderValue::from_str(value).is_err()
        }) {
            return Err(SettingsError::Value {
                key: "opentelemetry.headers",
                message: "must be valid HTTP header names and values",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A settings file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "aigw-settings-{}-{}.toml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).expect("temp dir is writable");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_overrides() -> SettingsOverrides {
        SettingsOverrides::default()
    }

    fn absent() -> PathBuf {
        std::env::temp_dir().join("aigw-settings-that-does-not-exist.toml")
    }

    #[test]
    fn built_in_defaults_apply_without_a_file() {
        let s = Settings::build(&absent(), false, env(&[]), &no_overrides()).expect("defaults");
        assert_eq!(s.listen, "127.0.0.1:8000");
        assert_eq!(s.config, "settings/kong.yaml");
        assert_eq!(s.workers, 0);
        assert_eq!(s.log_format, LogFormat::Human);
        assert_eq!(s.log_level, "info");
        assert_eq!(
            (s.connect_timeout_ms, s.read_timeout_ms, s.write_timeout_ms),
            (60_000, 60_000, 60_000)
        );
        assert_eq!(s.client_request_timeout_ms, 60_000);
        assert_eq!(s.shutdown_grace_ms, 30_000);
        assert_eq!(s.max_connections_per_worker, 4096);
        assert_eq!(s.stream_buffer, 16);
        assert_eq!(s.status_listen, None);
        assert!(!s.mock.enabled);
        assert_eq!(s.mock.listen, "127.0.0.1:18181");
    }

    #[test]
    fn file_overrides_defaults_and_keeps_the_rest() {
        let file =
            TempFile::new("listen = \"0.0.0.0:9000\"\nworkers = 2\n[mock]\nenabled = true\n");
        let s = Settings::load(Some(&file.0), env(&[]), &no_overrides()).expect("valid file");
        assert_eq!(s.listen, "0.0.0.0:9000");
        assert_eq!(s.workers, 2);
        assert!(s.mock.enabled);
        assert_eq!(s.mock.listen, "127.0.0.1:18181");
        assert_eq!(s.log_level, "info");
    }

    #[test]
    fn env_overrides_file_and_override_beats_env() {
        let file = TempFile::new(
            "listen = \"0.0.0.0:9000\"\nconfig = \"from-file.yaml\"\nworkers = 2\nlog_format = \"human\"\n",
        );
        let vars = env(&[
            ("AIGW_LISTEN", "127.0.0.1:7000"),
            ("AIGW_CONFIG", "from-env.yaml"),
            ("aigw_workers", "8"),
            ("AIGW_LOG_FORMAT", "json"),
            ("AIGW_MOCK__ENABLED", "true"),
            ("AIGW_STREAM_BUFFER", "32"),
            ("AIGW_STATUS_LISTEN", "127.0.0.1:8100"),
            ("UNRELATED", "x"),
        ]);
        let overrides = SettingsOverrides {
            listen: Some("127.0.0.1:1234".to_string()),
            config: None,
        };
        let s = Settings::load(Some(&file.0), vars, &overrides).expect("valid");
        assert_eq!(s.listen, "127.0.0.1:1234");
        assert_eq!(s.config, "from-env.yaml");
        assert_eq!(s.workers, 8);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(s.mock.enabled);
        assert_eq!(s.stream_buffer, 32);
        assert_eq!(s.status_listen.as_deref(), Some("127.0.0.1:8100"));
    }

    #[test]
    fn config_override_wins() {
        let overrides = SettingsOverrides {
            listen: None,
            config: Some("cli.yaml".to_string()),
        };
        let s = Settings::build(
            &absent(),
            false,
            env(&[("AIGW_CONFIG", "env.yaml")]),
            &overrides,
        )
        .expect("valid");
        assert_eq!(s.config, "cli.yaml");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Settings::load(Some(&absent()), env(&[]), &no_overrides()).unwrap_err();
        assert!(matches!(err, SettingsError::MissingFile(_)), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let file = TempFile::new("lissten = \"x\"\n");
        let err = Settings::load(Some(&file.0), env(&[]), &no_overrides()).unwrap_err();
        assert!(err.to_string().contains("lissten"), "{err}");

        let err = Settings::build(
            &absent(),
            false,
            env(&[("AIGW_LOG_FORMAT", "xml")]),
            &no_overrides(),
        )
        .unwrap_err();
        assert!(matches!(err, SettingsError::Invalid(_)), "{err}");

        let err = Settings::build(
            &absent(),
            false,
            env(&[("AIGW_WORKERS", "many")]),
            &no_overrides(),
        )
        .unwrap_err();
        assert!(matches!(err, SettingsError::Invalid(_)), "{err}");
    }

    #[test]
    fn zero_capacity_or_timeout_is_refused() {
        let err = Settings::build(
            &absent(),
            false,
            env(&[("AIGW_STREAM_BUFFER", "0")]),
            &no_overrides(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting `stream_buffer`: must be greater than 0"
        );
    }

    #[test]
    fn tracing_is_off_by_default_and_configured_from_the_environment() {
        let off = Settings::build(&absent(), false, env(&[]), &no_overrides()).unwrap();
        assert_eq!(off.opentelemetry.traces_endpoint, None);
        let on = Settings::build(
            &absent(),
            false,
            env(&[
                (
                    "AIGW_OPENTELEMETRY__TRACES_ENDPOINT",
                    "http://127.0.0.1:4318/v1/traces",
                ),
                ("AIGW_OPENTELEMETRY__SAMPLING_RATE", "0.25"),
            ]),
            &no_overrides(),
        )
        .unwrap();
        assert_eq!(
            on.opentelemetry.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(on.opentelemetry.sampling_rate, 0.25);
    }

    #[test]
    fn bad_tracing_settings_are_refused_by_name() {
        for (key, value, message) in [
            (
                "AIGW_OPENTELEMETRY__SAMPLING_RATE",
                "1.5",
                "invalid setting `opentelemetry.sampling_rate`: must be between 0 and 1",
            ),
            (
                "AIGW_OPENTELEMETRY__TRACES_ENDPOINT",
                "grpc://collector:4317",
                "invalid setting `opentelemetry.traces_endpoint`: must be an http:// or https:// URL",
            ),
            (
                "AIGW_OPENTELEMETRY__SEND_TIMEOUT_MS",
                "0",
                "invalid setting `opentelemetry.send_timeout_ms`: must be greater than 0",
            ),
        ] {
            let err = Settings::build(&absent(), false, env(&[(key, value)]), &no_overrides())
                .unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn collector_header_values_are_not_in_debug_output() {
        let mut s = Settings::default().opentelemetry;
        s.headers = Some(BTreeMap::from([(
            "x-api-key".into(),
            "secret-value".into(),
        )]));
        let shown = format!("{s:?}");
        assert!(
            shown.contains("x-api-key") && !shown.contains("secret-value"),
            "{shown}"
        );
    }

    #[test]
    fn shipped_default_file_documents_every_setting() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/settings/default.toml"
        ));
        // Read the file alone (no built-in defaults): with `deny_unknown_fields` and no serde
        // defaults this fails on any missing or misspelt key.
        let s: Settings = Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .expect("settings/default.toml lists every setting");
        assert!(s.mock.enabled, "the demo runs against the bundled mock");
        assert_eq!(s.listen, Settings::default().listen);
        assert_eq!(s.mock.listen, Settings::default().mock.listen);
    }
}
