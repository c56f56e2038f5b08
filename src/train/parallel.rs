//! Data parallelism: replicas of one model, each on its own device (and, with several nodes,
//! its own machine), each computing the gradients of a slice of every batch. Burn's collective
//! all-reduce sums their gradients before every optimizer step, so every replica takes the same
//! step from the same weights and they stay identical without ever exchanging weights.
//!
//! Each replica's loss is its rows' summed loss over the whole step's item count (run.rs,
//! `accumulate`), so the summed gradient is the gradient of the step's mean loss: N replicas
//! with a batch of B follow the one-process run with a batch of B (to rounding), whatever N
//! divides.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::cluster::Link;
use crate::lower::LaxModel;

/// One replica's place among all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// Its global rank: node rank × replicas per node + its index on the node.
    pub rank: usize,
    /// How many replicas train together, on every node.
    pub world: usize,
}

impl Replica {
    /// A run on one device.
    pub const ALONE: Replica = Replica { rank: 0, world: 1 };

    /// The replica that logs, validates and writes checkpoints.
    pub fn leads(&self) -> bool {
        self.rank == 0
    }

    /// Keeps each replica's dropout masks its own (0 for the first, so a run of one draws what
    /// it always drew).
    pub fn stream(&self) -> u64 {
        (self.rank as u64) << 40
    }

    /// The rows of a batch of `batch` samples this replica computes: contiguous slices in rank
    /// order whose sizes differ by at most one, together the whole batch.
    pub fn rows(&self, batch: usize) -> Range<usize> {
        batch * self.rank / self.world..batch * (self.rank + 1) / self.world
    }
}

/// The replicas of a run: this node's place among the nodes, its replicas, and Burn's
/// collective settings where there is more than one replica in all.
#[derive(Clone)]
pub struct Topology {
    pub node_rank: usize,
    pub nodes: usize,
    /// Replicas on each node (one per device).
    pub per_node: usize,
    pub collective: Option<CollectiveConfig>,
    /// Between nodes: how the replicas meet the other nodes' round after round.
    pub link: Option<Arc<Link>>,
}

impl Topology {
    /// One replica on one device.
    pub fn single() -> Self {
        Topology::local(1)
    }

    /// `replicas` replicas in this process, no other node.
    pub fn local(replicas: usize) -> Self {
        Topology {
            node_rank: 0,
            nodes: 1,
            per_node: replicas,
            collective: (replicas > 1)
                .then(|| CollectiveConfig::default().with_num_devices(replicas)),
            link: None,
        }
    }

    /// How many replicas train together.
    pub fn world(&self) -> usize {
        self.nodes * self.per_node
    }
}

/// Runs `run` once per device, each a replica in its own thread (or in this one, alone), and
/// returns this node's first replica's result, or the error of the replica that failed first
/// (the others, waiting for it in an all-reduce, are released with an error of their own).
pub fn replicate<B, T>(
    topology: &Topology,
    devices: Vec<B::Device>,
    run: impl Fn(Replica, B::Device, &GradientSync) -> Result<T, String> + Sync,
) -> Result<T, String>
where
    B: AutodiffBackend,
    T: Send,
{
    let world = topology.world();
    let config = &topology.collective;
    if config.is_none() {
        let device = devices.into_iter().next().expect("one device at least");
        return run(Replica::ALONE, device, &GradientSync::Alone);
    }
    let across_nodes = topology.link.is_some();
    let results: Vec<Result<T, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(i, device)| {
                let replica = Replica {
                    rank: topology.node_rank * topology.per_node + i,
                    world,
                };
                let run = &run;
                s.spawn(move || {
                    let _release = ReleaseOnPanic::<B::InnerBackend>(std::marker::PhantomData);
                    let link = topology.link.clone();
                    let joined = GradientSync::join::<B::InnerBackend>(
                        replica,
                        device.clone(),
                        config.clone(),
                        link,
                    );
                    let result = joined.and_then(|sync| {
                        let r = run(replica, device, &sync);
                        // Across nodes, leaving waits on the orchestrator without a time limit;
                        // the process ends instead, which releases everything.
                        if r.is_ok() && !across_nodes {
                            sync.finish::<B::InnerBackend>();
                        }
                        r
                    });
                    if result.is_err() {
                        release_waiting::<B::InnerBackend>();
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a replica panicked".into()))
            })
            .collect()
    });
    let failed = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .find(|e| e.as_str() != ANOTHER_REPLICA_FAILED)
        .cloned();
    match failed {
        Some(e) => Err(e),
        None => results.into_iter().next().expect("one replica at least"),
    }
}

/// A replica that panics releases the others, which would otherwise wait for it forever.
struct ReleaseOnPanic<B: Backend>(std::marker::PhantomData<B>);

impl<B: Backend> Drop for ReleaseOnPanic<B> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            release_waiting::<B>();
        }
    }
}

/// Burn's collective prints its connection attempts to stdout while a node registers, where
/// `--format json` puts its summary: stdout goes to /dev/null meanwhile (once for all of this
/// process's replicas, which register together).
struct QuietStdout;

