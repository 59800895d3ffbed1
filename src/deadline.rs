//! Turning a timeout into a deadline without overflow.
//!
//! `Instant::now() + timeout` panics when the sum does not fit (`Duration::MAX`, or any span of
//! centuries). Every public API that takes a `Duration` goes through [`after`] instead: a
//! timeout too large to add to now means no deadline at all, which is what the caller asked
//! for in every way that can be observed.
//!
//! This module must stay a leaf: it depends on nothing else in the crate.

use std::time::{Duration, Instant};

/// The point `timeout` from now, or `None` (wait forever) when that point cannot be
/// represented.
#[inline]
pub(crate) fn after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// [`after`] for an optional timeout: `None` stays "no deadline".
#[inline]
pub(crate) fn after_opt(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_no_deadline() {
        assert_eq!(after(Duration::MAX), None);
        assert_eq!(after_opt(Some(Duration::MAX)), None);
        assert_eq!(after_opt(None), None);
        assert!(after(Duration::from_secs(1)).is_some());
    }
}
