//! The DeploymentActor on tokio's paused clock: attempts in; state changes (to the metrics actor) and
//! shared cooldowns (to the Redis actor) out; timers driven by `tokio::time::advance`, never by waiting.

use super::*;
use crate::actors::testing::{settle, Collect};
use crate::deployment::health::IDLE_RECOVERY;
use crate::deployment::live::CooldownPolicy;
use crate::units::now_ms;

const POLICY: CooldownPolicy = CooldownPolicy {
    allowed_fails: 1,
    cooldown_time: Duration::from_secs(5),
    probe_timeout: Duration::from_secs(10),
};

fn labels() -> Arc<DeploymentLabels> {
    Arc::new(DeploymentLabels {
        model_group: "g".into(),
        llm_model_name: "m".into(),
        model_id: "dep-1".into(),
        api_base: "http://127.0.0.1:9".into(),
        api_provider: "openai",
    })
}

fn failure(status: u16, cooldown: Option<CooldownStarted>, against: bool) -> AttemptDone {
    AttemptDone {
        result: Err((status, "Openai.InternalServerError".into())),
        against,
        latency: Duration::from_millis(20),
        remaining_requests: None,
        remaining_tokens: None,
        cooldown,
        custom: vec!["tenant-a".into()],
        recovered: false,
    }
}

fn success(recovered: bool) -> AttemptDone {
    AttemptDone {
        result: Ok(()),
        against: false,
        latency: Duration::from_millis(40),
        remaining_requests: Some(99.0),
        remaining_tokens: Some(1000.0),
        cooldown: None,
        custom: Vec::new(),
        recovered,
    }
}

type States = Arc<std::sync::Mutex<Vec<DeploymentStateChanged>>>;

fn states(got: &States) -> Vec<(HealthState, Option<u16>)> {
    got.lock()
        .unwrap()
        .iter()
        .map(|c| (c.state, c.cooled_down.as_ref().map(|c| c.0)))
        .collect()
}

#[actix_rt::test]
async fn failures_cool_down_and_recover_on_the_paused_clock() {
    tokio::time::pause();
    let clock = Clock::paused(now_ms());
    let live = Arc::new(Live::default());
    let (metrics, got) = Collect::<DeploymentStateChanged>::start();
    let (redis, shared) = Collect::<CooldownShared>::start();
    let actor = DeploymentActor::new(
        labels(),
        Some(metrics.recipient()),
        live.clone(),
        clock.clone(),
    )
    .start();
    actor.do_send(ShareCooldowns(redis.recipient()));
    settle().await;
    // The state series exists from the start, healthy.
    assert_eq!(states(&got), [(HealthState::Healthy, None)]);

    // A client's own failure (an upstream 400 to its request) says nothing about the deployment.
    actor.do_send(AttemptsDone(vec![failure(400, None, false)]));
    // The first failure the deployment caused: partial outage, no cooldown yet (one is allowed).
    let now = clock.now_ms();
    assert_eq!(live.record_failure(now, 500, None, &POLICY), None);
    actor.do_send(AttemptsDone(vec![failure(500, None, true)]));
    // The second starts a cooldown on the worker; the actor reports it with the request's labels.
    let started = live.record_failure(now, 500, None, &POLICY);
    assert_eq!(started.map(|c| c.until_ms), Some(now + 5_000));
    actor.do_send(AttemptsDone(vec![failure(500, started, true)]));
    settle().await;
    assert_eq!(
        states(&got),
        [
            (HealthState::Healthy, None),
            (HealthState::PartialOutage, None),
            (HealthState::CompleteOutage, Some(500)),
        ]
    );
    assert_eq!(
        got.lock().unwrap()[2].cooled_down.as_ref().unwrap().1,
        ["tenant-a"]
    );
    {
        let shared = shared.lock().unwrap();
        assert_eq!(
            shared.len(),
            1,
            "the cooldown is shared with the other replicas"
        );
        assert_eq!(
            (shared[0].until_ms, shared[0].recovered),
            (now + 5_000, false)
        );
    }
    let snap = actor.send(Snapshot).await.unwrap();
    // The client's 400 is not the deployment's failure.
    assert_eq!((snap.failures, snap.cooldowns), (2, 1));

    // The cooldown ends; nobody probes the deployment: after IDLE_RECOVERY it is healthy again.
    tokio::time::advance(Duration::from_millis(5_002)).await;
    settle().await;
    assert!(!live.cooling(clock.now_ms()));
    assert_eq!(states(&got).len(), 3, "still out until the idle recovery");
    tokio::time::advance(IDLE_RECOVERY + Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(states(&got).last(), Some(&(HealthState::Healthy, None)));

    // A success that proved the deployment back is announced to the other replicas; its latency and the
    // upstream's remaining limits reach the routing state.
    actor.do_send(AttemptsDone(vec![success(true)]));
    settle().await;
    assert!(shared.lock().unwrap().last().unwrap().recovered);
    assert_eq!(live.remaining(), (Some(99), Some(1000)));
    assert_eq!(live.latency(), Some(Duration::from_millis(40)));
}

#[actix_rt::test]
async fn a_cooldown_from_another_replica_is_adopted_and_its_timer_follows_it() {
    tokio::time::pause();
    let clock = Clock::paused(now_ms());
    let live = Arc::new(Live::default());
    let (metrics, got) = Collect::<DeploymentStateChanged>::start();
    let actor = DeploymentActor::new(
        labels(),
        Some(metrics.recipient()),
        live.clone(),
        clock.clone(),
    )
    .start();
    let until = clock.now_ms() + 30_000;
    actor.do_send(AdoptCooldown { until_ms: until });
    // The same cooldown announced twice changes nothing the second time.
    actor.do_send(AdoptCooldown { until_ms: until });
    settle().await;
    assert!(live.cooling(clock.now_ms()));
    assert_eq!(
        states(&got),
        [
            (HealthState::Healthy, None),
            (HealthState::CompleteOutage, None)
        ]
    );
    // Another replica's probe found it back: probation ends here, the state is healthy at once.
    tokio::time::advance(Duration::from_secs(31)).await;
    actor.do_send(RecoveredElsewhere);
    settle().await;
    assert_eq!(states(&got).last(), Some(&(HealthState::Healthy, None)));
    // The old cooldown's idle-recovery timer, firing later, publishes nothing more.
    let before = states(&got).len();
    tokio::time::advance(IDLE_RECOVERY * 2).await;
    settle().await;
    assert_eq!(states(&got).len(), before);
}
