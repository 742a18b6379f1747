//! `ConfigActor`: owns the decK file path and the current config generation. On `Reload` it
//! parses, validates and compiles the file, and swaps it in only if all of that succeeded.
//! Workers notice the new generation on their next request and start fresh route actors;
//! requests already accepted keep the generation they started with.

use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Context, Handler, MessageResult};
use arc_swap::ArcSwap;

use super::messages::{Reload, ReloadOutcome};
use crate::config::load::{load_deck_file, process_env};
use crate::config::problem::ConfigProblem;
use crate::config::settings::Settings;
use crate::proxy::compile::{compile, Snapshot};

/// The current generation, shared by the config actor (writer) and every worker (readers).
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub struct ConfigActor {
    path: PathBuf,
    settings: Arc<Settings>,
    shared: SharedSnapshot,
}

impl ConfigActor {
    pub fn new(path: PathBuf, settings: Arc<Settings>, shared: SharedSnapshot) -> Self {
        ConfigActor {
            path,
            settings,
            shared,
        }
    }
}

/// Loads and compiles a decK file into a generation, or every problem found.
pub fn build_snapshot(
    path: &std::path::Path,
    settings: &Settings,
    generation: u64,
) -> Result<Snapshot, Vec<ConfigProblem>> {
    let config = load_deck_file(path, &process_env)?;
    compile(&config, settings, generation)
}

impl Actor for ConfigActor {
    type Context = Context<Self>;
}

impl Handler<Reload> for ConfigActor {
    // Synchronous on purpose: one reload completes before the next is looked at.
    type Result = MessageResult<Reload>;

    fn handle(&mut self, _msg: Reload, _ctx: &mut Context<Self>) -> Self::Result {
        let generation = self.shared.load().generation + 1;
        let built = crate::panic_guard::catch("config reload", || {
            build_snapshot(&self.path, &self.settings, generation)
        });
        let built = built.unwrap_or_else(|_| {
            Err(vec![ConfigProblem::new(
                "",
                "the gateway failed while loading this file (a bug; see the error logged above)",
            )])
        });
        let outcome = match built {
            Ok(snapshot) => {
                let routes = snapshot.routes.len();
                self.shared.store(Arc::new(snapshot));
                tracing::info!(generation, routes, path = %self.path.display(), "config reloaded");
                ReloadOutcome::Applied { generation, routes }
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!(problem = %p, "reload rejected");
                }
                tracing::error!(
                    count = problems.len(),
                    path = %self.path.display(),
                    "reload rejected; the previous config stays in force"
                );
                ReloadOutcome::Rejected { problems }
            }
        };
        MessageResult(outcome)
    }
}
