//! A fault-injecting network for the node-to-node channel, on loopback.
//!
//! Every node advertises a proxy port instead of its Raft port; the proxy forwards to the real
//! port. Each node sends from its own loopback address (127.0.0.(10+id), via `raft_source_ip`),
//! so the proxy knows the sender of every connection and can apply the state of the directed
//! link sender → receiver: pass, cut (refuse and sever), delay, or degrade (delay with jitter,
//! loss, resets). Partitions (minority, majority, leader isolated, asymmetric, bridge) are sets
//! of cut links.
//!
//! Loss on a TCP relay: a lost segment is retransmitted by TCP after its retransmission timeout,
//! so "loss" here holds a chunk back by [`RETRANSMIT_DELAY`] with the given probability. A reset
//! severs the connection, as a middlebox or a crashed NAT entry would. The randomness of a
//! degraded link comes from its seed, so a scenario's fault schedule replays from its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The address node `id` sends from.
pub fn source_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

fn node_of(ip: IpAddr) -> Option<u64> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            Some(u64::from(v4.octets()[3] - 10))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    #[default]
    Pass,
    Cut,
    /// Every chunk of bytes waits this long before it is passed on.
    Delay(Duration),
    Degraded(Degradation),
}

/// A bad link: each chunk waits `delay` plus a uniform `[0, jitter)`; with `loss_permille` it
/// waits a retransmission timeout more; with `reset_permille` the connection is severed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Degradation {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss_permille: u32,
    pub reset_permille: u32,
    pub seed: u64,
}

/// What a lost segment costs on loopback TCP: Linux's minimum retransmission timeout.
pub const RETRANSMIT_DELAY: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    links: BTreeMap<(u64, u64), Link>,
}

