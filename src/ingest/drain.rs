//! The drain: while the database is down, the one task that probes it on a
//! backoff (never once per request) and, once it answers, applies the spool
//! in order, a bounded chunk at a time, until the spool is empty; then it
//! sets the writer back to Up.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::accepted::{Accepted, Content};
use super::applier::{Applier, ApplyOutcome, Item, Room, RoomGauge, Unkept};
use super::spool::{Chunk, Position, SpoolRecord};
use super::writer::Shared;
use crate::sns::confirm::{ConfirmMode, Confirmed};
use crate::sns::verify::VerifiedMessage;

enum Step {
    /// The spool is empty and the database answers the probe: Up again
    /// (it is said to take writes once a write goes in, `Shared::wrote`).
    CaughtUp,
    /// A chunk went in; the next one at once.
    Progress,
    /// The database (or the spool) is not ready: wait, longer each time.
    Wait,
}

pub(super) async fn run(
    shared: Arc<Shared>,
    applier: Arc<tokio::sync::Mutex<Applier>>,
    room: RoomGauge,
    chunk_max: usize,
    (retry_min, retry_max): (Duration, Duration),
    stop: CancellationToken,
) {
    loop {
        if shared.is_up() {
            match watch_room(&shared, &room, (retry_min, retry_max), &stop).await {
                Watched::Stopped => return,
                Watched::Down => continue,
                Watched::Done => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = shared.wake_drain.notified() => continue,
            }
        }
        let mut delay = retry_min;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let mut progress = true;
            while progress {
                match step(&shared, &applier, chunk_max).await {
                    Step::CaughtUp => break,
                    Step::Progress => delay = retry_min,
                    Step::Wait => progress = false,
                }
                if stop.is_cancelled() {
                    return;
                }
            }
            if shared.is_up() {
                break;
            }
            delay = (delay * 2).min(retry_max);
        }
    }
}

enum Watched {
    /// Writes go in, or room would not tell: nothing to watch.
    Done,
    /// The writer went down: the drain's turn.
    Down,
    Stopped,
}

/// Up, but no write has gone in since one failed for room (or since a
/// start on a full disk): looks at the room on the database's disk on the
/// backoff, until there is room, a write goes in, or the writer goes down.
/// Not under the writer's lock: `statvfs` of a folder on a hung network
/// file system would hold the writer too.
async fn watch_room(
    shared: &Shared,
    gauge: &RoomGauge,
    (retry_min, retry_max): (Duration, Duration),
    stop: &CancellationToken,
) -> Watched {
    let mut delay = retry_min;
    loop {
        if !shared.is_up() {
            return Watched::Down;
        }
        if shared.room_needed().is_none() {
            return Watched::Done;
        }
        let generation = shared.failure_generation();
        let room = gauge.read().await;
        shared.room_seen(room, generation);
        if room == Room::Unknown {
            return Watched::Done;
        }
        tokio::select! {
            _ = stop.cancelled() => return Watched::Stopped,
            _ = shared.wake_drain.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(retry_max);
    }
}

async fn step(
    shared: &Arc<Shared>,
    applier: &tokio::sync::Mutex<Applier>,
    chunk_max: usize,
) -> Step {
    let mut applier = applier.lock().await;
    if !applier.schema_ready().await {
        return Step::Wait;
    }
    let read = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            shared
                .spool()
                .as_mut()
                .map(|spool| spool.read_chunk(chunk_max))
                .transpose()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
    };
    let chunk = match read {
        Ok(chunk) => chunk,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the spool; trying again later");
            return Step::Wait;
        }
    };
    let Some(Chunk {
        records,
        ends,
        start,
        end,
    }) = chunk
    else {
        return catch_up(shared, &mut applier).await;
    };
    if records.is_empty() {
        if end == start {
            return catch_up(shared, &mut applier).await;
        }
        // Only damage was left (kept aside by the read): step past it, or
        // the spool would never empty and the drain would meet it forever.
        advance(shared, end).await;
        return Step::Progress;
    }
    let count = records.len();
    let mut items = Vec::with_capacity(count);
    // The record each item came from.
    let mut from = Vec::with_capacity(count);
    for (i, record) in records.iter().enumerate() {
        match accepted_from(record) {
            Ok(accepted) => {
                items.push(Item {
                    accepted,
                    reply: None,
                });
                from.push(i);
            }
            Err(why) => {
                if !applier.set_aside_unreadable(record, &why).await {
                    return Step::Wait;
                }
            }
        }
    }
    let handled_items = items.len();
    let outcome = applier.apply(items, Unkept::Wait).await;
    shared.wrote(&outcome, handled_items);
    let ApplyOutcome {
        left,
        duplicates,
        set_aside,
        ..
    } = outcome;
    // The spool lets go of nothing the disk does not have yet.
    if left.len() < handled_items
        && let Err(e) = applier.settled().await
    {
        tracing::error!(error = %e, "applied spooled messages are not durable; they stay in the spool");
        return Step::Wait;
    }
    // Everything before the first item left waiting is in (or set aside).
    let handled = match left.len() {
        0 => count,
        n => from[handled_items - n],
    };
    if handled > 0 {
        // All of the chunk in: past any damage at its end too.
        let through = if handled == count {
            end
        } else {
            ends[handled - 1]
        };
        let applied = handled_items.saturating_sub(left.len());
        // Messages the spool still held though they were stored (a chunk
        // committed just before a crash, or the rest of a segment the
        // spool had not let go of) are applied again as duplicates: said
        // apart, so is what the database refused (each also on a line of
        // its own). Said before the spool lets go, so that a crash in
        // between leaves no stored message unmentioned: it is said again
        // after the restart, as already stored.
        tracing::info!(
            messages = applied.saturating_sub(duplicates + set_aside),
            already_stored = duplicates,
            set_aside,
            "applied spooled messages"
        );
        advance(shared, through).await;
        shared.metrics.unspooled(applied);
    }
    if left.is_empty() {
        Step::Progress
    } else {
        Step::Wait
    }
}

