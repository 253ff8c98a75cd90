//! What a batch's events do to each address, worked out in memory, so that
//! the batch is written with one statement per table whatever its size:
//! whether its soft bounces fill the window (in the order they happened),
//! and one suppression row per address that stands for all of the batch's
//! events on it, exactly as applying them one after another would.

use crate::store::soft_bounces::Streak;
use crate::store::suppression_writes::SuppressionWrite;
use crate::time::Timestamp;

use super::apply::SoftBouncePolicy;

/// One soft bounce of an address: when it happened, and whether it is one
/// of the batch's new events (an older one is in the log already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounce {
    pub at: Timestamp,
    pub new: bool,
    /// The address's latest delivery before it, if any.
    pub after_delivery: Option<Timestamp>,
}

/// The soft bounces that suppress an address now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// The latest full window's bounces (positions, oldest first).
    pub members: Vec<usize>,
    /// The first bounce of the earliest full window with a new bounce in
    /// it: where the suppression began.
    pub first: usize,
    /// How many times the address is suppressed again, as applying the
    /// bounces one at a time in the order they happened would have done
    /// it: once for each bounce that ends a full window, counting one
    /// stored before only if its window is full now and was not before.
    /// (At least one.)
    pub events: i64,
    /// The size of the first of those windows: the count the row's note
    /// gives, as it was when the row was written.
    pub count: i64,
}

/// What an address's soft bounces amount to, in the order they happened,
/// whatever the order they arrived in: the answer applying them in that
/// order would give. A delivery resets the count: bounces on either side of
/// one (one at the same moment counts as before it) never share a window.
/// Those at or before `removed` (the address's removal from the list by
/// hand) do not count at all. Returns the bounces (positions in `bounces`,
/// oldest first) of the latest window of `policy.window` that holds
/// `policy.limit` counted bounces, one of them new: they suppress the
/// address now (a window without a new bounce did so when it filled, or
/// was answered by a removal since). A delivery after a full window does
/// not undo it, wherever it arrives: a suppression stands until an operator
/// lifts it. Also returns the streak to keep: the counted bounces after
/// `latest_delivery` within the window before the newest.
pub fn soft_bounces(
    bounces: &[Bounce],
    latest_delivery: Option<Timestamp>,
    removed: Option<Timestamp>,
    policy: SoftBouncePolicy,
) -> (Option<Crossing>, Option<Streak>) {
    let mut counted: Vec<usize> = (0..bounces.len())
        .filter(|i| removed.is_none_or(|r| bounces[*i].at > r))
        .collect();
    counted.sort_by_key(|i| (bounces[*i].at, *i));
    let at = |n: usize| bounces[counted[n]].at;
    // Bounces in time order share a latest delivery before them exactly
    // when no delivery came between them.
    let after = |n: usize| bounces[counted[n]].after_delivery;
    let mut crossing: Option<(usize, Vec<usize>)> = None;
    // The first bounce of the earliest window that suppresses: the row's
    // first seen, as applying the bounces in order would have left it.
    let mut first = None;
    let mut end = 0;
    for start in 0..counted.len() {
        let last = at(start).saturating_add(policy.window);
        end = end.max(start);
        while end + 1 < counted.len() && at(end + 1) <= last && after(end + 1) == after(start) {
            end += 1;
        }
        let members = &counted[start..=end];
        // Windows found later end later: keep the newest, from its
        // earliest start (the most bounces).
        if members.len() as i64 >= policy.limit && members.iter().any(|i| bounces[*i].new) {
            first.get_or_insert(members[0]);
            if crossing.as_ref().is_none_or(|(e, _)| *e < end) {
                crossing = Some((end, members.to_vec()));
            }
        }
    }
    let (events, count) = suppressions_again(bounces, &counted, policy);
    let crossing = crossing.zip(first).map(|((_, members), first)| Crossing {
        count: count.unwrap_or(members.len() as i64),
        members,
        first,
        events: events.max(1),
    });
    let current: Vec<Timestamp> = counted
        .iter()
        .map(|i| bounces[*i].at)
        .filter(|t| latest_delivery.is_none_or(|d| *t > d))
        .collect();
    let streak = current.last().map(|&last_at| {
        let from = last_at.saturating_sub(policy.window);
        let within: Vec<Timestamp> = current.iter().copied().filter(|t| *t >= from).collect();
        Streak {
            count: within.len() as i64,
            first_at: within.first().copied().unwrap_or(last_at),
            last_at,
        }
    });
    (crossing, streak)
}

