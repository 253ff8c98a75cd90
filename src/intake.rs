//! Limits that keep the public listener answering while clients misbehave:
//! a time limit on reading a request body, a budget for the body bytes held
//! in memory at once, and a cap on connections that fits the process's file
//! descriptors. SNS sends each body whole and at once; what stalls is not
//! SNS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Body bytes held in memory by requests still being read, across the
/// process. A request that would pass it is answered 503 (SNS retries).
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
}

/// A share of the budget; it goes back when dropped.
pub struct BodyShare {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    pub fn share(self: &Arc<Self>) -> BodyShare {
        BodyShare {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

impl BodyShare {
    /// Takes `more` bytes from the budget; false when it is spent.
    pub fn grow(&mut self, more: usize) -> bool {
        let budget = &self.budget;
        let taken = budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let next = held.checked_add(more)?;
                (next <= budget.limit).then_some(next)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }
}

impl Drop for BodyShare {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Raises the soft limit on open files to the hard limit and returns the
/// connection cap that fits in it, keeping room for the database, the
/// spool, certificate fetches and logs.
pub fn connection_cap(wanted: usize) -> usize {
    const RESERVE: u64 = 256;
    let files = raise_open_file_limit();
    let fits = usize::try_from(files.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            open_files = files,
            wanted,
            serving = fits.max(64),
            "the open-file limit is low: HTTP_MAX_CONNECTIONS is lowered to fit (raise `ulimit -n`)"
        );
    }
    wanted.min(fits).max(64)
}

#[cfg(unix)]
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> u64 {
    u64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(10);
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.grow(6));
        assert!(!b.grow(5));
        drop(a);
        assert!(b.grow(5));
    }
}
