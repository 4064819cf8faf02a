//! Bounds on open event streams, per user and in all: each stream holds a
//! socket, a task's worth of memory and a subscription, so one user (or a
//! page opened in a hundred tabs) cannot take them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many streams may be open.
pub struct StreamLimits {
    total: usize,
    per_user: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_user: HashMap<String, usize>,
}

/// Why a stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    Total(usize),
    PerUser(usize),
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitExceeded::Total(limit) => write!(f, "the dashboard serves {limit} event streams at most; try later"),
            LimitExceeded::PerUser(limit) => write!(f, "you have {limit} event streams open, the most allowed"),
        }
    }
}

/// One open stream; dropping it (the client went away) frees its place.
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    user: String,
}

impl StreamLimits {
    pub fn new(total: usize, per_user: usize) -> Arc<Self> {
        Arc::new(Self { total, per_user, open: Mutex::default() })
    }

    /// A place for one more stream of `user`, if both limits allow it.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<StreamPermit, LimitExceeded> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.total >= self.total {
            return Err(LimitExceeded::Total(self.total));
        }
        let mine = open.by_user.get(user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(LimitExceeded::PerUser(self.per_user));
        }
        open.total += 1;
        open.by_user.insert(user.to_owned(), mine + 1);
        Ok(StreamPermit { limits: self.clone(), user: user.to_owned() })
    }

    /// Streams open now, in all.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).total
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_user.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_user_and_in_all() {
        let limits = StreamLimits::new(3, 2);
        let a1 = limits.acquire("alice").expect("first");
        let _a2 = limits.acquire("alice").expect("second");
        assert_eq!(limits.acquire("alice").err(), Some(LimitExceeded::PerUser(2)));
        let _b1 = limits.acquire("bob").expect("bob's first");
        assert_eq!(limits.acquire("carol").err(), Some(LimitExceeded::Total(3)));
        assert_eq!(limits.open(), 3);

        drop(a1);
        assert_eq!(limits.open(), 2);
        let _c1 = limits.acquire("carol").expect("a place was freed");
        assert_eq!(limits.acquire("alice").err(), Some(LimitExceeded::Total(3)));
    }

    #[test]
    fn a_user_whose_streams_all_closed_is_forgotten() {
        let limits = StreamLimits::new(10, 1);
        let permit = limits.acquire("alice").expect("first");
        drop(permit);
        assert!(limits.open.lock().expect("lock").by_user.is_empty());
        let _again = limits.acquire("alice").expect("again");
    }
}
