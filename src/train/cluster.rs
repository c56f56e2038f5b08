//! Several machines: before training, every node meets the coordinator (node rank 0, which
//! listens at `--coordinator HOST:PORT`), which admits them only if they train the same spec,
//! options and data with as many replicas each; then the nodes stay connected to it while they
//! train, so that a node that dies or fails stops every other one with one line naming it,
//! instead of leaving them waiting in an all-reduce.
//!
//! This is the control plane only: gradients travel through Burn's collective (its
//! orchestrator, which the coordinator also starts, and each node's data service).

use burn_collective::CollectiveConfig;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a node says it is alive, and how long a silence means it is lost (a machine
/// that loses power closes no connection).
const PING_EVERY: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_secs(20);

/// Where this node stands among the others (`--nodes`, `--node-rank`, `--coordinator`).
#[derive(Debug, Clone)]
pub struct NodePlan {
    pub nodes: usize,
    pub rank: usize,
    /// HOST:PORT of node rank 0, as every node reaches it.
    pub coordinator: String,
    /// How long nodes wait for each other to start.
    pub wait: Duration,
}

/// What must be equal on every node: a node is admitted only if its identity is the
/// coordinator's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub nodes: usize,
    pub replicas: usize,
    /// SHA-256 of the spec, its resolved options (the devices left out) and its data files.
    pub fingerprint: String,
    pub version: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Message {
    Hello {
        rank: usize,
        identity: Identity,
    },
    Welcome {
        orchestrator: String,
    },
    Refused {
        why: String,
    },
    Ping,
    /// The sender finished normally: its connection closing is not a loss.
    Done,
    Failed {
        why: String,
    },
    Lost {
        rank: usize,
        address: String,
        why: String,
    },
    /// A node has finished round `round` of the collective (left it after an all-reduce).
    Round {
        round: u64,
    },
    /// Every node has: the next round may begin.
    Go {
        round: u64,
    },
}

/// A node admitted among the others, connected to them until it is done.
pub struct Joined {
    /// What the node's replicas need to meet the other nodes' in Burn's collective.
    pub link: Arc<Link>,
    peers: Vec<Peer>,
    finished: Arc<AtomicBool>,
}

/// How a node's replica meets the others in Burn's collective, round after round.
///
/// Burn 0.21's collective completes one all-reduce between nodes per registration: its
/// `SyncService` never clears the list of nodes that reached the end of an all-reduce, so the
/// second all-reduce of a registration waits forever. So each all-reduce is a round of its
/// own: the replica leaves the collective after it, waits at this barrier until every node
/// has left (the orchestrator numbers nodes by how many are registered, so no node may come
/// back before all have left), and registers again with a fresh data-service port.
pub struct Link {
    nodes: usize,
    replicas: usize,
    orchestrator: String,
    /// The address the other nodes reach this one by.
    host: String,
    pub wait: Duration,
    coordinator: bool,
    /// The coordinator's connection (a node) or every node's (the coordinator).
    outs: Vec<Arc<Mutex<TcpStream>>>,
    rounds: Arc<Rounds>,
}

/// The last round each other node finished (the coordinator), or the last round the
/// coordinator let begin (a node).
#[derive(Default)]
pub(crate) struct Rounds {
    last: Mutex<Vec<u64>>,
    moved: std::sync::Condvar,
}

impl Rounds {
    fn new(slots: usize) -> Arc<Rounds> {
        Arc::new(Rounds {
            last: Mutex::new(vec![0; slots]),
            moved: std::sync::Condvar::new(),
        })
    }

    fn set(&self, slot: usize, round: u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last[slot] = last[slot].max(round);
        self.moved.notify_all();
    }

    /// Waits until every slot has reached `round`; false after `wait`.
    fn reached(&self, round: u64, wait: Duration) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (_last, timeout) = self
            .moved
            .wait_timeout_while(last, wait, |l| l.iter().any(|&r| r < round))
            .unwrap_or_else(|e| e.into_inner());
        !timeout.timed_out()
    }
}

impl Link {
    /// The collective's settings for the next registration: this node's replicas, the node
    /// count, the orchestrator, and a data service on a port free now.
    pub fn config(&self) -> Result<CollectiveConfig, String> {
        let port = free_port()?;
        let parse = |s: String| s.parse::<burn_communication::Address>().expect("any text");
        Ok(CollectiveConfig::default()
            .with_num_devices(self.replicas)
            .with_num_nodes(self.nodes as u32)
            .with_global_address(parse(self.orchestrator.clone()))
            .with_node_address(parse(format!("ws://{}:{port}", url_host(&self.host))))
            .with_data_service_port(port))
    }