/// For [`Crossing::events`] and [`Crossing::count`]: `counted`, positions
/// in `bounces` in time order. Bounces sharing a latest delivery are
/// neighbours in that order, so one pass keeps each window's start.
fn suppressions_again(
    bounces: &[Bounce],
    counted: &[usize],
    policy: SoftBouncePolicy,
) -> (i64, Option<i64>) {
    let b = |n: usize| &bounces[counted[n]];
    // How many stored before (not new) are among the first n.
    let mut old_before = vec![0i64; counted.len() + 1];
    for n in 0..counted.len() {
        old_before[n + 1] = old_before[n] + i64::from(!b(n).new);
    }
    let (mut events, mut count, mut start) = (0, None, 0);
    for end in 0..counted.len() {
        let from = b(end).at.saturating_sub(policy.window);
        while b(start).at < from || b(start).after_delivery != b(end).after_delivery {
            start += 1;
        }
        let size = (end - start + 1) as i64;
        let old = old_before[end + 1] - old_before[start];
        if size >= policy.limit && (b(end).new || old < policy.limit) {
            events += 1;
            count.get_or_insert(size);
        }
    }
    (events, count)
}

/// One row per address for `writes` (single events, in arrival order), as
/// the upsert's rule applied to each in turn would leave it: the details of
/// the newest (the later on a tie), the earliest first seen, the note of the
/// last event that has one, and the number of events.
pub fn suppressions<'a>(writes: Vec<SuppressionWrite<'a>>) -> Vec<SuppressionWrite<'a>> {
    let mut out: Vec<SuppressionWrite<'a>> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for w in writes {
        let Some(&i) = at.get(w.email.as_str()) else {
            at.insert(w.email.as_str(), out.len());
            out.push(w);
            continue;
        };
        let acc = &mut out[i];
        let first_seen = acc.first_seen.min(w.first_seen);
        let events = acc.events + w.events;
        let note = w.note.clone().or_else(|| acc.note.take());
        if w.last_seen >= acc.last_seen {
            *acc = w;
        }
        acc.first_seen = first_seen;
        acc.events = events;
        acc.note = note;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::EmailAddress;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000).expect("time")
    }

    const POLICY: SoftBouncePolicy = SoftBouncePolicy {
        limit: 3,
        window: time::Duration::days(14),
    };

    fn bounces(days: &[(i64, bool)]) -> Vec<Bounce> {
        delivered_on(days, &[])
    }

    /// The bounces of `days`, with deliveries on `deliveries` (days).
    fn delivered_on(days: &[(i64, bool)], deliveries: &[i64]) -> Vec<Bounce> {
        days.iter()
            .map(|(d, new)| Bounce {
                at: t(d * 86_400),
                new: *new,
                after_delivery: deliveries
                    .iter()
                    .filter(|x| *x < d)
                    .max()
                    .map(|x| t(x * 86_400)),
            })
            .collect()
    }

    #[test]
    fn the_order_of_arrival_does_not_change_the_count() {
        // Three within 14 days, whichever arrived last: suppressed.
        let close = [(0, false), (5, false), (13, false)];
        for newest in 0..3 {
            let mut list = close;
            list[newest].1 = true;
            let (crossing, streak) = soft_bounces(&bounces(&list), None, None, POLICY);
            assert_eq!(
                crossing.map(|c| c.members),
                Some(vec![0, 1, 2]),
                "new {newest}"
            );
            assert_eq!(streak.map(|s| (s.count, s.first_at)), Some((3, t(0))));
        }
        // Dated 0, -30 and -60 days (or 0, -13, -20), in any order: no two
        // weeks hold three of them.
        for days in [[0, -30, -60], [0, -13, -20], [-60, -30, 0], [-20, 0, -13]] {
            let list: Vec<(i64, bool)> = days.iter().map(|d| (*d, true)).collect();
            let (crossing, streak) = soft_bounces(&bounces(&list), None, None, POLICY);
            assert_eq!(crossing, None, "{days:?}");
            assert_eq!(streak.map(|s| s.last_at), Some(t(0)));
        }
    }

    #[test]
    fn a_delivery_parts_the_bounces_before_it_from_those_after() {
        let day = |d: i64| Some(t(d * 86_400));
        let three = [(1, true), (3, true), (5, true)];
        // A delivery at day 2, whenever it arrived: two count after it.
        let (crossing, streak) = soft_bounces(&delivered_on(&three, &[2]), day(2), None, POLICY);
        assert_eq!(crossing, None);
        assert_eq!(
            streak.map(|s| (s.count, s.first_at)),
            Some((2, t(3 * 86_400)))
        );
        // A delivery after all three (one at the same moment as the newest
        // counts as after it): they filled the window before it, as they
        // would have had they arrived first. The streak starts afresh.
        for delivered in [5, 9] {
            let list = delivered_on(&three, &[delivered]);
            let (crossing, streak) = soft_bounces(&list, day(delivered), None, POLICY);
            assert_eq!(
                crossing.map(|c| c.members),
                Some(vec![0, 1, 2]),
                "day {delivered}"
            );
            assert_eq!(streak, None);
        }
        // Two before a delivery, two after: no three without one between.
        let four = [(1, true), (3, true), (5, true), (6, true)];
        let (crossing, streak) = soft_bounces(&delivered_on(&four, &[4]), day(4), None, POLICY);
        assert_eq!(crossing, None);
        assert_eq!(streak.map(|s| s.count), Some(2));
        // A removal by hand: nothing at or before it counts.
        assert_eq!(soft_bounces(&bounces(&three), None, day(1), POLICY).0, None);
    }

    #[test]
    fn a_window_full_before_this_batch_suppresses_only_with_a_new_bounce_in_it() {
        // Filled (and answered) long ago; a new bounce 20 days later.
        let list = bounces(&[(0, false), (1, false), (2, false), (22, true)]);
        let (crossing, streak) = soft_bounces(&list, None, None, POLICY);
        assert_eq!(crossing, None);
        assert_eq!(streak.map(|s| s.count), Some(1));
        // A new one inside that window fills it again.
        let list = bounces(&[(0, false), (1, false), (2, false), (3, true)]);
        assert_eq!(
            soft_bounces(&list, None, None, POLICY).0.map(|c| c.members),
            Some(vec![0, 1, 2, 3])
        );
        // Exactly the window apart still counts.
        let list = bounces(&[(0, true), (7, true), (14, true)]);
        assert_eq!(
            soft_bounces(&list, None, None, POLICY).0.map(|c| c.members),
            Some(vec![0, 1, 2])
        );
    }

    #[test]
    fn the_row_begins_where_the_earliest_full_window_began() {
        // The outside trial's bounces 15, 13, 2 and half a day ago in a
        // 14-day window, doubled to whole days: 30, 26, 4 and 1 day ago in
        // 28. The one 26 days ago is new; in the order they happened, the
        // first three filled a window before the last three did.
        let list = bounces(&[
            (-15 * 2, false),
            (-13 * 2, true),
            (-2 * 2, false),
            (-1, false),
        ]);
        let policy = SoftBouncePolicy {
            limit: 3,
            window: time::Duration::days(28),
        };
        let crossing = soft_bounces(&list, None, None, policy).0.expect("full");
        assert_eq!(crossing.members, vec![1, 2, 3], "the latest window");
        assert_eq!(crossing.first, 0, "began 30 days ago");
    }

    #[test]
    fn each_bounce_that_ends_a_full_window_suppresses_once_more() {
        let events = |list: &[(i64, bool)]| {
            soft_bounces(&bounces(list), None, None, POLICY)
                .0
                .map(|c| (c.events, c.count))
        };
        // Six new of a new address: the row at the third, then once each.
        let six: Vec<(i64, bool)> = (0..6).map(|d| (d, true)).collect();
        assert_eq!(events(&six), Some((4, 3)));
        // Listed by three before; five more in its window: five events.
        let mut more = vec![(0, false), (1, false), (2, false)];
        more.extend((3..8).map(|d| (d, true)));
        assert_eq!(events(&more), Some((5, 4)));
        // A new one older than two stored: the newer stored one ends the
        // window it fills, once.
        assert_eq!(events(&[(5, false), (6, false), (1, true)]), Some((1, 3)));
        // Three stored that filled a window before, a new one older than
        // all: the window ending at the second stored is full only now
        // (one event); the one ending at the third was full before.
        assert_eq!(
            events(&[(1, false), (2, false), (3, false), (0, true)]),
            Some((1, 3))
        );
    }

    fn write<'a>(
        email: &'a EmailAddress,
        at: i64,
        reason: &'a str,
        note: Option<&str>,
    ) -> SuppressionWrite<'a> {
        SuppressionWrite {
            email,
            reason,
            bounce_type: None,
            bounce_subtype: None,
            complaint_feedback_type: None,
            diagnostic_code: None,
            first_seen: t(at),
            last_seen: t(at),
            events: 1,
            ses_message_id: None,
            sns_message_id: None,
            source: "test",
            note: note.map(str::to_owned),
        }
    }

    #[test]
    fn one_row_per_address_as_applying_each_in_turn_would_leave_it() {
        let a = EmailAddress::parse("a@example.com").expect("address");
        let b = EmailAddress::parse("b@example.com").expect("address");
        let folded = suppressions(vec![
            write(&a, 20, "bounce", Some("first")),
            write(&b, 5, "bounce", None),
            write(&a, 10, "complaint", None),
            write(&a, 20, "complaint", None),
        ]);
        assert_eq!(folded.len(), 2);
        let row = &folded[0];
        // The newest wins, the later on a tie; older ones only widen.
        assert_eq!((row.reason, row.events), ("complaint", 3));
        assert_eq!((row.first_seen, row.last_seen), (t(10), t(20)));
        assert_eq!(row.note.as_deref(), Some("first"));
        assert_eq!(folded[1].email, &b);
    }
}
