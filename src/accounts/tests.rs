use super::*;
use crate::window::Window;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86400)));
    assert_eq!(parse_duration("1mo"), Some(Duration::from_secs(30 * 86400)));
    for bad in ["", "d", "10", "5y", "0s", "-1d"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn windows_count_per_minute() {
    let w = Window::default();
    assert!(w.try_take(10, 1, 2));
    assert!(w.try_take(10, 1, 2));
    assert!(!w.try_take(10, 1, 2));
    assert_eq!(w.current(10), 2);
    w.give_back(10, 1);
    assert_eq!(w.current(10), 1);
    // A new minute starts from zero.
    assert_eq!(w.current(11), 0);
    assert!(w.try_take(11, 1, 1));
    w.add(11, 500);
    assert_eq!(w.current(11), 501);
    w.give_back(10, 1); // an old minute's give-back does nothing
    assert_eq!(w.current(11), 501);
    // Nor does a late add or take for an old minute move the window back.
    w.add(10, 5);
    assert_eq!(w.current(11), 506);
    assert!(w.try_take(10, 1, 1000));
    assert_eq!(w.current(11), 507);
}

#[test]
fn windows_are_exact_under_contention() {
    let w = Arc::new(Window::default());
    let taken = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (w, taken) = (w.clone(), taken.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    if w.try_take(7, 1, 1500) {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(taken.load(Ordering::Relaxed), 1500);
    assert_eq!(w.current(7), 1500);
}

#[test]
fn ledger_tracks_unpersisted() {
    let l = Ledger::new(100, None);
    l.add(5);
    l.add(7);
    assert_eq!(l.spend_micros(), 112);
    assert_eq!(l.take_unpersisted(), 12);
    assert_eq!(l.take_unpersisted(), 0);
    l.reset(Some(1000));
    assert_eq!(l.spend_micros(), 0);
    assert_eq!(l.reset_at(), Some(1000));
    // Spend settled after the last write survives a reset, as the new period's.
    l.add(9);
    l.reset(Some(2000));
    assert_eq!(l.spend_micros(), 9);
    assert_eq!(l.take_unpersisted(), 9);
    // Spend never wraps into a negative number that would lift the budget.
    l.add(i64::MAX);
    l.add(i64::MAX);
    assert_eq!(l.spend_micros(), i64::MAX);
}

#[test]
fn keys_and_names() {
    let k = new_key();
    assert!(k.starts_with("sk-") && k.len() == 35);
    assert_eq!(key_name("sk-abcdefgh"), "sk-...efgh");
    assert_eq!(
        token_of("sk-1234"),
        "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    );
    let h = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b";
    assert_eq!(token_of(h), h);
}

#[test]
fn other_replicas_counts_share_the_limit() {
    let l = Limits::default();
    l.remote.0.set(7, 3);
    assert!(l.take_request(7, 5));
    assert!(l.take_request(7, 5));
    assert!(!l.take_request(7, 5), "3 elsewhere + 2 here = 5");
    assert_eq!(l.requests_used(7), 5);
    // A new minute starts from nothing, and an older minute never overwrites a newer one.
    assert!(l.take_request(8, 5));
    l.remote.0.set(7, 100);
    assert_eq!(l.remote.0.current(8), 0);
    l.remote.1.set(8, 40);
    l.tokens.add(8, 2);
    assert_eq!(l.tokens_used(8), 42);
}
