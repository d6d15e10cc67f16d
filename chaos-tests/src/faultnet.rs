//! A fault-injecting network for the node-to-node channel, on loopback.
//!
//! Every node advertises a proxy port instead of its Raft port; the proxy forwards to the real
//! port. Each node sends from its own loopback address (127.0.0.(10+id), via `raft_source_ip`),
//! so the proxy knows the sender of every connection and can apply the state of the directed
//! link sender → receiver: pass, cut (refuse and sever), or delay. Partitions (minority,
//! majority, leader isolated, asymmetric, bridge) are sets of cut links.

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
}

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
    let st = state.clone();
    let up = async move { pump(&mut ri, &mut wo, &st, from, to).await };
    let st = state.clone();
    let down = async move { pump(&mut ro, &mut wi, &st, from, to).await };
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

async fn pump(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    state: &Mutex<State>,
    from: Option<u64>,
    to: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match link(state, from, to) {
            Link::Cut => return,
            Link::Delay(d) => tokio::time::sleep(d).await,
            Link::Pass => {}
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
