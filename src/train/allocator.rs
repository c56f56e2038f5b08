//! The C allocator's settings for training: keep freed memory in the process.
//!
//! Every training step frees and allocates the same large tensors again (activations, their
//! gradients, logits). glibc's defaults serve each large one with a fresh `mmap` and return
//! it on free, and trim the heap's top, so each step pays page faults and the kernel's zeroing
//! of the same pages anew (6–7 % of a CPU step in `perf`). With a fixed 32 MiB `mmap`
//! threshold, no trimming and a 256 MiB top pad, freed blocks are reused: a step is 3–8 %
//! faster and the peak resident memory unchanged (BENCHMARKS.md, "Making laxc faster").

/// glibc reads these variables at start; a user who sets one has chosen the allocator's
/// behaviour, and laxc then leaves all three alone.
const USER_SETTINGS: [&str; 3] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Called once, first thing in `main`, before any tensor exists.
pub fn keep_freed_memory() {
    if USER_SETTINGS.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; it is called before the
    // program starts other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
