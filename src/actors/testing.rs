//! Test support for actors: an actor that keeps every message of one type it receives, so a test can
//! check what another actor sent out.

use actix::prelude::*;
use std::sync::{Arc, Mutex};

/// Keeps every `M` it receives, in order.
pub struct Collect<M> {
    got: Arc<Mutex<Vec<M>>>,
}

impl<M: Unpin + 'static> Collect<M> {
    /// Starts one; the returned list fills as messages arrive.
    pub fn start() -> (Addr<Collect<M>>, Arc<Mutex<Vec<M>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let addr = Collect { got: got.clone() }.start();
        (addr, got)
    }
}

impl<M: Unpin + 'static> Actor for Collect<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Unpin + 'static> Handler<M> for Collect<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        self.got.lock().unwrap().push(msg);
    }
}

/// Lets every message already sent to the actors of this thread be handled (each actor runs on this
/// thread's arbiter, so a few turns of the scheduler deliver them; no wall-clock wait).
pub async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}
