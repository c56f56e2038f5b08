//! Training and evaluation of a lowered spec.

pub mod allocator;
pub mod bench;
pub mod checkpoint;
pub mod cluster;
pub mod data;
pub mod default_data;
pub mod digest;
pub mod optimizer;
pub mod parallel;
pub mod pool;
pub mod record;
pub mod run;
pub mod run_dir;
pub mod session;

pub use run::{train, RunPlan, Stop, Summary};