    /// Returns once every node has finished round `round`.
    pub fn barrier(&self, round: u64) -> Result<(), String> {
        let late = || {
            format!(
                "the other nodes did not finish round {round} within {} s",
                self.wait.as_secs()
            )
        };
        if self.coordinator {
            if !self.rounds.reached(round, self.wait) {
                return Err(late());
            }
            for out in &self.outs {
                let _ = send(out, &Message::Go { round });
            }
            return Ok(());
        }
        send(&self.outs[0], &Message::Round { round })
            .map_err(|e| format!("cannot reach the coordinator: {e}"))?;
        match self.rounds.reached(round, self.wait) {
            true => Ok(()),
            false => Err(late()),
        }
    }
}

/// The other end of one control connection: the coordinator for a node, each node for the
/// coordinator.
struct Peer {
    rank: usize,
    address: SocketAddr,
    out: Arc<Mutex<TcpStream>>,
    done: Arc<AtomicBool>,
}

impl Joined {
    /// A node admitted: its control connections watched, and what its replicas need to meet
    /// the others' (`orchestrator`; `host`, the address the others reach this node by).
    fn new(
        plan: &NodePlan,
        replicas: usize,
        orchestrator: String,
        host: String,
        connections: Vec<(Peer, TcpStream)>,
    ) -> Joined {
        let coordinator = plan.rank == 0;
        let finished = Arc::new(AtomicBool::new(false));
        let rounds = Rounds::new(connections.len());
        let peers = watch(connections, &finished, coordinator, &rounds);
        let link = Link {
            nodes: plan.nodes,
            replicas,
            orchestrator,
            host,
            wait: plan.wait,
            coordinator,
            outs: peers.iter().map(|p| p.out.clone()).collect(),
            rounds,
        };
        Joined {
            link: Arc::new(link),
            peers,
            finished,
        }
    }

    /// Tells the others this node finished normally; the coordinator then waits (a bounded
    /// time) for every node to say the same, keeping Burn's orchestrator up until they have.
    pub fn done(self) {
        self.finished.store(true, Ordering::SeqCst);
        for p in &self.peers {
            let _ = send(&p.out, &Message::Done);
        }
        if self.link.coordinator {
            let until = Instant::now() + SILENCE;
            while Instant::now() < until
                && !self.peers.iter().all(|p| p.done.load(Ordering::SeqCst))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Tells the others why this node stops, so that they say it too.
    pub fn failed(self, why: &str) {
        self.finished.store(true, Ordering::SeqCst);
        for p in &self.peers {
            let _ = send(
                &p.out,
                &Message::Failed {
                    why: why.to_string(),
                },
            );
        }
    }
}

/// Stops this process with one line if `what` has not happened within `wait` (Burn's
/// registration retries an unreachable orchestrator forever): met when the guard is dropped.
pub fn deadline(what: &'static str, wait: Duration) -> Deadline {
    let (met, watched) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // Met (or the guard dropped) ends the wait at once: no sleeping thread is left behind.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watched.recv_timeout(wait) {
            stop_process(&format!(
                "{what} did not happen within {} s",
                wait.as_secs()
            ));
        }
    });
    Deadline(met)
}

/// Met when dropped.
pub struct Deadline(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

/// Meets the other nodes: the coordinator admits them, a node asks to be admitted.
pub fn join(plan: &NodePlan, identity: Identity) -> Result<Joined, String> {
    quiet_logs();
    match plan.rank {
        0 => coordinate(plan, identity),
        _ => ask(plan, identity),
    }
}

/// Burn's servers install a subscriber that logs at INFO to stdout unless one exists, and they
/// log a node's expected end as errors (closed sockets): laxc says what went wrong in its own
/// words. RUST_LOG=burn_collective=info shows what they say, on stderr.
fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

fn coordinate(plan: &NodePlan, identity: Identity) -> Result<Joined, String> {
    let at = &plan.coordinator;
    let listener = TcpListener::bind(at).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {at}: the port is in use (another run?); choose another with \
             --coordinator HOST:PORT"
        ),
        _ => format!("cannot listen on {at} (--coordinator): {e}"),
    })?;
    let host = host_of(at)?;
    let orchestrator_port = free_port()?;
    start_orchestrator(orchestrator_port)?;
    let members = admit(&listener, plan, &identity)?;
    let orchestrator = format!("ws://{}:{orchestrator_port}", url_host(&host));
    let welcome = Message::Welcome {
        orchestrator: orchestrator.clone(),
    };
    for (_, stream, _) in &members {
        send_on(stream, &welcome)?;
    }
    let connections = members
        .into_iter()
        .map(|(rank, stream, address)| connect(rank, stream, address))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Joined::new(
        plan,
        identity.replicas,
        orchestrator,
        host,
        connections,
    ))
}