/// The whole fault network: one proxy per node.
pub struct FaultNet {
    state: Arc<Mutex<State>>,
    /// Bumped on every change, so open connections re-check their link and die if cut.
    generation: watch::Sender<u64>,
    /// Advertised (proxy) address per node.
    pub advertised: BTreeMap<u64, SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FaultNet {
    /// Starts a proxy for each `(id, real raft address)`.
    pub async fn start(targets: &BTreeMap<u64, SocketAddr>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (generation, _) = watch::channel(0u64);
        let mut advertised = BTreeMap::new();
        let mut tasks = Vec::new();
        for (&to, &real) in targets {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fault proxy");
            advertised.insert(to, listener.local_addr().expect("addr"));
            let (state, gen_rx) = (state.clone(), generation.subscribe());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((inbound, peer)) = listener.accept().await else { continue };
                    let from = node_of(peer.ip());
                    let (state, gen_rx) = (state.clone(), gen_rx.clone());
                    tokio::spawn(async move { relay(inbound, from, to, real, state, gen_rx).await });
                }
            }));
        }
        Self { state, generation, advertised, tasks }
    }

    fn set(&self, from: u64, to: u64, link: Link) {
        self.state.lock().expect("lock").links.insert((from, to), link);
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Cuts the directed link `from → to` (requests from `from` to `to` and their answers).
    pub fn cut(&self, from: u64, to: u64) {
        self.set(from, to, Link::Cut);
        self.changed();
    }

    pub fn delay(&self, from: u64, to: u64, d: Duration) {
        self.set(from, to, Link::Delay(d));
        self.changed();
    }

    /// Degrades the directed link `from → to`.
    pub fn degrade(&self, from: u64, to: u64, d: Degradation) {
        self.set(from, to, Link::Degraded(Degradation { seed: d.seed ^ (from << 32) ^ to, ..d }));
        self.changed();
    }

    /// Degrades every link between the given nodes, both ways.
    pub fn degrade_all(&self, ids: &[u64], d: Degradation) {
        for &a in ids {
            for &b in ids.iter().filter(|b| **b != a) {
                self.set(a, b, Link::Degraded(Degradation { seed: d.seed ^ (a << 32) ^ b, ..d }));
            }
        }
        self.changed();
    }

    /// A bridge partition: `left` and `right` cannot talk to each other; nodes in neither (the
    /// bridge) still talk to both sides.
    pub fn bridge(&self, left: &[u64], right: &[u64]) {
        for &l in left {
            for &r in right {
                self.set(l, r, Link::Cut);
                self.set(r, l, Link::Cut);
            }
        }
        self.changed();
    }

    /// Cuts every link between the groups, both ways; links inside a group pass.
    pub fn partition(&self, groups: &[&[u64]]) {
        for (gi, a) in groups.iter().enumerate() {
            for (gj, b) in groups.iter().enumerate() {
                if gi != gj {
                    for &x in a.iter() {
                        for &y in b.iter() {
                            self.set(x, y, Link::Cut);
                        }
                    }
                }
            }
        }
        self.changed();
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: u64, all: &[u64]) {
        for &other in all.iter().filter(|o| **o != node) {
            self.set(node, other, Link::Cut);
            self.set(other, node, Link::Cut);
        }
        self.changed();
    }

    pub fn heal(&self) {
        self.state.lock().expect("lock").links.clear();
        self.changed();
    }

    /// The currently cut links, for reports.
    pub fn cut_links(&self) -> BTreeSet<(u64, u64)> {
        self.state.lock().expect("lock").links.iter().filter(|(_, l)| **l == Link::Cut).map(|(k, _)| *k).collect()
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn link(state: &Mutex<State>, from: Option<u64>, to: u64) -> Link {
    match from {
        Some(f) => state.lock().expect("lock").links.get(&(f, to)).copied().unwrap_or_default(),
        None => Link::Pass,
    }
}

/// Relays one connection while its link allows; severs it the moment the link is cut.
async fn relay(
    inbound: TcpStream,
    from: Option<u64>,
    to: u64,
    real: SocketAddr,
    state: Arc<Mutex<State>>,
    mut gen: watch::Receiver<u64>,
) {
    if link(&state, from, to) == Link::Cut {
        return; // dropping the stream closes it: the sender sees a reset or EOF
    }
    let Ok(outbound) = TcpStream::connect(real).await else { return };
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    // Each direction draws its own random numbers; the connection count keeps two connections
    // of one link from drawing the same sequence.
    let salt = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let st = state.clone();
    let up = async move { pump(&mut ri, &mut wo, &st, from, to, salt << 1).await };
    let st = state.clone();
    let down = async move { pump(&mut ro, &mut wi, &st, from, to, (salt << 1) | 1).await };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = async {
            loop {
                if gen.changed().await.is_err() { return; }
                if link(&state, from, to) == Link::Cut { return; }
            }
        } => {}
    }
}

static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn pump(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    state: &Mutex<State>,
    from: Option<u64>,
    to: u64,
    salt: u64,
) {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let mut rng: Option<(u64, rand::rngs::StdRng)> = None;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match link(state, from, to) {
            Link::Cut => return,
            Link::Delay(d) => tokio::time::sleep(d).await,
            Link::Degraded(d) => {
                let rng = match &mut rng {
                    Some((seed, rng)) if *seed == d.seed => rng,
                    _ => &mut rng.insert((d.seed, rand::rngs::StdRng::seed_from_u64(d.seed ^ salt.rotate_left(17)))).1,
                };
                if rng.gen_range(0..1000) < d.reset_permille {
                    return; // both halves are dropped: the peer sees the connection reset
                }
                let mut wait = d.delay;
                if !d.jitter.is_zero() {
                    wait += Duration::from_micros(rng.gen_range(0..d.jitter.as_micros() as u64));
                }
                if rng.gen_range(0..1000) < d.loss_permille {
                    wait += RETRANSMIT_DELAY;
                }
                tokio::time::sleep(wait).await;
            }
            Link::Pass => {}
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
