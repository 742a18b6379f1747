//! `ai-gateway`: see `cli` for the commands.

fn main() -> std::process::ExitCode {
    ai_gateway::cli::run()
}
