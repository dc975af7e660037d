//! A netfront bridged to a local port, normally a TAP device
//! ([`pvio_netback::TapPort`]): frames the port delivers (the host kernel
//! wrote them to the TAP) are sent out through the netfront, and frames the
//! netfront receives are transmitted on the port (written to the TAP, so the
//! host kernel receives them). Offload metadata (partial checksums, GSO)
//! passes through both ways.
//!
//! The port's reader thread queues frames in a bounded inbox (frames past
//! [`INBOX`] are dropped, like a full NIC queue); the bridge loop runs in
//! the caller's thread, which owns the netfront. An idle bridge sleeps in
//! [`Netfront::wait`]; a frame put in the inbox wakes it through the
//! netfront's [`Waker`](pvio_netfront::Waker) (only the first frame after
//! the bridge last looked costs a wakeup), and it looks at `stop` at least
//! every [`IDLE_WAIT`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvio_netback::{PacketSink, Port};
use pvio_netfront::{NetError, Netfront};

/// Frames held between the port and the netfront.
pub const INBOX: usize = 1024;
/// Longest sleep of an idle bridge.
pub const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Frames moved per direction per round.
const BATCH: usize = 256;

/// Counters of a bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Frames from the port sent through the netfront.
    pub port_to_netfront: u64,
    /// Frames from the netfront transmitted on the port.
    pub netfront_to_port: u64,
    /// Frames from the port dropped (inbox full).
    pub port_dropped: u64,
    /// Frames from the port the netfront refused (malformed, too large,
    /// unsupported offload).
    pub netfront_refused: u64,
    /// Frames the port refused.
    pub port_errors: u64,
}

struct Inbox {
    q: Mutex<VecDeque<pvio_netback::Packet>>,
    dropped: AtomicU64,
    waker: pvio_netfront::Waker,
}

impl PacketSink for Inbox {
    fn deliver(&self, pkt: pvio_netback::Packet) -> bool {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= INBOX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.push_back(pkt);
        drop(q);
        self.waker.wake();
        true
    }
}

/// A port frame as a netfront frame.
pub fn to_netfront(p: pvio_netback::Packet) -> pvio_netfront::Packet {
    use pvio_netback::GsoKind as B;
    use pvio_netfront::GsoKind as F;
    pvio_netfront::Packet {
        data: p.data,
        csum_blank: p.csum_blank,
        data_validated: p.data_validated,
        gso: p.gso.map(|g| pvio_netfront::Gso {
            kind: match g.kind {
                B::TcpV4 => F::TcpV4,
                B::TcpV6 => F::TcpV6,
            },
            size: g.size,
        }),
    }
}

/// A netfront frame as a port frame.
pub fn to_port(p: pvio_netfront::Packet) -> pvio_netback::Packet {
    use pvio_netback::GsoKind as B;
    use pvio_netfront::GsoKind as F;
    pvio_netback::Packet {
        data: p.data,
        csum_blank: p.csum_blank,
        data_validated: p.data_validated,
        gso: p.gso.map(|g| pvio_netback::Gso {
            kind: match g.kind {
                F::TcpV4 => B::TcpV4,
                F::TcpV6 => B::TcpV6,
            },
            size: g.size,
        }),
    }
}

/// Bridges `nf` and `port` until `stop` is set (returns the counters) or
/// the netfront fails (broken, or its backend went away: the error). The
/// port is detached when this returns.
pub fn bridge(
    nf: &mut Netfront,
    port: &dyn Port,
    stop: &AtomicBool,
) -> Result<BridgeStats, NetError> {
    let inbox = Arc::new(Inbox {
        q: Mutex::new(VecDeque::new()),
        dropped: AtomicU64::new(0),
        waker: nf.waker(),
    });
    port.attach(Some(inbox.clone()));
    let r = run(nf, port, &inbox, stop);
    port.attach(None);
    r
}

fn run(
    nf: &mut Netfront,
    port: &dyn Port,
    inbox: &Inbox,
    stop: &AtomicBool,
) -> Result<BridgeStats, NetError> {
    let mut st = BridgeStats::default();
    let mut pending: VecDeque<pvio_netfront::Packet> = VecDeque::new();
    let mut rx = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Acquire) {
        let mut busy = false;
        if pending.len() < BATCH {
            let mut q = inbox.q.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.len().min(BATCH);
            pending.extend(q.drain(..n).map(to_netfront));
        }
        // Port → netfront, until the ring is full.
        while let Some(p) = pending.pop_front() {
            match nf.try_send(p) {
                Ok(()) => {
                    st.port_to_netfront += 1;
                    busy = true;
                }
                Err((NetError::Full, p)) => {
                    pending.push_front(p);
                    break;
                }
                Err((
                    NetError::Invalid(_) | NetError::TooLarge(_) | NetError::Unsupported(_),
                    _,
                )) => st.netfront_refused += 1,
                Err((e, _)) => return Err(e),
            }
        }
        // Netfront → port.
        rx.clear();
        if nf.recv_batch(&mut rx, BATCH) > 0 {
            busy = true;
            for p in rx.drain(..) {
                if port.transmit(to_port(p)) {
                    st.netfront_to_port += 1;
                } else {
                    st.port_errors += 1;
                }
            }
        }
        st.port_dropped = inbox.dropped.load(Ordering::Relaxed);
        if !busy {
            nf.wait(IDLE_WAIT)?;
        }
    }
    if let Some(why) = nf.broken() {
        return Err(NetError::Broken(why.into()));
    }
    Ok(st)
}
