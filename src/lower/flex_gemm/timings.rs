//! Every product's time, by shape and by how it ran, while recording is on (`laxc bench
//! --products`): which products a training step spends its time in, and at what rate, to find
//! the next one worth speeding up (BENCHMARKS.md, attempts 66 and 67 were found this way).
//! Off, a product pays one relaxed load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static RECORDING: AtomicBool = AtomicBool::new(false);
static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

/// What identifies a product for the table: its sizes, its operands' layouts, and how it ran.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ProductShape {
    /// Products in the batch (attention's heads), each (m × k) by (k × n).
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// `a` read through a transposed view (its rows adjacent), as in a weight's gradient `xᵀ · g`.
    pub a_transposed: bool,
    /// `b` read through a transposed view (its columns not adjacent), as in `g · wᵀ`.
    pub b_transposed: bool,
    /// Added into a gradient already there (`matmul_add`) rather than written.
    pub adds_into: bool,
    /// How it ran: a batch one product per thread, depth halves, blocks of rows or columns,
    /// gemm's own threads, one thread.
    pub path: &'static str,
}

impl ProductShape {
    /// Multiply-adds times two.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.k * self.n) as f64
    }
}

/// One product's call and how long it took.
#[derive(Clone, Debug)]
pub struct Call {
    pub shape: ProductShape,
    pub seconds: f64,
}

/// Starts recording every product from now on, from a clean slate.
pub fn start() {
    calls().clear();
    RECORDING.store(true, Ordering::Relaxed);
}

/// Stops recording, and hands over what was recorded since [`start`].
pub fn stop() -> Vec<Call> {
    RECORDING.store(false, Ordering::Relaxed);
    std::mem::take(&mut *calls())
}

pub(super) fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

pub(super) fn record(shape: ProductShape, seconds: f64) {
    calls().push(Call { shape, seconds });
}

/// The calls, whether or not a thread panicked while holding them (a list stays valid).
fn calls() -> std::sync::MutexGuard<'static, Vec<Call>> {
    CALLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
