//! SharedStateActor: with `general_settings.redis_url`, shares deployment cooldowns across replicas through
//! Redis, off the request path. A replica that cools a deployment down writes `llm:cooldown:<model_id>` (the
//! end time in ms, expiring with it); every [`SYNC_INTERVAL`] each replica reads all of them in one `MGET`
//! and adopts the cooldowns it did not see itself, so a deployment one replica found broken is skipped by
//! every replica within a second. Each Redis call is timed into `llm_redis_latency` / `llm_redis_fails`.
//!
//! Redis being down never fails a request: routing keeps using each replica's own cooldowns, and the actor
//! retries on its next tick (the connection manager reconnects).

use super::deployment::AdoptCooldown;
use super::Deployment;
use crate::metrics::system::ServiceMetrics;
use crate::store::now_ms;
use actix::prelude::*;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often cooldowns written by other replicas are read.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A cooldown this replica started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CooldownShared {
    pub model_id: String,
    pub until_ms: i64,
}

pub struct SharedStateActor {
    conn: Option<ConnectionManager>,
    url: String,
    deployments: Arc<Vec<Arc<Deployment>>>,
    metrics: Option<Arc<ServiceMetrics>>,
    keys: Vec<String>,
    busy: bool,
}

fn key(model_id: &str) -> String {
    format!("llm:cooldown:{model_id}")
}

fn class(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "TimeoutError"
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        "ConnectionError"
    } else {
        "ResponseError"
    }
}

impl SharedStateActor {
    pub fn new(
        url: String,
        deployments: Arc<Vec<Arc<Deployment>>>,
        metrics: Option<Arc<ServiceMetrics>>,
    ) -> Self {
        let keys = deployments.iter().map(|d| key(&d.cfg.id)).collect();
        SharedStateActor {
            conn: None,
            url,
            deployments,
            metrics,
            keys,
            busy: false,
        }
    }

    fn record(
        metrics: &Option<Arc<ServiceMetrics>>,
        started: Instant,
        r: &Result<(), &redis::RedisError>,
        function: &str,
    ) {
        if let Some(m) = metrics {
            match r {
                Ok(()) => m.ok(started.elapsed()),
                Err(e) => m.fail(class(e), function),
            }
        }
    }

    /// Reads every deployment's shared cooldown and hands the ones later than the local gate to their actors.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (conn, url, keys, metrics) = (
            self.conn.clone(),
            self.url.clone(),
            self.keys.clone(),
            self.metrics.clone(),
        );
        let fut = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => {
                    let started = Instant::now();
                    let made = match redis::Client::open(url.as_str()) {
                        Ok(client) => ConnectionManager::new(client).await,
                        Err(e) => Err(e),
                    };
                    Self::record(&metrics, started, &made.as_ref().map(|_| ()), "connect");
                    match made {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!("redis unavailable, cooldowns stay per replica: {e}");
                            return (None, Vec::new());
                        }
                    }
                }
            };
            let started = Instant::now();
            let r: Result<Vec<Option<i64>>, _> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await;
            Self::record(&metrics, started, &r.as_ref().map(|_| ()), "mget");
            (Some(conn), r.unwrap_or_default())
        };
        ctx.spawn(fut.into_actor(self).map(|(conn, values), act, _| {
            act.busy = false;
            if conn.is_some() {
                act.conn = conn;
            }
            let now = now_ms();
            for (d, v) in act.deployments.iter().zip(values) {
                if let Some(until) = v.filter(|&u| u > now && u > d.live.cooldown_until()) {
                    d.addr.do_send(AdoptCooldown { until_ms: until });
                }
            }
        }));
    }
}

impl Actor for SharedStateActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sync(ctx);
        ctx.run_interval(SYNC_INTERVAL, |act, ctx| act.sync(ctx));
    }
}

impl Handler<CooldownShared> for SharedStateActor {
    type Result = ();

    fn handle(&mut self, msg: CooldownShared, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let metrics = self.metrics.clone();
        let ttl = (msg.until_ms - now_ms()).max(1);
        ctx.spawn(
            async move {
                let started = Instant::now();
                let r: Result<(), _> = redis::cmd("SET")
                    .arg(key(&msg.model_id))
                    .arg(msg.until_ms)
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await;
                Self::record(&metrics, started, &r.as_ref().map(|_| ()), "set");
            }
            .into_actor(self),
        );
    }
}