/// Accepts the other nodes' hellos until all have come, each checked against this node's
/// identity; on any mismatch every node that came is told why, and so is the caller.
fn admit(
    listener: &TcpListener,
    plan: &NodePlan,
    identity: &Identity,
) -> Result<Vec<(usize, TcpStream, SocketAddr)>, String> {
    let deadline = Instant::now() + plan.wait;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {}: {e}", plan.coordinator))?;
    let mut members: Vec<(usize, TcpStream, SocketAddr)> = Vec::new();
    let refuse_all = |members: &[(usize, TcpStream, SocketAddr)], why: String| {
        for (_, s, _) in members {
            let _ = send_on(s, &Message::Refused { why: why.clone() });
        }
        why
    };
    while members.len() + 1 < plan.nodes {
        let (stream, address) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let why = missing(plan, &members);
                    return Err(refuse_all(&members, why));
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(format!("cannot accept a node on {}: {e}", plan.coordinator)),
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(SILENCE));
        let (rank, theirs) = match read_message(&stream) {
            Ok(Message::Hello { rank, identity }) => (rank, identity),
            // Something else knocked on the port: not a node.
            _ => continue,
        };
        members.push((rank, stream, address));
        if let Err(why) = admissible(rank, &theirs, identity, &members, address) {
            return Err(refuse_all(&members, why));
        }
    }
    Ok(members)
}

/// Why the node of rank `rank` (its identity `theirs`) cannot train with this one.
fn admissible(
    rank: usize,
    theirs: &Identity,
    ours: &Identity,
    members: &[(usize, TcpStream, SocketAddr)],
    address: SocketAddr,
) -> Result<(), String> {
    let node = format!("node rank {rank} ({address})");
    if theirs.nodes != ours.nodes {
        return Err(format!(
            "{node} was started with --nodes {} but node rank 0 with --nodes {}",
            theirs.nodes, ours.nodes
        ));
    }
    if rank == 0 || rank >= ours.nodes {
        return Err(format!(
            "{node}: --node-rank must be from 1 to {} on the other nodes (0 is the coordinator)",
            ours.nodes - 1
        ));
    }
    if members.iter().filter(|(r, _, _)| *r == rank).count() > 1 {
        return Err(format!("two nodes were started with --node-rank {rank}"));
    }
    if theirs.version != ours.version {
        return Err(format!(
            "{node} runs laxc {} but node rank 0 runs laxc {}",
            theirs.version, ours.version
        ));
    }
    if theirs.replicas != ours.replicas {
        return Err(format!(
            "{node} has {} replicas (--device) but node rank 0 has {}: every node needs as many",
            theirs.replicas, ours.replicas
        ));
    }
    if theirs.fingerprint != ours.fingerprint {
        return Err(format!(
            "{node} trains a different spec, options or data than node rank 0: start every \
             node with the same spec, --set options and data files"
        ));
    }
    Ok(())
}

fn missing(plan: &NodePlan, members: &[(usize, TcpStream, SocketAddr)]) -> String {
    let absent: Vec<String> = (1..plan.nodes)
        .filter(|r| !members.iter().any(|(m, _, _)| m == r))
        .map(|r| r.to_string())
        .collect();
    format!(
        "node rank {} did not join within {} s (waiting at {}): start it with --coordinator {} \
         --nodes {}",
        absent.join(", "),
        plan.wait.as_secs(),
        plan.coordinator,
        plan.coordinator,
        plan.nodes
    )
}

