//! The allocator laxc runs on: mimalloc, for every allocation of the process (a global
//! allocator declared here, so the binary, the tests and the benchmarks all run on it), told
//! to keep the memory it frees.
//!
//! Why: a training step frees and allocates the same tensors again, thousands of them,
//! forward and backward, from both threads of the pool. glibc's malloc gave each large free a
//! merge with its neighbours (`_int_free`, `malloc_consolidate`: 4 % of a vit-svd step's
//! samples in `perf`), took an arena's lock where a buffer freed on one thread came from the
//! other, and handed back a block other than the one just freed, so a kernel's output landed
//! in memory out of cache. mimalloc frees to per-thread lists without a lock and reuses the
//! block freed last. Kept memory: by default mimalloc returns freed pages to the system 10 ms
//! later, so each step's forward pass faulted its activations' pages in again (a LLaMA-60M
//! step's forward pass 220 → 250–430 ms); with purging off, what a step freed is there for the
//! next, as glibc was told to keep it before (`M_TRIM_THRESHOLD`). BENCHMARKS.md, attempt 55:
//! a LLaMA-60M step 0.62× as long, the process's peak 8–12 % larger there and 45–65 MiB
//! larger on the tiny ViTs (the LLaMA bench specs' unchanged). Version 2 of mimalloc: version 3 held 15–30 MiB more on the tiny
//! models at the same speed.

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 2's `mi_option_purge_delay` (its `mimalloc.h`, the 16th option; the sys crate
/// names no constant for it): milliseconds before freed memory is returned, −1 never. The
/// test checks its default, 10, which no neighbouring option has.
const PURGE_DELAY: mi_option_t = 15;

/// The environment variable mimalloc reads the same setting from: a user who sets it has
/// chosen, and laxc leaves it alone.
const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// Called first thing in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_VARIABLE).is_some() {
        return;
    }
    // SAFETY: setting an option is a store mimalloc allows at any time.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    /// The purge delay mimalloc runs with now.
    fn purge_delay() -> i64 {
        // SAFETY: reading an option.
        unsafe { mi_option_get(PURGE_DELAY) as i64 }
    }

    /// Option 15 is the purge delay (its documented default, 10 ms, until laxc turns purging
    /// off), and `keep_freed_memory` turns it off. No other test of this binary calls it.
    #[test]
    fn freed_memory_is_kept() {
        if std::env::var_os(PURGE_DELAY_VARIABLE).is_some() {
            return; // the user's setting, which laxc keeps
        }
        assert_eq!(purge_delay(), 10, "option 15 is not mimalloc's purge delay");
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
