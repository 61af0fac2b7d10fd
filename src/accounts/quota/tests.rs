use super::*;

#[test]
fn a_lease_admits_within_its_grants_one_ask_at_a_time() {
    let l = Lease::default();
    let m = Span::Minute(5);
    // Nothing granted yet: ask, with no debt.
    assert_eq!(
        l.take(m, 1, 10),
        Room::Ask {
            debt: 0,
            before: 0,
            window: 5
        }
    );
    // Others wait for that ask's answer.
    assert_eq!(l.take(m, 1, 10), Room::Wait);
    l.granted(m, 2, 10);
    l.asked();
    assert_eq!(l.take(m, 1, 10), Room::Yes);
    assert_eq!(l.take(m, 1, 10), Room::Yes);
    assert!(matches!(l.take(m, 1, 10), Room::Ask { before: 2, .. }));
    l.granted(m, 0, 10);
    l.asked();
    assert_eq!(l.take(m, 1, 10), Room::Refused);
    // A raised limit asks again.
    assert!(matches!(l.take(m, 1, 20), Room::Ask { .. }));
    l.asked();
    // A new minute starts empty; an answer for the old one changes nothing.
    assert!(matches!(
        l.take(Span::Minute(6), 1, 10),
        Room::Ask { window: 6, .. }
    ));
    l.asked();
    l.granted(m, 5, 10);
    assert!(matches!(l.take(Span::Minute(6), 1, 10), Room::Ask { .. }));
    assert_eq!(l.used(), 0);
}

#[test]
fn usage_beyond_the_grants_is_reported_once() {
    let l = Lease::default();
    let m = Span::Minute(1);
    l.count(m, 0);
    l.granted(m, 100, 1000);
    assert_eq!(l.room(m, 1000), Room::Yes);
    assert_eq!(l.charge(m, 130), Some((30, 100, 1)));
    l.ended();
    // Reported: the next ask has no debt left.
    assert!(matches!(
        l.room(m, 1000),
        Room::Ask {
            debt: 0,
            before: 130,
            ..
        }
    ));
}

#[test]
fn admissions_while_redis_is_away_are_reported_with_the_next_ask() {
    let l = Lease::default();
    let m = Span::Minute(1);
    l.count(m, 0);
    l.granted(m, 10, 100);
    assert_eq!(l.take(m, 1, 100), Room::Yes);
    // Redis away: counted, not asked; the grant stays.
    l.count(m, 12);
    assert!(matches!(
        l.take(m, 1, 100),
        Room::Ask {
            debt: 3,
            before: 10,
            ..
        }
    ));
    // The ask was never sent: the debt is owed again.
    l.unreported(m, 3);
    l.asked();
    assert!(matches!(
        l.take(m, 1, 100),
        Room::Ask {
            debt: 3,
            before: 10,
            ..
        }
    ));
}

#[test]
fn requests_in_flight_count_across_a_new_window() {
    let l = Lease::default();
    let p = Span::Period(7);
    l.count(p, 0);
    l.granted(p, 100, 1000);
    assert_eq!(l.room(p, 1000), Room::Yes);
    assert_eq!(l.charge(p, 40), None);
    // One in flight at 40 each: 40 + 40 < 100 admits one more, not two.
    assert_eq!(l.room(p, 1000), Room::Yes);
    assert!(matches!(l.room(p, 1000), Room::Ask { .. }));
    // A budget reset moves the lease on; the requests in flight still count there.
    assert!(matches!(l.room(Span::Period(9), 1000), Room::Wait));
}
