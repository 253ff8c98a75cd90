//! The service's idea of "now".
//!
//! Production reads the system clock. Tests that replay real AWS messages from
//! years ago set a fixed clock through the library API (never a setting), so
//! that freshness and certificate dates are judged as on the day AWS signed.

use std::sync::{Arc, Mutex};

use crate::time::Timestamp;

#[derive(Clone, Default)]
pub struct Clock {
    fixed: Option<Arc<Mutex<Timestamp>>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { fixed: None }
    }

    /// A clock that stays at `at` until moved with [`Clock::set`].
    pub fn fixed(at: Timestamp) -> Self {
        Clock {
            fixed: Some(Arc::new(Mutex::new(at))),
        }
    }

    pub fn set(&self, at: Timestamp) {
        if let Some(fixed) = &self.fixed {
            *fixed.lock().unwrap_or_else(|e| e.into_inner()) = at;
        }
    }

    pub fn now(&self) -> Timestamp {
        match &self.fixed {
            Some(fixed) => *fixed.lock().unwrap_or_else(|e| e.into_inner()),
            None => Timestamp::from_datetime(time::OffsetDateTime::now_utc()),
        }
    }
}
