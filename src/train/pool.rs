//! The CPU backend's threads held awake through a job (`session::dispatch`).
//!
//! Flex's loops, gemm and laxc's kernels fork their parallel work into rayon's global pool. A
//! thread of the pool with nothing to do yields a few dozen times and then sleeps, and the next
//! parallel op must wake it: a system call and, on a virtual machine, an interrupt between
//! processors, on the critical path. A training step is hundreds of small parallel ops with
//! serial work between them (autodiff's bookkeeping, Flex's serial element-wise ops), and each
//! gap longer than those yields put the other threads to sleep: about 140 context switches a
//! step on the tiny LLaMA, and a LaX pathway's serial add or norm added two or three more
//! (BENCHMARKS.md, attempt 35). Here every other thread of the pool runs a keeper for the
//! length of the job, which takes the pool's work as it comes (`rayon::yield_now`), yields the
//! processor between looks (to any other process ready to run there), and backs off to sleeps
//! (growing from 0.2 to 5 ms) only when no work has come for 2 ms (a checkpoint being written,
//! a validation's data being read), so that a long serial phase does not hold a core busy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a keeper looks for work without finding any before it backs off.
const SPIN_FOR: Duration = Duration::from_millis(2);
/// How long a backed-off keeper first sleeps between looks for work; each look that finds
/// none doubles it, up to [`LONGEST_NAP`] (about 200 looks a second while a job waits on
/// something else for long), and work found starts over.
const NAP: Duration = Duration::from_micros(200);
const LONGEST_NAP: Duration = Duration::from_millis(5);

/// How many keepers are running, in all pools.
static KEEPERS: AtomicUsize = AtomicUsize::new(0);

/// Runs `work` on a thread of rayon's global pool, with the pool's other threads held awake
/// until it returns (or unwinds).
pub fn run_awake<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        let runner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            scope.spawn(move |_| keep_awake(done, runner));
        }
        // Set on return and on unwinding alike: the scope waits for the keepers.
        let _finish = Finish(&done);
        work()
    })
}

/// Sets its flag when dropped.
struct Finish<'a>(&'a AtomicBool);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Takes the pool's work as it comes until `done`. On the thread that runs the job (which may
/// pick a keeper up while it waits for its own forked work) it returns at once.
fn keep_awake(done: &AtomicBool, runner: Option<usize>) {
    if rayon::current_thread_index() == runner {
        return;
    }
    KEEPERS.fetch_add(1, Ordering::Relaxed);
    let mut last_work = Instant::now();
    let mut nap = NAP;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            last_work = Instant::now();
            nap = NAP;
        } else if last_work.elapsed() < SPIN_FOR {
            // Yielding, not spinning in place: another process that is ready to run on this
            // core gets it (rayon's own idle threads yield the same way before they sleep).
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(LONGEST_NAP);
        }
    }
    KEEPERS.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins until `ready`, failing after ten seconds.
    fn wait_for(what: &str, ready: impl Fn() -> bool) {
        let waited = Instant::now();
        while !ready() {
            assert!(waited.elapsed() < Duration::from_secs(10), "{what}");
            std::hint::spin_loop();
        }
    }

    /// Every other thread of the pool runs a keeper while the job runs, and none after; a
    /// keeper runs the pool's work (the second half of a `join` whose first half waits for
    /// it, so that the job's own thread cannot), and the job's result comes back; a panicking
    /// job unwinds out of `run_awake` instead of leaving the keepers spinning.
    #[test]
    fn keepers_do_the_work_and_let_the_job_end() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool");
        let answer = pool.install(|| {
            run_awake(|| {
                wait_for("no keepers came", || KEEPERS.load(Ordering::Relaxed) == 2);
                let taken = AtomicBool::new(false);
                let ((), thread) = rayon::join(
                    || wait_for("no keeper took the work", || taken.load(Ordering::Acquire)),
                    || {
                        taken.store(true, Ordering::Release);
                        rayon::current_thread_index()
                    },
                );
                assert_ne!(thread, rayon::current_thread_index());
                42
            })
        });
        assert_eq!(answer, 42);
        assert_eq!(KEEPERS.load(Ordering::Relaxed), 0, "keepers left running");
        let unwound =
            pool.install(|| std::panic::catch_unwind(|| run_awake(|| panic!("a failing job"))));
        assert!(unwound.is_err());
    }
}
