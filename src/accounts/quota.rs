//! Quota leases: how replicas that share one Redis hold rate limits and budgets together.
//!
//! For every limited scope (a key, a key on one model, a team, a user, an end user) and measure (requests
//! and tokens of the current minute, spend of the current budget period), Redis holds one counter: what
//! the replicas have *claimed* of the limit so far. A replica admits requests against its own [`Lease`]:
//! the part of the limit Redis granted it. While its lease has room, a request is admitted without any
//! Redis call. When the lease is used up, the request asks Redis for another slice (one Lua script for all
//! the scopes the request needs, atomic): the script adds what the replica used beyond its grants (its
//! *debt*) to the counter, and grants `max(1, (limit - claimed) / (2 x live replicas))`, nothing once the
//! counter reaches the limit. Slices shrink as the limit nears, so the last requests of a window go to
//! Redis one by one and the replicas' unused slices stay small.
//!
//! The bound: requests are granted one at a time against an atomic counter, so across every replica a
//! minute admits at most `rpm_limit` requests. Tokens and spend are known only when a request ends: a
//! request is admitted while its replica's lease has room, and may then use more than the room left; the
//! excess is reported to Redis as soon as the request ends. So the combined overshoot of `tpm_limit` and
//! `max_budget` is at most what the requests in flight when the limit is reached use. It does not grow with
//! the number of replicas or the request rate. `max_parallel_requests` takes a slot in a Redis hash per
//! request (one field per replica, slots of replicas that stopped announcing themselves are freed), and
//! gives it back when the request ends.
//!
//! What a replica was granted and did not use stays claimed until the window ends (a minute), or, for
//! budgets, until the counter has been idle for [`SPEND_TTL_MS`] (it is then started again from the
//! stored spend): near a limit, another replica can be refused while one still holds a slice, by at most
//! one slice per replica.
//!
//! Failure: while Redis is unreachable (and for a second after any call failed) requests are counted as
//! `general_settings.redis_outage_mode` says, and each admission is still counted in the lease's `used`;
//! the next slice asked after Redis is back reports it as debt, so every admission reaches the counter
//! once. Grants held before the outage stay valid. If Redis lost its data, a counter is started again from
//! what the asking replica had claimed (for budgets, from the spend it knows, the stored spend included);
//! slices other replicas still hold are then not in it until they ask.

pub use super::lease::{Lease, Room, Span};
use crate::metrics::system::ServiceMetrics;
use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// How long a minute counter lives in Redis.
const MINUTE_TTL_MS: i64 = 120_000;
/// How long a budget counter lives in Redis after it was last used.
pub const SPEND_TTL_MS: i64 = 600_000;
/// After a failed Redis call, how long requests are counted as in an outage without trying Redis again.
const BACK_OFF_MS: i64 = 1_000;

/// Claims debts and grants slices, for every counter named in KEYS. ARGV[1]: live replicas; then four per
/// key: limit, debt, the value a missing counter starts from, its time to live (ms). Returns the grants.
const CLAIM: &str = r"
local n = tonumber(ARGV[1])
if n < 1 then n = 1 end
local out = {}
for i, key in ipairs(KEYS) do
  local b = 1 + (i - 1) * 4
  local limit = tonumber(ARGV[b + 1])
  local c = tonumber(redis.call('GET', key) or ARGV[b + 3]) + tonumber(ARGV[b + 2])
  if c < 0 then c = 0 end
  local grant = 0
  if c < limit then
    grant = math.floor((limit - c) / (2 * n))
    if grant < 1 then grant = 1 end
    c = c + grant
  end
  redis.call('SET', key, string.format('%d', c), 'PX', ARGV[b + 4])
  out[i] = grant
end
return out
";

/// Gives back a deployment's probe token if it still holds ARGV[1] (the value its taker set).
const PROBE_BACK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// Takes (ARGV[5] = 1) or gives back (ARGV[5] < 0) parallel-request slots. KEYS[1]: the scope's slots, one
/// field per replica; KEYS[2]: the replicas' heartbeats. ARGV: limit, replica, now (ms), alive (ms).
/// Slots held by replicas whose heartbeat is older than `alive` are freed.
const SLOT: &str = r"
local want = tonumber(ARGV[5])
if want < 0 then
  local v = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0') + want
  if v <= 0 then redis.call('HDEL', KEYS[1], ARGV[2]) else redis.call('HSET', KEYS[1], ARGV[2], v) end
  return 0
