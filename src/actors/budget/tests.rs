//! The BudgetActor on a clock the test moves: spend written on flush, a budget period that ends reset at
//! the next flush (in memory, in the store and in the gauges), and records another replica changed read
//! back. The store is a real SQLite file.

use super::*;
use crate::accounts::requests;
use crate::actors::testing::{settle, Collect};
use crate::labels::KeyLabels;
use crate::providers::wire::Usage;
use crate::secret::hash_key;
use crate::store::{Change, RecordRow, SpendFilter};
use crate::units::{micros, now_ms};

async fn store() -> Store {
    let dir = std::env::temp_dir().join(format!(
        "llm-budget-actor-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    Store::connect(None, &dir).await.unwrap()
}

fn event(token: &str) -> SpendEvent {
    SpendEvent {
        id: rand::random(),
        key: Arc::new(KeyLabels {
            hashed_api_key: token.to_owned(),
            ..Default::default()
        }),
        end_user: None,
        model_group: Arc::from("m"),
        deployment: None,
        usage: Usage::new(10, 5),
        spend_micros: 2_500_000,
        ok: true,
        start_ms: 1,
        end_ms: 2,
    }
}

#[actix_rt::test]
async fn flush_reset_and_read_back_on_a_moved_clock() {
    let start = now_ms();
    let clock = Clock::manual(start);
    let (store, accounts) = (store().await, Arc::new(Accounts::default()));
    let (metrics, gauges) = Collect::<BudgetsChanged>::start();
    let actor = BudgetActor::new(
        accounts.clone(),
        store.clone(),
        Some(metrics.recipient()),
        None,
        1000,
    )
    .with_clock(clock.clone())
    .start();

    // A key with a budget of $10 a day, made through the actor as the management API does.
    let body = br#"{"key_alias": "a", "max_budget": 10, "budget_duration": "1d"}"#;
    let made = actor
        .send(Admin(AdminOp::KeyGenerate(requests::parse(body).unwrap())))
        .await
        .unwrap()
        .unwrap();
    let token = hash_key(made["key"].as_str().unwrap());
    let day = 86_400_000;
    let ledger = accounts.keys.get(&token).unwrap().ledger.clone();
    assert_eq!(
        ledger.reset_at(),
        Some(start + day),
        "the period starts on the actor's clock"
    );

    // Spend settled on the request path reaches the store on the next flush, with its log row.
    ledger.add(micros(2.5));
    actor.do_send(SpendLogged(vec![event(&token)]));
    actor.send(Flush).await.unwrap();
    let row = store.get(Table::Keys, &token).await.unwrap().unwrap();
    assert_eq!(row.spend_micros, 2_500_000);
    let filter = SpendFilter {
        api_key: Some(token.clone()),
        ..Default::default()
    };
    let (logs, total) = store.spend_logs(&filter, 10, 0).await.unwrap();
    assert_eq!((total, logs[0].spend), (1, 2.5));
    assert!(
        !actor.send(Unwritten).await.unwrap(),
        "nothing left to write"
    );

    // Not due yet: a flush a second before the period ends keeps the spend.
    clock.set(start + day - 1_000);
    actor.send(Flush).await.unwrap();
    assert_eq!(ledger.spend_micros(), 2_500_000);

    // Due: the next flush starts a new period everywhere, and the gauges hear of it.
    clock.set(start + day + 1_000);
    gauges.lock().unwrap().clear();
    actor.send(Flush).await.unwrap();
    settle().await;
    assert_eq!(ledger.spend_micros(), 0);
    assert_eq!(ledger.reset_at(), Some(start + 2 * day + 1_000));
    let row = store.get(Table::Keys, &token).await.unwrap().unwrap();
    assert_eq!(
        (row.spend_micros, row.budget_reset_at),
        (0, Some(start + 2 * day + 1_000))
    );
    {
        let got = gauges.lock().unwrap();
        let reset: Vec<_> = got.iter().flat_map(|c| &c.gauges).collect();
        assert!(
            reset
                .iter()
                .any(|g| g.spend == 0.0 && g.max_budget == Some(10.0)),
            "{reset:?}"
        );
    }

    // Another replica renames the key and writes spend of its own; the change announced to this one is
    // read back into memory.
    let mut rec = accounts.keys.get(&token).unwrap().rec.clone();
    rec.key_alias = Some("b".into());
    store
        .upsert(RecordRow {
            table: Table::Keys,
            id: &token,
            data: &rec,
            budget_reset_at: ledger.reset_at(),
            team_id: None,
            user_id: None,
        })
        .await
        .unwrap();
    store
        .add_spend("other-replica", &[(Table::Keys, token.clone(), 1_000_000)])
        .await
        .unwrap();
    actor
        .send(Refresh(Change {
            table: Table::Keys,
            id: token.clone(),
        }))
        .await
        .unwrap();
    let entry = accounts.keys.get(&token).unwrap().clone();
    assert_eq!(entry.rec.key_alias.as_deref(), Some("b"));
    assert_eq!(entry.labels.api_key_alias, "b");
    assert_eq!(entry.ledger.spend_micros(), 1_000_000);

    // Deleted there: gone here too, its gauges with it.
    store
        .delete(Table::Keys, std::slice::from_ref(&token))
        .await
        .unwrap();
    gauges.lock().unwrap().clear();
    actor
        .send(Refresh(Change {
            table: Table::Keys,
            id: token.clone(),
        }))
        .await
        .unwrap();
    settle().await;
    assert!(accounts.keys.get(&token).is_none());
    assert!(gauges.lock().unwrap().iter().any(|c| !c.removed.is_empty()));
    store.close().await;
}
