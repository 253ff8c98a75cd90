//! Handing freed memory back to the system after a request that used a
//! lot of it for a moment.
//!
//! The library leaves the allocator to whoever embeds it. The binary,
//! which chooses mimalloc, says here how to make it give back what it
//! keeps: mimalloc holds freed pages for a while for reuse, and after a
//! burst of batch checks of 10,000 addresses (~10 MiB each, answer
//! included) that left the process at a peak of 50-67 MiB where glibc's
//! allocator peaked at 26-47 (BENCHMARKS.md, "The batch check's memory").

use std::sync::OnceLock;

static GIVE_BACK: OnceLock<fn()> = OnceLock::new();

/// How to give freed memory back, for the rest of the process. The first
/// call decides; later ones are ignored.
pub fn set_give_back(give_back: fn()) {
    let _ = GIVE_BACK.set(give_back);
}

/// Gives freed memory back to the system, if the allocator was told how
/// (see [`set_give_back`]). Costs a walk of the calling thread's heap and
/// of the allocator's shared free memory: for the end of a large request,
/// not every request.
pub fn give_back() {
    if let Some(give_back) = GIVE_BACK.get() {
        give_back();
    }
}

/// Calls [`give_back`] when dropped: owned by what holds a large
/// request's memory last (its answer as it is sent), so that the memory
/// goes back as soon as it is free.
pub struct GiveBackOnDrop;

impl Drop for GiveBackOnDrop {
    fn drop(&mut self) {
        give_back();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    fn other() {}

    #[test]
    fn the_registered_way_runs_on_each_call_and_on_each_drop() {
        give_back();
        set_give_back(count);
        // The first registration stands.
        set_give_back(other);
        let before = CALLS.load(Ordering::SeqCst);
        give_back();
        drop(GiveBackOnDrop);
        drop(Some(GiveBackOnDrop));
        drop(None::<GiveBackOnDrop>);
        assert_eq!(CALLS.load(Ordering::SeqCst) - before, 3);
    }
}