static QUIET: std::sync::Mutex<(usize, i32)> = std::sync::Mutex::new((0, -1));

impl QuietStdout {
    fn begin() -> QuietStdout {
        let mut q = QUIET.lock().unwrap_or_else(|e| e.into_inner());
        if q.0 == 0 {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            // SAFETY: plain descriptor calls on stdout and a file opened here; on failure
            // stdout is left as it was.
            unsafe {
                let saved = libc::dup(1);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if saved >= 0 && null >= 0 && libc::dup2(null, 1) >= 0 {
                    q.1 = saved;
                }
                if null >= 0 {
                    libc::close(null);
                }
            }
        }
        q.0 += 1;
        QuietStdout
    }
}

impl Drop for QuietStdout {
    fn drop(&mut self) {
        let mut q = QUIET.lock().unwrap_or_else(|e| e.into_inner());
        q.0 -= 1;
        if q.0 == 0 && q.1 >= 0 {
            // SAFETY: puts back the descriptor saved by `begin`.
            unsafe {
                libc::dup2(q.1, 1);
                libc::close(q.1);
            }
            q.1 = -1;
        }
    }
}

/// What the replicas agree on after each step's all-reduce.
pub struct Agreed {
    /// The whole batch's loss (the sum of the replicas' weighted losses).
    pub loss: f64,
    /// Whether any replica was asked to stop (Ctrl-C, SIGTERM): all stop after this step.
    pub stop: bool,
}

/// How a replica's gradients meet the others'.
pub enum GradientSync {
    /// One replica: nothing to exchange.
    Alone,
    /// A peer of Burn's collective, registered under its global rank.
    Collective {
        peer: PeerId,
        /// Between nodes: leaves the collective after each all-reduce and joins it again (see
        /// [`Link`] for why).
        rejoin: Option<Rejoin>,
    },
}

type Rejoin = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

impl GradientSync {
    /// Joins the collective as `replica` on `device` (every local replica must join before
    /// any returns), or stays alone for a run of one.
    pub fn join<B: Backend>(
        replica: Replica,
        device: B::Device,
        config: Option<CollectiveConfig>,
        link: Option<Arc<Link>>,
    ) -> Result<Self, String> {
        let Some(config) = config else {
            return Ok(GradientSync::Alone);
        };
        let peer = PeerId(replica.rank as u32);
        register::<B>(peer, device.clone(), config, link.as_deref())?;
        let rejoin = link.map(|link| {
            let round = AtomicU64::new(0);
            Box::new(move || {
                burn_collective::finish_collective::<B>(peer)
                    .map_err(|e| collective_error(e, "leaving the collective"))?;
                link.barrier(round.fetch_add(1, Ordering::SeqCst) + 1)?;
                register::<B>(peer, device.clone(), link.config()?, Some(&link))
            }) as Rejoin
        });
        Ok(GradientSync::Collective { peer, rejoin })
    }

