//! SIGHUP -> `Reload`. (SIGTERM/SIGINT are handled by actix-web's server: stop accepting,
//! let in-flight requests and streams finish within the grace period, exit.)

use actix::Addr;

use crate::actors::config::ConfigActor;
use crate::actors::messages::Reload;

/// Takes SIGHUP over from its default action (exit). Called before the listener binds, so a
/// reload sent as soon as the port answers cannot kill the process.
pub fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Listens for SIGHUP for the life of the process and asks the config actor to reload.
pub fn spawn_reload_listener(
    mut hangups: tokio::signal::unix::Signal,
    config: Addr<ConfigActor>,
) -> std::io::Result<()> {
    actix_rt::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the decK file");
            if let Err(e) = config.send(Reload).await {
                tracing::error!(error = %e, "config actor unavailable; reload skipped");
            }
        }
    });
    Ok(())
}