end
local total = 0
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  local beat = tonumber(redis.call('HGET', KEYS[2], held[i]) or '0')
  if held[i] == ARGV[2] or tonumber(ARGV[3]) - beat < tonumber(ARGV[4]) then
    total = total + tonumber(held[i + 1])
  else
    redis.call('HDEL', KEYS[1], held[i])
  end
end
if total < tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
  redis.call('PEXPIRE', KEYS[1], 86400000)
  return 1
end
return 0
";

/// A replica that has not announced itself for this long is not counted among the live ones.
pub const REPLICA_ALIVE_MS: i64 = 5_000;

/// The `error_class` label value of a Redis error.
pub fn class(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "TimeoutError"
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        "ConnectionError"
    } else {
        "ResponseError"
    }
}

/// Which lease an ask fills.
#[derive(Clone)]
pub enum LeaseOf {
    Requests(Arc<super::ledger::Limits>),
    Tokens(Arc<super::ledger::Limits>),
    Spend(Arc<super::ledger::Ledger>),
}

impl LeaseOf {
    pub fn lease(&self) -> &Lease {
        match self {
            LeaseOf::Requests(l) => &l.leases[0],
            LeaseOf::Tokens(l) => &l.leases[1],
            LeaseOf::Spend(l) => &l.lease,
        }
    }
}

/// One counter a request needs a slice of. Dropping an ask that admission made (`asking`) lets other
/// requests ask for the lease again.
pub struct Ask {
    pub lease: LeaseOf,
    /// The scope in the counter's name: `k:<hash>`, `km:<hash>:<model>`, `t:<team>`, `u:<user>`, `e:<end user>`.
    pub scope: String,
    pub span: Span,
    pub limit: i64,
    pub debt: i64,
    /// The counter's value if Redis has lost it, before this ask's debt (what this replica had reported;
    /// for spend, plus the period's spend the store had before this replica's lease began).
    pub init: i64,
    /// This ask holds its lease's `asking` mark (reports after a request ends do not).
    pub asking: bool,
}

impl Drop for Ask {
    fn drop(&mut self) {
        if self.asking {
            self.lease.lease().asked();
        }
    }
}

impl Ask {
    fn key(&self, prefix: &str) -> String {
        let what = match self.lease {
            LeaseOf::Requests(_) => "r",
            LeaseOf::Tokens(_) => "t",
            LeaseOf::Spend(_) => "s",
        };
        format!("{prefix}{}:{what}:{}", self.scope, self.span.id())
    }

    fn ttl_ms(&self) -> i64 {
        match self.span {
            Span::Minute(_) => MINUTE_TTL_MS,
            Span::Period(_) => SPEND_TTL_MS,
        }
    }
}

/// Names a replica uses in Redis.
struct Names {
    replica: String,
    /// `llm:q:<namespace>:`
    prefix: String,
    /// `llm:replicas:<namespace>`
    replicas: String,
}

/// This replica's handle on the shared counters. Lives in `Accounts`; the SharedStateActor names it and
/// hands it the Redis connection.
#[derive(Default)]
pub struct Quota {
    conn: ArcSwapOption<ConnectionManager>,
    names: OnceLock<Names>,
    metrics: OnceLock<Option<Arc<ServiceMetrics>>>,
    /// When a Redis call of the request path last failed (unix ms).
    failed_ms: AtomicI64,
    claim: OnceLock<redis::Script>,
    slot: OnceLock<redis::Script>,
    probe: OnceLock<redis::Script>,
}

impl Quota {
    pub fn configure(&self, replica: &str, namespace: &str, metrics: Option<Arc<ServiceMetrics>>) {
        let _ = self.names.set(Names {
            replica: replica.to_owned(),
            prefix: format!("llm:q:{namespace}:"),
            replicas: format!("llm:replicas:{namespace}"),
        });
        let _ = self.metrics.set(metrics);
    }

    pub fn connected(&self, conn: ConnectionManager) {
        if self.conn.load().is_none() {
            self.conn.store(Some(Arc::new(conn)));
        }
    }

