//! The accept loop's limits and backoff, unit by unit (the socket-level tests are in
//! `tests/integration/connections.rs`).

use super::*;

#[test]
fn backoff_grows_to_a_second_and_resets() {
    let mut b = ACCEPT_BACKOFF;
    let delays: Vec<_> = (0..10).map(|_| b.next_wait()).collect();
    assert_eq!(delays[0], Duration::from_millis(5));
    assert_eq!(delays[1], Duration::from_millis(10));
    assert_eq!(*delays.last().unwrap(), Duration::from_secs(1));
    b.reset();
    assert_eq!(b.next_wait(), Duration::from_millis(5));
}

#[test]
fn the_cap_leaves_headroom_below_the_descriptor_limit() {
    let limit = descriptor_limit();
    let max = effective_max_connections(usize::MAX);
    match limit {
        Some(limit) => assert_eq!(max, limit.saturating_sub(DESCRIPTOR_HEADROOM).max(1)),
        None => assert_eq!(max, usize::MAX),
    }
    assert!(effective_max_connections(10) <= 10);
}

#[test]
fn a_new_connection_must_send_its_head_in_time_and_idle_ones_are_closed() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let secs = |activity: &Activity, s: f64| activity.origin + Duration::from_secs_f64(s);

    // New: the head is due 5 s after the accept, bytes or not.
    let activity = Arc::new(Activity::new());
    activity.read();
    assert_eq!(activity.expired_at(&limits, secs(&activity, 4.9)), None);
    assert_eq!(
        activity.expired_at(&limits, secs(&activity, 5.0)),
        Some("header read timeout")
    );

    // In flight: the request timeout's business, not ours.
    let busy = activity.begin();
    assert_eq!(activity.expired_at(&limits, secs(&activity, 100.0)), None);
    // Done: idle for 60 s.
    drop(busy);
    assert_eq!(activity.expired_at(&limits, secs(&activity, 59.0)), None);
    assert_eq!(
        activity.expired_at(&limits, secs(&activity, 60.5)),
        Some("idle timeout")
    );
    // The first byte of the next request, 10 s in: its head is due 5 s later.
    activity.head_since.store(10_000, Ordering::Relaxed);
    assert_eq!(activity.expired_at(&limits, secs(&activity, 14.9)), None);
    assert_eq!(
        activity.expired_at(&limits, secs(&activity, 15.0)),
        Some("header read timeout")
    );
}