/// The records up to `end` are in the database: the spool lets go of them.
async fn advance(shared: &Arc<Shared>, end: Position) {
    let shared = shared.clone();
    let advanced = tokio::task::spawn_blocking(move || {
        let mut spool = shared.spool();
        let result = spool.as_mut().map(|s| s.advance(end)).transpose();
        shared
            .metrics
            .spool_pending(spool.as_ref().map_or(0, |s| s.pending_bytes()));
        result
    })
    .await;
    match advanced {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot remove drained spool segments"),
        Err(e) => tracing::error!(error = %e, "cannot remove drained spool segments"),
    }
}

/// Nothing (more) in the spool: once the database answers, Up again,
/// decided under the spool's lock so no message is left behind.
async fn catch_up(shared: &Arc<Shared>, applier: &mut Applier) -> Step {
    if let Err(e) = applier.probe().await {
        tracing::debug!(error = %e, "database still unavailable");
        return Step::Wait;
    }
    let shared = shared.clone();
    let caught_up = tokio::task::spawn_blocking(move || {
        let spool = shared.spool();
        if spool.as_ref().is_some_and(|s| s.has_pending()) {
            return false;
        }
        shared.set_up(true, &spool);
        true
    })
    .await
    .unwrap_or(false);
    if caught_up {
        Step::CaughtUp
    } else {
        Step::Progress
    }
}

/// A spooled record as the writer takes it. The spool holds only messages
/// that were verified before they were written, checksummed, so they are not
/// verified again (the certificate may have left the cache, or the network).
fn accepted_from(record: &SpoolRecord) -> Result<Accepted, String> {
    let message = VerifiedMessage::from_spool(record.body.clone(), record.received_at)
        .map_err(|e| format!("spool record is not an SNS message: {e}"))?;
    let mut accepted = Accepted::new(message, true);
    if let (Content::SubscriptionConfirmation { confirmed }, Some(mode)) =
        (&mut accepted.content, record.confirmed_mode.as_deref())
    {
        *confirmed = <ConfirmMode as clap::ValueEnum>::from_str(mode, true)
            .ok()
            .map(|mode| Confirmed {
                mode,
                subscription_arn: record.subscription_arn.clone(),
            });
    }
    Ok(accepted)
}