    /// Whether requests can ask Redis now (connected, and no call failed within [`BACK_OFF_MS`]).
    pub fn usable(&self, now_ms: i64) -> bool {
        self.names.get().is_some()
            && self.conn.load().is_some()
            && now_ms - self.failed_ms.load(Ordering::Acquire) >= BACK_OFF_MS
    }

    /// Whether a Redis call failed within [`BACK_OFF_MS`] of `now_ms` (after Redis was connected once).
    pub fn backing_off(&self, now_ms: i64) -> bool {
        self.conn.load().is_some() && now_ms - self.failed_ms.load(Ordering::Acquire) < BACK_OFF_MS
    }

    /// Redis failed somewhere: for [`BACK_OFF_MS`] requests do not ask it (they are counted as in an
    /// outage, and reported with the next ask).
    pub fn failed(&self) {
        self.failed_ms
            .store(crate::units::now_ms(), Ordering::Release);
    }

    fn record(&self, started: Instant, r: &Result<(), &redis::RedisError>, function: &str) {
        if let Some(Some(m)) = self.metrics.get() {
            match r {
                Ok(()) => m.ok(started.elapsed()),
                Err(e) => m.fail(class(e), function),
            }
        }
    }

    /// Asks Redis for a slice of every counter in `asks`, in one script call, and fills the leases.
    /// On an error the caller counts the request as in an outage. The debts of a call that never left
    /// are owed again; those of a call that timed out or lost its connection are not: Redis may have
    /// applied it, and counting them twice would refuse what is allowed. A grant applied whose answer
    /// was lost stays claimed until the window ends.
    pub async fn claim(&self, asks: &[Ask], replicas: u64) -> redis::RedisResult<()> {
        let r = self.claim_once(asks, replicas).await;
        if let Err(e) = &r {
            // Never sent (no connection, refused): the debts are owed again, with the next ask.
            if e.is_connection_refusal() || e.kind() == redis::ErrorKind::IoError && !e.is_timeout()
            {
                for a in asks {
                    a.lease.lease().unreported(a.span, a.debt);
                }
            }
        }
        r
    }