fn ask(plan: &NodePlan, identity: Identity) -> Result<Joined, String> {
    let at = &plan.coordinator;
    let addresses = at
        .to_socket_addrs()
        .map_err(|e| format!("--coordinator {at}: {e} (expected HOST:PORT)"))?
        .collect::<Vec<SocketAddr>>();
    if addresses.is_empty() {
        return Err(format!("--coordinator {at} names no address"));
    }
    let deadline = Instant::now() + plan.wait;
    // Every address the name resolves to (`localhost`: ::1 and 127.0.0.1), in turn.
    let dial = || {
        let mut last = None;
        for a in &addresses {
            match TcpStream::connect_timeout(a, Duration::from_secs(2)) {
                Ok(s) => return Ok((s, *a)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("one address at least"))
    };
    let (stream, address) = loop {
        match dial() {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "cannot reach the coordinator at {at} within {} s ({e}): start node rank 0 \
                     with --coordinator {at}, or check the address",
                    plan.wait.as_secs()
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    send_on(
        &stream,
        &Message::Hello {
            rank: plan.rank,
            identity: identity.clone(),
        },
    )?;
    // The coordinator answers once every node has come.
    let _ = stream.set_read_timeout(Some(plan.wait + SILENCE));
    let orchestrator = match read_message(&stream) {
        Ok(Message::Welcome { orchestrator }) => orchestrator,
        Ok(Message::Refused { why }) => return Err(why),
        Ok(other) => return Err(format!("the coordinator at {at} answered {other:?}")),
        Err(e) => {
            return Err(format!(
                "the coordinator at {at} did not admit this node: {e}"
            ))
        }
    };
    let node_ip = stream
        .local_addr()
        .map_err(|e| format!("this node's address: {e}"))?
        .ip();
    let connection = connect(0, stream, address)?;
    Ok(Joined::new(
        plan,
        identity.replicas,
        orchestrator,
        node_ip.to_string(),
        vec![connection],
    ))
}

/// One control connection: the stream this node writes to (pings, done, failed, lost) and a
/// clone it reads from.
fn connect(
    rank: usize,
    stream: TcpStream,
    address: SocketAddr,
) -> Result<(Peer, TcpStream), String> {
    let reader = stream
        .try_clone()
        .map_err(|e| format!("the connection to node rank {rank}: {e}"))?;
    let _ = reader.set_read_timeout(Some(SILENCE));
    let _ = stream.set_write_timeout(Some(SILENCE));
    let peer = Peer {
        rank,
        address,
        out: Arc::new(Mutex::new(stream)),
        done: Arc::new(AtomicBool::new(false)),
    };
    Ok((peer, reader))
}

/// Watches the control connections: pings each, and stops this process with one line when the
/// other end is lost or says it failed (unless this node has finished). The coordinator first
/// tells every other node which node was lost, so that all of them say the same line.
fn watch(
    connections: Vec<(Peer, TcpStream)>,
    finished: &Arc<AtomicBool>,
    coordinator: bool,
    rounds: &Arc<Rounds>,
) -> Vec<Peer> {
    let all: Vec<(usize, Arc<Mutex<TcpStream>>)> = connections
        .iter()
        .map(|(p, _)| (p.rank, p.out.clone()))
        .collect();
    let mut peers = Vec::with_capacity(connections.len());
    for (slot, (peer, reader)) in connections.into_iter().enumerate() {
        let pinger = peer.out.clone();
        std::thread::spawn(move || {
            while send(&pinger, &Message::Ping).is_ok() {
                std::thread::sleep(PING_EVERY);
            }
        });
        let (rank, address, done) = (peer.rank, peer.address, peer.done.clone());
        let (finished, all, rounds) = (finished.clone(), all.clone(), rounds.clone());
        std::thread::spawn(move || {
            let ending = listen(reader, &done, &rounds, slot);
            if finished.load(Ordering::SeqCst) {
                return;
            }
            let why = match ending {
                Ending::Done => return,
                // The coordinator's word that another node was lost.
                Ending::Relayed(line) => stop_process(&line),
                Ending::Lost(why) => why,
            };
            if !coordinator {
                stop_process(&format!(
                    "the coordinator, node rank 0 ({address}), stopped: {why}"
                ));
            }
            let lost = Message::Lost {
                rank,
                address: address.to_string(),
                why: why.clone(),
            };
            for (other, out) in &all {
                if *other != rank {
                    let _ = send(out, &lost);
                }
            }
            stop_process(&format!("node rank {rank} ({address}) stopped: {why}"));
        });
        peers.push(peer);
    }
    peers
}

/// How a control connection ended.
enum Ending {
    /// The other end finished normally.
    Done,
    /// The other end was lost, or failed: why.
    Lost(String),
    /// The coordinator told of another node lost: the line to say.
    Relayed(String),
}

/// Reads one control connection until it ends, recording the rounds the other end reports.
fn listen(reader: TcpStream, done: &AtomicBool, rounds: &Rounds, slot: usize) -> Ending {
    let mut lines = BufReader::new(reader);
    loop {
        let mut line = String::new();
        let message = match lines.read_line(&mut line) {
            Ok(0) => return Ending::Lost("its process ended (killed, or its machine lost)".into()),
            Ok(_) => serde_json::from_str::<Message>(&line).ok(),
            Err(e) if is_timeout(&e) => {
                return Ending::Lost(format!("no word from it for {} s", SILENCE.as_secs()))
            }
            Err(e) => return Ending::Lost(format!("its connection failed ({e})")),
        };
        match message {
            Some(Message::Done) => {
                done.store(true, Ordering::SeqCst);
                return Ending::Done;
            }
            Some(Message::Failed { why }) => return Ending::Lost(why),
            Some(Message::Lost { rank, address, why }) => {
                return Ending::Relayed(format!("node rank {rank} ({address}) stopped: {why}"))
            }
            Some(Message::Round { round } | Message::Go { round }) => rounds.set(slot, round),
            _ => continue,
        }
    }
}

/// Ends this process at once with one line: its replicas may be waiting in an all-reduce that
/// will never complete. (Checkpoints are written atomically: none is left half-written.)
fn stop_process(why: &str) -> ! {
    super::run_dir::clean_up_before_abrupt_exit();
    let clear = match std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        true => "\r\x1b[2K",
        false => "",
    };
    eprintln!("{clear}error: {why}; stopping this node too");
    std::process::exit(1)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn send(out: &Mutex<TcpStream>, m: &Message) -> std::io::Result<()> {
    let stream = out.lock().unwrap_or_else(|e| e.into_inner());
    write_message(&stream, m)
}

fn send_on(stream: &TcpStream, m: &Message) -> Result<(), String> {
    write_message(stream, m).map_err(|e| format!("cannot reach a node: {e}"))
}

fn write_message(mut stream: &TcpStream, m: &Message) -> std::io::Result<()> {
    let mut line = serde_json::to_string(m).expect("serializes");
    line.push('\n');
    stream.write_all(line.as_bytes())
}

/// One line from a stream that nothing else reads yet (the hello and its answer).
fn read_message(stream: &TcpStream) -> Result<Message, String> {
    let mut line = String::new();
    let mut byte = [0u8; 1];
    // Byte by byte: a buffered reader could swallow the first pings behind the answer.
    loop {
        match std::io::Read::read(&mut &*stream, &mut byte) {
            Ok(0) => return Err("the connection closed".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0] as char),
            Err(e) if is_timeout(&e) => return Err("no answer in time".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    serde_json::from_str(&line).map_err(|e| format!("not a laxc node ({e})"))
}

/// The host part of HOST:PORT.
fn host_of(at: &str) -> Result<String, String> {
    let (host, port) = at
        .rsplit_once(':')
        .ok_or_else(|| format!("--coordinator {at} is not HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| format!("--coordinator {at}: `{port}` is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // The other nodes reach node rank 0 (and Burn's orchestrator) at this host.
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(format!(
            "--coordinator {at}: give the address the other nodes reach node rank 0 by, not {host}"
        ));
    }
    Ok(host.to_string())
}

/// A host as a URL writes it: an IPv6 address in brackets.
fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]"),
        _ => host.to_string(),
    }
}

/// A port no one listens on now (Burn's servers take a port number, not a listener).
fn free_port() -> Result<u16, String> {
    TcpListener::bind(("0.0.0.0", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Burn's orchestrator, where the nodes' collectives register, in a process of its own: Burn
/// stops its server on SIGINT or SIGTERM, which would strand every node, while laxc stops a run
/// on those signals after a step, all nodes together. In a process group of its own, a
/// terminal's Ctrl-C does not reach it; it ends when this process does (its stdin closes).
fn start_orchestrator(port: u16) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    static CHILD: Mutex<Option<std::process::Child>> = Mutex::new(None);
    let exe = std::env::current_exe().map_err(|e| format!("cannot start the orchestrator: {e}"))?;
    let child = std::process::Command::new(exe)
        .args(["__orchestrator", &port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the orchestrator: {e}"))?;
    // Held (and its stdin open) for the life of this process.
    *CHILD.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    Ok(())
}

/// Runs Burn's orchestrator on `port` until standard input closes (`laxc __orchestrator`,
/// started by [`start_orchestrator`]).
pub fn serve_orchestrator(port: u16) {
    quiet_logs();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the orchestrator: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        runtime.block_on(burn_collective::start_global_orchestrator(port));
    });
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_addresses_are_host_and_port() {
        assert_eq!(host_of("127.0.0.1:29500").unwrap(), "127.0.0.1");
        assert_eq!(host_of("[::1]:29500").unwrap(), "::1");
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("node0"), "node0");
        assert!(host_of("node0").is_err());
        assert!(host_of("node0:http").is_err());
        assert!(host_of("0.0.0.0:29500").is_err());
    }
}
