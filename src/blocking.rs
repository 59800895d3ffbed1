//! A neutral hook through which code that is about to block tells whatever runs the current
//! thread, without knowing what that is.
//!
//! `future/` blocks (a `result`, a `wait`, an `as_completed`), and a thread of a pool that
//! blocks should let its pool keep its parallelism (the thread pool counts it as blocked and
//! may start a spare thread, see `thread/SLEEP.md`). The future layer sits below the pools, so it
//! must not call into them: a pool installs a [`BlockingRegion`] on each of its threads, and
//! [`block_in_place`] asks the current thread's region, if any. This is the shape of tokio's
//! blocking-region context.
//!
//! This module must never know about any backend, and never block itself.

use std::cell::RefCell;
use std::sync::Arc;

/// What a thread's owner does when code on that thread is about to block, and after.
pub(crate) trait BlockingRegion: Send + Sync {
    /// The current thread is about to block.
    fn enter(&self);
    /// The current thread blocked and is running again; called once per [`enter`](Self::enter),
    /// also when the blocking code unwinds.
    fn exit(&self);
}

thread_local! {
    static REGION: RefCell<Option<Arc<dyn BlockingRegion>>> = const { RefCell::new(None) };
}

/// Runs `f`, which is about to block, inside the current thread's blocking region, if one is
/// installed.
pub(crate) fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    let Some(region) = REGION.with_borrow(Option::clone) else {
        return f();
    };
    region.enter();
    struct Exit(Arc<dyn BlockingRegion>);
    impl Drop for Exit {
        fn drop(&mut self) {
            self.0.exit();
        }
    }
    let _exit = Exit(region);
    f()
}

/// Installs `region` on the current thread until the returned guard is dropped, which restores
/// the region that was there before.
pub(crate) fn install(region: Arc<dyn BlockingRegion>) -> Installed {
    Installed { previous: REGION.with_borrow_mut(|r| r.replace(region)) }
}

/// Keeps a region installed; see [`install`].
#[must_use = "the region is uninstalled when the guard drops"]
pub(crate) struct Installed {
    previous: Option<Arc<dyn BlockingRegion>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        REGION.with_borrow_mut(|r| *r = previous);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Count {
        inside: AtomicIsize,
        entered: AtomicUsize,
    }

    impl BlockingRegion for Count {
        fn enter(&self) {
            self.inside.fetch_add(1, Ordering::Relaxed);
            self.entered.fetch_add(1, Ordering::Relaxed);
        }
        fn exit(&self) {
            self.inside.fetch_sub(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn without_a_region_the_code_just_runs() {
        assert_eq!(block_in_place(|| 7), 7);
    }

    #[test]
    fn the_region_sees_enter_and_exit_also_on_unwind_and_is_restored() {
        let outer = Arc::new(Count::default());
        let inner = Arc::new(Count::default());
        let _outer = install(outer.clone());
        {
            let _inner = install(inner.clone());
            block_in_place(|| assert_eq!(inner.inside.load(Ordering::Relaxed), 1));
            let unwound = std::panic::catch_unwind(|| block_in_place(|| panic!("blocked code panics")));
            assert!(unwound.is_err());
            assert_eq!(inner.inside.load(Ordering::Relaxed), 0, "exit ran on unwind");
            assert_eq!(inner.entered.load(Ordering::Relaxed), 2);
        }
        block_in_place(|| ());
        assert_eq!(outer.entered.load(Ordering::Relaxed), 1, "the outer region is back");
        assert_eq!(inner.entered.load(Ordering::Relaxed), 2);
    }
}