    async fn claim_once(&self, asks: &[Ask], replicas: u64) -> redis::RedisResult<()> {
        let (Some(names), Some(conn)) = (self.names.get(), self.conn.load_full()) else {
            return Err(not_connected());
        };
        let script = self.claim.get_or_init(|| redis::Script::new(CLAIM));
        let mut call = script.prepare_invoke();
        call.arg(replicas.max(1));
        for a in asks {
            call.key(a.key(&names.prefix))
                .arg(a.limit)
                .arg(a.debt)
                .arg(a.init)
                .arg(a.ttl_ms());
        }
        let started = Instant::now();
        let mut conn = (*conn).clone();
        let r: redis::RedisResult<Vec<i64>> = call.invoke_async(&mut conn).await;
        self.record(started, &r.as_ref().map(|_| ()), "claim");
        match r {
            Ok(grants) => {
                for (a, g) in asks.iter().zip(grants) {
                    a.lease.lease().granted(a.span, g, a.limit);
                }
                Ok(())
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    /// Reports what a finished request used beyond its replica's grants, without waiting for the answer
    /// (not sent without Redis: the next ask reports it).
    pub fn report(self: &Arc<Self>, ask: Ask) {
        if tokio::runtime::Handle::try_current().is_err() || !self.usable(crate::units::now_ms()) {
            ask.lease.lease().unreported(ask.span, ask.debt);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.claim(std::slice::from_ref(&ask), 1).await;
        });
    }

    /// Takes the probe of a deployment back from a cooldown for this request, for `ttl`. `None` when
    /// another probe holds it (it announces the outcome). The token is given back when the returned guard
    /// is dropped (the probe ended).
    pub async fn take_probe(
        self: &Arc<Self>,
        model_id: &str,
        ttl: std::time::Duration,
    ) -> redis::RedisResult<Option<ProbeToken>> {
        let (Some(names), Some(conn)) = (self.names.get(), self.conn.load_full()) else {
            return Err(not_connected());
        };
        let key = probe_key(&names.prefix, model_id);
        let value = format!("{}:{}", names.replica, uuid::Uuid::new_v4().simple());
        let started = Instant::now();
        let mut conn = (*conn).clone();
        let r: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await;
        self.record(started, &r.as_ref().map(|_| ()), "take_probe");
        match r {
            Ok(Some(_)) => Ok(Some(ProbeToken {
                quota: self.clone(),
                key,
                value,
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    /// The Redis key of a deployment's probe (see [`Quota::take_probe`]).
    pub fn probe_key(&self, model_id: &str) -> Option<String> {
        self.names.get().map(|n| probe_key(&n.prefix, model_id))
    }

    /// Takes one of `limit` parallel-request slots of `scope` across replicas; `None` when all are taken.
    pub async fn take_slot(
        self: &Arc<Self>,
        scope: String,
        limit: u64,
    ) -> redis::RedisResult<Option<Slot>> {
        let (Some(names), Some(conn)) = (self.names.get(), self.conn.load_full()) else {
            return Err(not_connected());
        };
        let key = format!("{}{scope}:p", names.prefix);
        let script = self.slot.get_or_init(|| redis::Script::new(SLOT));
        let started = Instant::now();
        let mut conn = (*conn).clone();
        let r: redis::RedisResult<i64> = script
            .key(&key)
            .key(&names.replicas)
            .arg(limit)
            .arg(&names.replica)
            .arg(crate::units::now_ms())
            .arg(REPLICA_ALIVE_MS)
            .arg(1)
            .invoke_async(&mut conn)
            .await;
        self.record(started, &r.as_ref().map(|_| ()), "take_slot");
        match r {
            Ok(1) => Ok(Some(Slot {
                quota: self.clone(),
                key,
            })),
            Ok(_) => Ok(None),
            Err(e) => {
                self.failed();
                // Redis may have taken the slot without the answer arriving: give it back (at worst this
                // gives back one of this replica's other slots early, never leaks one for good).
                drop(Slot {
                    quota: self.clone(),
                    key,
                });
                Err(e)
            }
        }
    }
}

fn probe_key(prefix: &str, model_id: &str) -> String {
    format!("{prefix}probe:{model_id}")
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "redis is not connected"))
}

/// A deployment's probe token held in Redis; given back when dropped (the probe ended, whatever its
/// outcome: a success or a new cooldown is announced besides).
pub struct ProbeToken {
    quota: Arc<Quota>,
    key: String,
    /// What this take set: a later take's token is never given back by this one.
    value: String,
}

impl ProbeToken {
    /// The probe had an outcome (a recovery or a new cooldown), whose announcement deletes the token in
    /// the same Redis call: not given back before it, so no replica probes again before it hears.
    pub fn settled(mut self) {
        self.key.clear();
    }
}

impl Drop for ProbeToken {
    fn drop(&mut self) {
        let Some(conn) = self.quota.conn.load_full() else {
            return;
        };
        if self.key.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (quota, key, value) = (
            self.quota.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        );
        // Not given back (Redis away): it expires after the probe timeout.
        tokio::spawn(async move {
            let script = quota.probe.get_or_init(|| redis::Script::new(PROBE_BACK));
            let started = Instant::now();
            let mut conn = (*conn).clone();
            let r: redis::RedisResult<i64> =
                script.key(&key).arg(&value).invoke_async(&mut conn).await;
            quota.record(started, &r.as_ref().map(|_| ()), "give_probe");
        });
    }
}

/// A parallel-request slot held in Redis; given back when dropped (the request ended).
pub struct Slot {
    quota: Arc<Quota>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (Some(names), Some(conn)) = (self.quota.names.get(), self.quota.conn.load_full())
        else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (quota, key, replica, replicas) = (
            self.quota.clone(),
            std::mem::take(&mut self.key),
            names.replica.clone(),
            names.replicas.clone(),
        );
        // A give-back that fails leaves the slot to be freed when this replica stops announcing itself,
        // or taken back by the next one this replica takes (the field counts this replica's slots).
        tokio::spawn(async move {
            let script = quota.slot.get_or_init(|| redis::Script::new(SLOT));
            let started = Instant::now();
            let mut conn = (*conn).clone();
            let r: redis::RedisResult<i64> = script
                .key(&key)
                .key(&replicas)
                .arg(0)
                .arg(&replica)
                .arg(0)
                .arg(0)
                .arg(-1)
                .invoke_async(&mut conn)
                .await;
            quota.record(started, &r.as_ref().map(|_| ()), "give_slot");
        });
    }
}

#[cfg(test)]
mod tests;
