//! Per-worker state, built on each worker's own thread: its provider actor, its limiter actor
//! and its route actors for the current config generation. The handler routes requests through it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};

use crate::actors::config::SharedSnapshot;
use crate::actors::limiter::Limiter;
use crate::actors::provider::{Pools, ProviderActor};
use crate::actors::route::RouteActor;
use crate::config::settings::Settings;
use crate::proxy::compile::Snapshot;

/// One worker's view of the current config generation: its own route actors.
pub(crate) struct WorkerRoutes {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) actors: Vec<Option<Addr<RouteActor>>>,
}

impl WorkerRoutes {
    fn start(snapshot: Arc<Snapshot>, pools: &Pools, limiter: &Limiter) -> WorkerRoutes {
        let actors = snapshot
            .routes
            .iter()
            .map(|r| {
                r.as_ref().map(|route| {
                    RouteActor::new(route.clone(), pools.clone(), limiter.clone()).start()
                })
            })
            .collect();
        WorkerRoutes { snapshot, actors }
    }
}

/// Per-worker state, built inside the server factory on the worker's own thread.
pub struct WorkerState {
    shared: SharedSnapshot,
    local: RefCell<Rc<WorkerRoutes>>,
    /// The worker's upstream pools, owned by its `ProviderActor` and lent to its route actors.
    pools: Pools,
    /// The pools' owner, running as long as the worker; its route actors call the pools
    /// directly.
    _provider: Addr<ProviderActor>,
    pub(crate) limiter: Limiter,
    pub(crate) client_timeout: Duration,
}

impl WorkerState {
    pub fn new(settings: &Settings, shared: SharedSnapshot) -> WorkerState {
        crate::logging::batch_this_thread();
        let provider = ProviderActor::new(
            settings.max_connections_per_worker,
            Duration::from_millis(settings.upstream_idle_timeout_ms),
            settings.stream_buffer,
        );
        let pools = provider.pools();
        let provider = provider.start();
        let limiter = Limiter::start();
        let local = WorkerRoutes::start(shared.load_full(), &pools, &limiter);
        WorkerState {
            shared,
            local: RefCell::new(Rc::new(local)),
            pools,
            _provider: provider,
            limiter,
            client_timeout: Duration::from_millis(settings.client_request_timeout_ms),
        }
    }

    /// This worker's routes for the current generation, starting new route actors the first
    /// time a worker sees a new generation. Old actors stop once their last request is done.
    pub(crate) fn routes(&self) -> Rc<WorkerRoutes> {
        let current = self.local.borrow().clone();
        let generation = self.shared.load().generation;
        if generation == current.snapshot.generation {
            return current;
        }
        let fresh = Rc::new(WorkerRoutes::start(
            self.shared.load_full(),
            &self.pools,
            &self.limiter,
        ));
        *self.local.borrow_mut() = fresh.clone();
        fresh
    }
}
