//! `ai-gateway`: see `cli` for the commands.

// mimalloc rather than glibc's allocator: malloc/free (with consolidation and page faults from
// trimming) were ~17 % of the gateway's CPU per proxied request under load (perf, ISSUE 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ai_gateway::cli::run()
}