    /// Sums a tensor over every replica.
    fn exchange<B: Backend>(
        &self,
        tensor: Tensor<B, 1>,
        what: &str,
    ) -> Result<Tensor<B, 1>, String> {
        let GradientSync::Collective { peer, rejoin } = self else {
            return Ok(tensor);
        };
        let primitive = tensor.into_primitive().tensor();
        let summed = burn_collective::all_reduce::<B>(*peer, primitive, ReduceOperation::Sum)
            .map_err(|e| collective_error(e, what))?;
        if let Some(rejoin) = rejoin {
            rejoin()?;
        }
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Sums every replica's gradients, loss and stop request. All gradients travel as one
    /// flat f32 tensor (one all-reduce a step, not one per parameter), in the module's
    /// parameter order, which every replica of the same spec shares.
    pub fn all_reduce<B: AutodiffBackend>(
        &self,
        model: &LaxModel<B>,
        grads: GradientsParams,
        loss: f64,
        stop: bool,
    ) -> Result<(GradientsParams, Agreed), String> {
        if let GradientSync::Alone = self {
            return Ok((grads, Agreed { loss, stop }));
        }
        let mut gather = Gather::<B> {
            grads,
            flat: Vec::new(),
            taken: HashSet::new(),
            _b: std::marker::PhantomData,
        };
        model.visit(&mut gather);
        let Gather {
            mut grads,
            flat,
            taken,
            ..
        } = gather;
        let device = model.devices().into_iter().next().unwrap_or_default();
        let scalars = TensorData::new(vec![loss as f32, stop as u8 as f32], [2]);
        let mut parts = flat;
        parts.push(Tensor::<B::InnerBackend, 1>::from_data(scalars, &device));
        let bucket = Tensor::cat(parts, 0);
        let length = bucket.dims()[0];
        let summed = self.exchange(bucket, "the gradients' all-reduce")?;
        let tail: Vec<f32> = summed
            .clone()
            .slice(length - 2..length)
            .into_data()
            .to_vec()
            .map_err(|e| format!("the all-reduced loss could not be read: {e:?}"))?;
        let mut scatter = Scatter::<B> {
            grads: &mut grads,
            taken: &taken,
            summed,
            at: 0,
        };
        model.visit(&mut scatter);
        let agreed = Agreed {
            loss: f64::from(tail[0]),
            stop: tail[1] > 0.0,
        };
        Ok((grads, agreed))
    }

    /// Leaves the collective (a replica that ends normally).
    pub fn finish<B: Backend>(&self) {
        if let GradientSync::Collective { peer, .. } = self {
            let _ = burn_collective::finish_collective::<B>(*peer);
        }
    }
}

/// Registers with Burn's collective; between nodes, quietly (it prints its connection
/// attempts to stdout) and within the nodes' wait (it retries an absent orchestrator forever).
fn register<B: Backend>(
    peer: PeerId,
    device: B::Device,
    config: CollectiveConfig,
    link: Option<&Link>,
) -> Result<(), String> {
    let _quiet = link.map(|_| QuietStdout::begin());
    let what = "registering with the other nodes' replicas";
    let _deadline = link.map(|l| super::cluster::deadline(what, l.wait));
    burn_collective::register::<B>(peer, device, config)
        .map_err(|e| format!("replica {} could not join the others: {e:?}", peer.0))
}

/// Releases every replica of this process that waits in an all-reduce (each gets an error),
/// when one of them has failed and will never call it.
pub fn release_waiting<B: Backend>() {
    burn_collective::reset_collective::<B>();
}

fn collective_error(e: burn_collective::CollectiveError, what: &str) -> String {
    match e {
        // What the others see after one replica failed and released them: that replica's
        // error is the one reported.
        burn_collective::CollectiveError::LocalServerMissing
        | burn_collective::CollectiveError::RegisterNotFirstOperation => {
            ANOTHER_REPLICA_FAILED.into()
        }
        e => format!("{what} failed: {e:?}"),
    }
}

/// The error of a replica released because another one failed.
pub const ANOTHER_REPLICA_FAILED: &str = "another replica stopped";

/// Takes each parameter's gradient out, flattened, in visiting order.
struct Gather<B: AutodiffBackend> {
    grads: GradientsParams,
    flat: Vec<Tensor<B::InnerBackend, 1>>,
    taken: HashSet<ParamId>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
            self.taken.insert(param.id);
        }
    }
}

/// Puts the summed gradients back, in the same order, each in its parameter's shape. A
/// parameter without a gradient (frozen) took no place in the bucket.
struct Scatter<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    taken: &'a HashSet<ParamId>,
    summed: Tensor<B::InnerBackend, 1>,
    at: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scatter<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.taken.contains(&param.id) {
            return;
        }
        let shape = param.val().shape();
        let n = shape.num_elements();
        let g: Tensor<B::InnerBackend, D> = self
            .summed
            .clone()
            .slice(self.at..self.at + n)
            .reshape(shape);
        self.grads.register(param.id, g);
        self.at += n;
    }
}

/// Every replica's sum of its weights, summed: each replica compares the mean with its own,
/// so replicas that start from different weights (a different spec, seed or checkpoint on
/// some node) are refused before the first step instead of silently drifting apart.
pub fn same_start<B: AutodiffBackend>(
    sync: &GradientSync,
    model: &LaxModel<B>,
    replica: Replica,
) -> Result<(), String> {
    if let GradientSync::Alone = sync {
        return Ok(());
    }
    let mut sum = WeightSum(0.0);
    model.visit(&mut sum);
    let device = model.devices().into_iter().next().unwrap_or_default();
    // One element per replica: a ring all-reduce between nodes splits the tensor among them.
    let n = replica.world;
    let mine = TensorData::new(vec![sum.0 as f32 / n as f32; n], [n]);
    let mine = Tensor::<B::InnerBackend, 1>::from_data(mine, &device);
    let total: f32 = sync
        .exchange(mine, "the replicas' first exchange")?
        .slice(0..1)
        .into_scalar()
        .elem();
    // Each replica put in a world-th of its sum: equal weights sum back to that sum.
    let (mean, own) = (f64::from(total), sum.0);
    if (mean - own).abs() > 1e-4 * own.abs().max(1.0) {
        return Err(format!(
            "replica {} starts from other weights than the others (its weights sum to {own}, \
             the replicas' to {mean} on average): every node must train the same spec from the \
             same seed or checkpoint",
            replica.rank
        ));
    }
    Ok(())
}

struct WeightSum(f64);

impl<B: Backend> ModuleVisitor<B> for WeightSum {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let s: f64 = param.val().sum().into_scalar().elem();
        self.0 += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_batch_once_and_differ_by_at_most_one_row() {
        for batch in 1..20 {
            for world in 1..=batch {
                let mut next = 0;
                let mut sizes = Vec::new();
                for rank in 0..world {
                    let r = Replica { rank, world }.rows(batch);
                    assert_eq!(r.start, next, "batch {batch} world {world}");
                    next = r.end;
                    sizes.push(r.len());
                }
                assert_eq!(next, batch);
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1 && *lo >= 1, "{sizes:?}");
            }
        }
    }
}
