//! RouterActor: owns the model groups and publishes the [`RoutingTable`] HTTP workers pick from.
//! Deployment choice itself is a pure function of the table and the deployments' live state (`router/`);
//! the actor is the table's only writer, so what routing sees changes in one place.
//!
//! The request path does not message the actor: a worker reads the published table and picks in a few
//! hundred nanoseconds. [`Route`] asks the actor for the same decision, for callers outside the HTTP
//! workers and for the benchmark that compares the two (`benches/routing.rs`).

use super::Deployment;
use crate::config::RoutingStrategy;
use crate::router::table::{Pick, RoutingTable};
use crate::store::now_ms;
use actix::prelude::*;
use arc_swap::ArcSwap;
use std::sync::Arc;

// ---- messages -------------------------------------------------------------------------------------------

/// Which deployment of `model` would serve a request of about `tokens` tokens now.
#[derive(Message)]
#[rtype(result = "Option<Arc<Deployment>>")]
pub struct Route {
    pub model: String,
    pub tokens: u64,
}

// ---- the actor ------------------------------------------------------------------------------------------

pub struct RouterActor {
    deployments: Arc<Vec<Arc<Deployment>>>,
    strategy: RoutingStrategy,
    published: Arc<ArcSwap<RoutingTable>>,
}

impl RouterActor {
    /// `published` is read by the HTTP workers; the actor stores every new table there.
    pub fn new(
        deployments: Arc<Vec<Arc<Deployment>>>,
        strategy: RoutingStrategy,
        published: Arc<ArcSwap<RoutingTable>>,
    ) -> Self {
        RouterActor {
            deployments,
            strategy,
            published,
        }
    }

    fn publish(&self) {
        self.published.store(Arc::new(RoutingTable::new(
            &self.deployments,
            self.strategy,
        )));
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.publish();
    }
}

impl Handler<Route> for RouterActor {
    type Result = Option<Arc<Deployment>>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let r = rand::random::<f64>();
        match self
            .published
            .load()
            .pick(&msg.model, now_ms(), r, msg.tokens)?
        {
            Pick::Chosen(d, _) => Some(d),
            Pick::Cooling { .. } | Pick::NoCapacity => None,
        }
    }
}
