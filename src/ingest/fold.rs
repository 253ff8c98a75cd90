//! What a batch's events do to each address, worked out in memory and in
//! arrival order, so that the batch is written with one statement per table
//! whatever its size: a soft-bounce streak as its bounces and deliveries
//! leave it, and one suppression row per address that stands for all of the
//! batch's events on it, exactly as applying them one after another would.

use crate::store::soft_bounces::Streak;
use crate::store::suppression_writes::SuppressionWrite;
use crate::time::Timestamp;

use super::apply::SoftBouncePolicy;

/// A step of an address's soft-bounce streak, at the event's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Bounce(Timestamp),
    Delivery(Timestamp),
}

/// The streak after `steps` (in arrival order), and for each bounce step
/// (by its position in `steps`) the count it brought the streak to.
pub fn streak(
    mut current: Option<Streak>,
    steps: &[Step],
    policy: SoftBouncePolicy,
) -> (Option<Streak>, Vec<(usize, i64)>) {
    let mut counts = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Bounce(at) => {
                let window_start = at.saturating_sub(policy.window);
                let next = match current {
                    // A streak older than the window starts over.
                    Some(s) if s.first_at >= window_start => Streak {
                        count: s.count + 1,
                        first_at: s.first_at,
                        last_at: s.last_at.max(at),
                    },
                    Some(s) => Streak {
                        count: 1,
                        first_at: at,
                        last_at: s.last_at.max(at),
                    },
                    None => Streak {
                        count: 1,
                        first_at: at,
                        last_at: at,
                    },
                };
                counts.push((i, next.count));
                current = Some(next);
            }
            // A delivery resets the streak, unless its bounces came later.
            Step::Delivery(at) => {
                if current.is_some_and(|s| s.last_at <= at) {
                    current = None;
                }
            }
        }
    }
    (current, counts)
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

    #[test]
    fn a_delivery_that_arrived_before_a_bounce_resets_before_it_counts() {
        let old = Some(Streak {
            count: 2,
            first_at: t(0),
            last_at: t(10),
        });
        // Delivery first, then the bounce: the bounce starts a new streak.
        let (after, counts) = streak(old, &[Step::Delivery(t(20)), Step::Bounce(t(30))], POLICY);
        assert_eq!(counts, [(1, 1)]);
        assert_eq!(after.map(|s| s.count), Some(1));
        // The bounce first: it counts to 3, then the delivery resets.
        let (after, counts) = streak(old, &[Step::Bounce(t(20)), Step::Delivery(t(30))], POLICY);
        assert_eq!(counts, [(0, 3)]);
        assert_eq!(after, None);
        // A delivery older than the streak's last bounce resets nothing.
        let (after, _) = streak(old, &[Step::Delivery(t(5))], POLICY);
        assert_eq!(after, old);
    }

    #[test]
    fn a_streak_older_than_the_window_starts_over() {
        let old = Some(Streak {
            count: 2,
            first_at: t(0),
            last_at: t(10),
        });
        let late = t(15 * 86_400);
        let (after, counts) = streak(old, &[Step::Bounce(late)], POLICY);
        assert_eq!(counts, [(0, 1)]);
        assert_eq!(after.map(|s| (s.count, s.first_at)), Some((1, late)));
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
