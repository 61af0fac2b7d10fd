//! SharedStateActor: with `general_settings.redis_url`, owns the Redis connection this replica shares with
//! the others, and keeps what replicas share in step off the request path.
//!
//! Limits: admission holds shared limits with quota leases (`accounts/quota.rs`), on the connection this
//! actor makes (it hands it to `Accounts::quota`). Besides, every [`LIMITS_INTERVAL`] each replica writes
//! what its key, key-on-model, team and user windows counted this minute under its own field of
//! `llm:rlh:<scope>:<minute>:r|t` (`HSET`, one pipeline for all scopes) and reads every replica's field back
//! (`HVALS`): the other replicas' count, which the remaining-requests metrics and `redis_outage_mode: divide`
//! use. Each replica writes its absolute count, not an increment, so a push that Redis applied but whose
//! answer timed out is simply written again: nothing is counted twice. A failed sync voids the leases.
//!
//! Cooldowns: A replica that cools a deployment down writes `llm:cooldown:<model_id>` (the
//! end time in ms, expiring with it); every [`SYNC_INTERVAL`] each replica reads all of them in one `MGET`
//! and adopts the cooldowns it did not see itself, so a deployment one replica found broken is skipped by
//! every replica within a second. Each Redis call is timed into `llm_redis_latency` / `llm_redis_fails`.
//!
//! Redis being down never fails a request: routing keeps using each replica's own cooldowns, and the actor
//! retries on its next tick (the connection manager reconnects).

use super::budget::Refresh;
use super::deployment::{AdoptCooldown, CooldownShared, RecoveredElsewhere};
use super::router::ReloadStored;
use crate::accounts::{Accounts, Limits};
use crate::metrics::system::ServiceMetrics;
use crate::router::table::RoutingTable;
use crate::store::{Change, Table};
use crate::units::now_ms;
use crate::window::current_minute;
use actix::prelude::*;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often cooldowns written by other replicas are read.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often rate-limit windows are pushed and read back.
pub const LIMITS_INTERVAL: Duration = Duration::from_millis(200);
/// Where replicas announce the records they write: `llm:changes:<namespace>`, messages
/// `<replica>|<table>|<id>`. The namespace is a hash of the database's address (without credentials):
/// gateways on other databases that share the Redis never act on each other's records.
const CHANGES_CHANNEL: &str = "llm:changes:";
/// Where replicas announce the cooldowns they start: `llm:cooldowns:<namespace>`, messages
/// `<replica>|<model_id>|<until_ms>`.
const COOLDOWNS_CHANNEL: &str = "llm:cooldowns:";
/// How long the subscriber waits before connecting again after it lost Redis.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// A Redis connection attempt's limit.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A Redis command's (or pipeline's) limit: a hung Redis fails calls, never holds them.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct SharedStateActor {
    conn: Option<ConnectionManager>,
    /// This replica's field in the shared rate-limit hashes (random per process).
    replica: String,
    url: String,
    /// The published table: the deployments whose cooldowns are shared are read from it at each use.
    routes: Arc<ArcSwap<RoutingTable>>,
    metrics: Option<Arc<ServiceMetrics>>,
    busy: bool,
    accounts: Arc<Accounts>,
    limits_busy: bool,
    /// Records this replica wrote (from the store), to announce; taken by the publisher task.
    changes: Option<tokio::sync::mpsc::UnboundedReceiver<Change>>,
    /// Where announced changes of other replicas go (the BudgetActor re-reads them).
    budget: Recipient<Refresh>,
    /// Where an announced change of the stored deployments goes (the RouterActor).
    models: Recipient<ReloadStored>,
    /// `llm:changes:<namespace>` and `llm:cooldowns:<namespace>`.
    channels: (String, String),
    /// Records are announced and re-read only when the replicas share a database (PostgreSQL).
    shared_store: bool,
    /// `llm:replicas:<namespace>`: each replica's last heartbeat (unix ms), for the replica count.
    replicas_key: String,
}

/// What the once-a-second sync reads: every deployment's shared cooldown end, and every replica's last
/// heartbeat.
type SyncAnswer = (Vec<Option<i64>>, std::collections::HashMap<String, i64>);

/// A connection manager with this module's timeouts.
async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
        .set_response_timeout(REDIS_RESPONSE_TIMEOUT)
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config).await
}

