//! The command line: serve (default), `validate`, `mock-provider`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{self, StartError};
use crate::config::load::{load_deck_file, process_env};
use crate::config::problem::ConfigProblem;
use crate::config::settings::{Settings, SettingsOverrides};
use crate::{logging, mock, signals};

const DEFAULT_SETTINGS: &str = "settings/default.toml";

#[derive(Debug, Parser)]
#[command(
    name = "ai-gateway",
    version,
    about = "An OpenAI-compatible AI gateway configured with Kong decK files"
)]
pub struct Cli {
    /// Kong decK declarative file (YAML or JSON).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Proxy listener, e.g. 127.0.0.1:8000.
    #[arg(long)]
    pub listen: Option<String>,
    /// Server settings file (TOML).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a decK file: exit 0 with a summary, or exit 1 listing every problem.
    Validate,
    /// Run the bundled mock LLM provider (every supported wire format).
    MockProvider {
        #[arg(long, default_value = "127.0.0.1:18181")]
        listen: String,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate) => validate(cli.config.as_deref()),
        Some(Command::MockProvider { listen, workers }) => mock_provider(&listen, workers),
        None => serve(cli),
    }
}

fn print_problems(problems: &[ConfigProblem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

fn validate(config: Option<&Path>) -> ExitCode {
    let Some(path) = config else {
        eprintln!("validate needs --config PATH");
        return ExitCode::from(2);
    };
    match load_deck_file(path, &process_env) {
        Ok(cfg) => {
            let ai = cfg.routes.iter().filter(|r| r.plugin.is_some()).count();
            println!(
                "{}: valid ({} routes, {} with ai-proxy)",
                path.display(),
                cfg.routes.len(),
                ai
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print_problems(&problems);
            eprintln!("{}: {} problem(s)", path.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

fn mock_provider(listen: &str, workers: usize) -> ExitCode {
    logging::init(crate::config::settings::LogFormat::Human, "info");
    let result = actix_rt::System::new().block_on(async {
        let (server, addr) = mock::start(listen, workers)?;
        tracing::info!(%addr, "mock provider listening");
        server.await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock provider failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: Cli) -> ExitCode {
    // The demo mock belongs to the demo (the settings' own decK file): a gateway serving a
    // user's file never binds the mock's fixed port, so instances start side by side.
    let demo = cli.config.is_none() && std::env::var_os("AIGW_CONFIG").is_none();
    let explicit = cli.settings.is_some();
    let settings_path = cli
        .settings
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SETTINGS));
    let overrides = SettingsOverrides {
        listen: cli.listen,
        config: cli.config.map(|p| p.display().to_string()),
    };
    let file = (explicit || settings_path.exists()).then_some(settings_path.as_path());
    let settings = match Settings::load(file, std::env::vars(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("settings: {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(settings.log_format, &settings.log_level);
    if let Err(e) = crate::telemetry::init(&settings.opentelemetry) {
        tracing::error!(error = %e, "cannot start the trace exporter");
        return ExitCode::FAILURE;
    }
    let result = actix_rt::System::new().block_on(async move {
        if settings.mock.enabled && demo {
            let (mock_server, addr) =
                mock::start(&settings.mock.listen, 1).map_err(StartError::Io)?;
            tracing::info!(%addr, "demo mock provider listening (in-process)");
            actix_rt::spawn(mock_server);
        }
        let hangups = signals::hangups().map_err(StartError::Io)?;
        let gateway = app::start(settings)?;
        signals::spawn_reload_listener(hangups, gateway.config.clone()).map_err(StartError::Io)?;
        for addr in &gateway.addrs {
            tracing::info!(%addr, "ai-gateway listening");
        }
        gateway.server.await.map_err(StartError::Io)
    });
    crate::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(problems)) => {
            print_problems(&problems);
            tracing::error!(count = problems.len(), "invalid decK file; not starting");
            ExitCode::FAILURE
        }
        Err(StartError::Io(e)) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
