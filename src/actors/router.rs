//! RouterActor: owns the model groups and publishes the [`RoutingTable`] HTTP workers pick from.
//! Deployment choice itself is a pure function of the table (`router/`); the actor is the table's only
//! writer, so what routing sees changes in one place.

use super::Deployment;
use crate::router::table::RoutingTable;
use actix::prelude::*;
use arc_swap::ArcSwap;
use std::sync::Arc;

// ---- the actor ------------------------------------------------------------------------------------------

pub struct RouterActor {
    deployments: Arc<Vec<Arc<Deployment>>>,
    published: Arc<ArcSwap<RoutingTable>>,
}

impl RouterActor {
    /// `published` is read by the HTTP workers; the actor stores every new table there.
    pub fn new(
        deployments: Arc<Vec<Arc<Deployment>>>,
        published: Arc<ArcSwap<RoutingTable>>,
    ) -> Self {
        RouterActor {
            deployments,
            published,
        }
    }

    fn publish(&self) {
        self.published
            .store(Arc::new(RoutingTable::new(&self.deployments)));
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.publish();
    }
}