fn key(model_id: &str) -> String {
    format!("llm:cooldown:{model_id}")
}

impl SharedStateActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        url: String,
        routes: Arc<ArcSwap<RoutingTable>>,
        accounts: Arc<Accounts>,
        metrics: Option<Arc<ServiceMetrics>>,
        changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
        budget: Recipient<Refresh>,
        models: Recipient<ReloadStored>,
        namespace: &str,
        shared_store: bool,
    ) -> Self {
        let replica = uuid::Uuid::new_v4().simple().to_string();
        accounts
            .quota
            .configure(&replica, namespace, metrics.clone());
        SharedStateActor {
            conn: None,
            replica,
            url,
            routes,
            metrics,
            busy: false,
            accounts,
            limits_busy: false,
            changes: Some(changes),
            budget,
            models,
            channels: (
                format!("{CHANGES_CHANNEL}{namespace}"),
                format!("{COOLDOWNS_CHANNEL}{namespace}"),
            ),
            shared_store,
            replicas_key: format!("llm:replicas:{namespace}"),
        }
    }

    /// Announces every record this replica writes, one `PUBLISH` each, as they come.
    fn publish_changes(&mut self) {
        let Some(mut changes) = self.changes.take() else {
            return;
        };
        if !self.shared_store {
            return;
        }
        let (url, replica, metrics, channel) = (
            self.url.clone(),
            self.replica.clone(),
            self.metrics.clone(),
            self.channels.0.clone(),
        );
        actix_rt::spawn(async move {
            let mut conn: Option<ConnectionManager> = None;
            while let Some(c) = changes.recv().await {
                if conn.is_none() {
                    let started = Instant::now();
                    let made = connect(&url).await;
                    Self::record(&metrics, started, &made.as_ref().map(|_| ()), "connect");
                    conn = made.ok();
                }
                // Without Redis the change is not announced; the other replicas' read-back finds it.
                let Some(cn) = conn.as_mut() else { continue };
                let started = Instant::now();
                let r: redis::RedisResult<()> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(format!("{replica}|{}|{}", c.table.name(), c.id))
                    .query_async(cn)
                    .await;
                Self::record(&metrics, started, &r.as_ref().map(|_| ()), "publish");
            }
        });
    }

    /// Listens to the other replicas' announcements for as long as the actor lives: changed records go to
    /// the BudgetActor to be read again, cooldowns to their deployments. A lost connection is made again
    /// after [`RESUBSCRIBE_AFTER`]; what was announced meanwhile is caught by the periodic read-backs.
    fn subscribe(&mut self) {
        let (url, replica, metrics, budget, routes, models) = (
            self.url.clone(),
            self.replica.clone(),
            self.metrics.clone(),
            self.budget.clone(),
            self.routes.clone(),
            self.models.clone(),
        );
        let ((changes, cooldowns), shared_store) = (self.channels.clone(), self.shared_store);
        actix_rt::spawn(async move {
            loop {
                let started = Instant::now();
                let subscribed = async {
                    let client = redis::Client::open(url.as_str())?;
                    let mut ps =
                        actix_rt::time::timeout(REDIS_CONNECT_TIMEOUT, client.get_async_pubsub())
                            .await
                            .map_err(|_| {
                                redis::RedisError::from(std::io::Error::from(
                                    std::io::ErrorKind::TimedOut,
                                ))
                            })??;
                    if shared_store {
                        ps.subscribe(&changes).await?;
                    }
                    ps.subscribe(&cooldowns).await?;
                    Ok::<_, redis::RedisError>(ps)
                }
                .await;
                Self::record(
                    &metrics,
                    started,
                    &subscribed.as_ref().map(|_| ()),
                    "subscribe",
                );
                if let Ok(mut ps) = subscribed {
                    let mut messages = ps.on_message();
                    while let Some(msg) = messages.next().await {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        let mut parts = payload.splitn(3, '|');
                        let (Some(from), Some(what), Some(rest)) =
                            (parts.next(), parts.next(), parts.next())
                        else {
                            continue;
                        };
                        if from == replica {
                            continue;
                        }
                        let channel = msg.get_channel_name();
                        if channel == changes {
                            match Table::named(what) {
                                Some(Table::Models) => models.do_send(ReloadStored),
                                Some(table) => budget.do_send(Refresh(Change {
                                    table,
                                    id: rest.to_owned(),
                                })),
                                None => {}
                            }
                        } else if channel == cooldowns {
                            let Ok(until) = rest.parse::<i64>() else {
                                continue;
                            };
                            let now = now_ms();
                            if let Some(d) = routes.load().deployment(what) {
                                if until == 0 {
                                    d.addr.do_send(RecoveredElsewhere);
                                } else if until > now && until > d.live.cooldown_until() {
                                    d.addr.do_send(AdoptCooldown { until_ms: until });
                                }
                            }
                        }
                    }
                    tracing::warn!("redis subscription ended; subscribing again");
                }
                actix_rt::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
    }

    /// Every scope with a request or token limit: its Redis name and its windows.
    fn limited_scopes(&self) -> Vec<(String, Arc<Limits>)> {
        let mut out = Vec::new();
        for e in self.accounts.keys.iter() {
            if e.rec.rpm_limit.is_some() || e.rec.tpm_limit.is_some() {
                out.push((format!("k:{}", e.rec.token), e.limits.clone()));
            }
            for (model, l) in &e.model_limits {
                out.push((format!("km:{}:{model}", e.rec.token), l.clone()));
            }
        }
        for e in self.accounts.teams.iter() {
            if e.rec.rpm_limit.is_some() || e.rec.tpm_limit.is_some() {
                out.push((format!("t:{}", e.rec.team_id), e.limits.clone()));
            }
        }
        for e in self.accounts.users.iter() {
            if e.rec.rpm_limit.is_some() || e.rec.tpm_limit.is_some() {
                out.push((format!("u:{}", e.rec.user_id), e.limits.clone()));
            }
        }
        out
    }

    /// Pushes this replica's new counts and reads back every replica's totals.
    fn sync_limits(&mut self, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        if self.limits_busy {
            return;
        }
        let scopes = self.limited_scopes();
        if scopes.is_empty() {
            return;
        }
        self.limits_busy = true;
        let minute = current_minute(now_ms());
        let mut pipe = redis::pipe();
        // (own count written, for requests and tokens) per scope, in pipeline order.
        let mut own = Vec::with_capacity(scopes.len());
        for (name, l) in &scopes {
            let mut counts = [0u64; 2];
            for (i, window) in [&l.requests, &l.tokens].into_iter().enumerate() {
                let local = window.current(minute);
                let key = format!("llm:rlh:{name}:{minute}:{}", ["r", "t"][i]);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(&self.replica)
                    .arg(local)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(120_000).ignore();
                pipe.cmd("HVALS").arg(&key);
                counts[i] = local;
            }
            own.push(counts);
        }
        let metrics = self.metrics.clone();
        ctx.spawn(
            async move {
                let started = Instant::now();
                let r: Result<Vec<Vec<i64>>, _> = pipe.query_async(&mut conn).await;
                Self::record(&metrics, started, &r.as_ref().map(|_| ()), "sync_limits");
                r.ok()
            }
            .into_actor(self)
            .map(move |totals, act, _| {
                act.limits_busy = false;
                let Some(totals) = totals else {
                    act.accounts.quota.failed();
                    return;
                };
                act.accounts
                    .redis
                    .last_ok_ms
                    .store(now_ms(), std::sync::atomic::Ordering::Release);
                for (((_, l), counts), pair) in scopes.iter().zip(&own).zip(totals.chunks(2)) {
                    for (i, (remote, own)) in [&l.remote.0, &l.remote.1]
                        .into_iter()
                        .zip(counts)
                        .enumerate()
                    {
                        let total: u64 = pair
                            .get(i)
                            .map(|fields| fields.iter().map(|v| (*v).max(0) as u64).sum())
                            .unwrap_or(0);
                        remote.set(minute, total.saturating_sub(*own));
                    }
                }
            }),
        );
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
                Err(e) => m.fail(crate::accounts::quota::class(e), function),
            }
        }
    }

    /// Reads every deployment's shared cooldown and hands the ones later than the local gate to their actors.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        // The deployments of the table in force now, with a key no deployment has so that MGET always
        // has one (the model list can be empty for a moment).
        let table = self.routes.load_full();
        let mut keys: Vec<String> = table.deployments.iter().map(|d| key(&d.cfg.id)).collect();
        keys.push(key(""));
        let (conn, url, metrics) = (self.conn.clone(), self.url.clone(), self.metrics.clone());
        let (replicas_key, replica) = (self.replicas_key.clone(), self.replica.clone());
        let fut = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => {
                    let started = Instant::now();
                    let made = connect(&url).await;
                    Self::record(&metrics, started, &made.as_ref().map(|_| ()), "connect");
                    match made {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!("redis unavailable, cooldowns stay per replica: {e}");
                            return (None, None);
                        }
                    }
                }
            };
            // The cooldowns, and this replica's heartbeat among the replicas of its namespace.
            let started = Instant::now();
            let r: Result<SyncAnswer, _> = redis::pipe()
                .cmd("MGET")
                .arg(&keys)
                .cmd("HSET")
                .arg(&replicas_key)
                .arg(&replica)
                .arg(now_ms())
                .ignore()
                .cmd("PEXPIRE")
                .arg(&replicas_key)
                .arg(86_400_000)
                .ignore()
                .cmd("HGETALL")
                .arg(&replicas_key)
                .query_async(&mut conn)
                .await;
            Self::record(&metrics, started, &r.as_ref().map(|_| ()), "mget");
            (Some(conn), r.ok())
        };
        ctx.spawn(fut.into_actor(self).map(move |(conn, answer), act, _| {
            act.busy = false;
            if let Some(c) = &conn {
                act.accounts.quota.connected(c.clone());
                act.conn = conn;
            }
            let now = now_ms();
            let Some((values, beats)) = answer else {
                act.accounts.quota.failed();
                return;
            };
            let alive = beats
                .values()
                .filter(|&&t| now - t < crate::accounts::quota::REPLICA_ALIVE_MS)
                .count()
                .max(1) as u64;
            let view = &act.accounts.redis;
            view.replicas
                .store(alive, std::sync::atomic::Ordering::Release);
            view.last_ok_ms
                .store(now, std::sync::atomic::Ordering::Release);
            for (d, v) in table.deployments.iter().zip(values) {
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
        self.publish_changes();
        self.subscribe();
        self.sync(ctx);
        ctx.run_interval(SYNC_INTERVAL, |act, ctx| act.sync(ctx));
        ctx.run_interval(LIMITS_INTERVAL, |act, ctx| act.sync_limits(ctx));
    }
}

impl Handler<CooldownShared> for SharedStateActor {
    type Result = ();

    fn handle(&mut self, msg: CooldownShared, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let (metrics, replica, channel) = (
            self.metrics.clone(),
            self.replica.clone(),
            self.channels.1.clone(),
        );
        let ttl = msg.until_ms - now_ms();
        if !msg.recovered && ttl <= 0 {
            // A cooldown already over (cooldown_time 0, or handled late): nothing to share.
            return;
        }
        // A cooldown that starts or ends means no probe is out any more: the next one may be taken at once.
        let probe = self.accounts.quota.probe_key(&msg.model_id);
        ctx.spawn(
            async move {
                let started = Instant::now();
                let (r, function): (Result<(), _>, _) = if msg.recovered {
                    // Recovered here (its probe succeeded): forgotten, and announced so that every replica
                    // ends its probation instead of probing again.
                    let r = redis::pipe()
                        .cmd("DEL")
                        .arg(key(&msg.model_id))
                        .arg(probe.as_deref().unwrap_or_default())
                        .ignore()
                        .cmd("PUBLISH")
                        .arg(&channel)
                        .arg(format!("{replica}|{}|0", msg.model_id))
                        .ignore()
                        .query_async(&mut conn)
                        .await;
                    (r, "del")
                } else {
                    // Stored for replicas that start later or missed the announcement, announced for
                    // the others to skip the deployment at once.
                    let r = redis::pipe()
                        .cmd("SET")
                        .arg(key(&msg.model_id))
                        .arg(msg.until_ms)
                        .arg("PX")
                        .arg(ttl)
                        .ignore()
                        .cmd("PUBLISH")
                        .arg(&channel)
                        .arg(format!("{replica}|{}|{}", msg.model_id, msg.until_ms))
                        .ignore()
                        .cmd("DEL")
                        .arg(probe.as_deref().unwrap_or_default())
                        .ignore()
                        .query_async(&mut conn)
                        .await;
                    (r, "set")
                };
                Self::record(&metrics, started, &r.as_ref().map(|_| ()), function);
            }
            .into_actor(self),
        );
    }
}
