//! An in-process learning switch: any number of vifs (or other [`Port`]
//! users) exchange frames without a kernel.
//!
//! Each [`SwitchPort`] learns the source MACs of the frames it transmits;
//! a frame to a learnt unicast MAC goes to that port only, anything else
//! (unknown unicast, broadcast, multicast) is flooded to every other port
//! with a receiver. A frame is never sent back to the port it came from.
//! Delivery never blocks: a full receiver drops (its own counters say so).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::packet::{Packet, PacketSink, Port};

type Sink = Arc<dyn PacketSink>;

/// Most MACs learnt (older entries are forgotten beyond this).
const MAX_FDB: usize = 4096;

#[derive(Default)]
struct Inner {
    next_id: u64,
    sinks: HashMap<u64, Option<Arc<dyn PacketSink>>>,
    fdb: HashMap<[u8; 6], u64>,
    stats: SwitchStats,
}

/// Counters of a [`Switch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Frames received from ports.
    pub frames: u64,
    /// Frames sent to a single learnt port.
    pub forwarded: u64,
    /// Frames flooded.
    pub flooded: u64,
    /// Deliveries a receiver refused.
    pub dropped: u64,
}

/// The switch (cheap to clone: all clones are the same switch).
#[derive(Clone, Default)]
pub struct Switch {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = lock(&self.inner);
        f.debug_struct("Switch")
            .field("ports", &g.sinks.len())
            .field("macs", &g.fdb.len())
            .field("stats", &g.stats)
            .finish()
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Switch {
    /// An empty switch.
    pub fn new() -> Switch {
        Switch::default()
    }

    /// A new port (plug it into a vif with `Arc::new(switch.port())`).
    pub fn port(&self) -> SwitchPort {
        let mut g = lock(&self.inner);
        g.next_id += 1;
        let id = g.next_id;
        g.sinks.insert(id, None);
        SwitchPort {
            inner: self.inner.clone(),
            id,
        }
    }

    /// Counters.
    pub fn stats(&self) -> SwitchStats {
        lock(&self.inner).stats
    }
}

/// One port of a [`Switch`]; dropping it unplugs it.
pub struct SwitchPort {
    inner: Arc<Mutex<Inner>>,
    id: u64,
}

impl fmt::Debug for SwitchPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwitchPort").field("id", &self.id).finish()
    }
}

impl Port for SwitchPort {
    fn transmit(&self, pkt: Packet) -> bool {
        let (Some(dst), Some(src)) = (pkt.dst_mac(), pkt.src_mac()) else {
            return false;
        };
        // A learnt unicast destination (the common case) takes one `Arc`
        // clone and no allocation; a flood collects the receivers.
        let (one, many): (Option<Sink>, Vec<Sink>) = {
            let mut g = lock(&self.inner);
            g.stats.frames += 1;
            if src[0] & 1 == 0 && src != [0; 6] && g.fdb.get(&src) != Some(&self.id) {
                if g.fdb.len() >= MAX_FDB && !g.fdb.contains_key(&src) {
                    g.fdb.clear();
                }
                g.fdb.insert(src, self.id);
            }
            let known = if dst[0] & 1 == 0 {
                g.fdb.get(&dst).copied()
            } else {
                None
            };
            match known {
                Some(id) if id == self.id => return true,
                Some(id) => {
                    g.stats.forwarded += 1;
                    (g.sinks.get(&id).cloned().flatten(), Vec::new())
                }
                None => {
                    g.stats.flooded += 1;
                    let v = g
                        .sinks
                        .iter()
                        .filter(|(id, _)| **id != self.id)
                        .filter_map(|(_, s)| s.clone())
                        .collect();
                    (None, v)
                }
            }
        };
        let mut dropped = 0;
        if let Some(t) = one {
            if !t.deliver(pkt) {
                dropped += 1;
            }
        } else {
            let n = many.len();
            let mut pkt = Some(pkt);
            for (i, t) in many.into_iter().enumerate() {
                // Bytes clones share the buffer: no copy per receiver; the
                // last receiver takes the packet itself.
                let p = if i + 1 == n {
                    pkt.take().unwrap_or_default()
                } else {
                    pkt.clone().unwrap_or_default()
                };
                if !t.deliver(p) {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            lock(&self.inner).stats.dropped += dropped;
        }
        true
    }

    fn attach(&self, sink: Option<Arc<dyn PacketSink>>) {
        let mut g = lock(&self.inner);
        if let Some(s) = g.sinks.get_mut(&self.id) {
            *s = sink;
        }
    }
}

impl Drop for SwitchPort {
    fn drop(&mut self) {
        let mut g = lock(&self.inner);
        g.sinks.remove(&self.id);
        let id = self.id;
        g.fdb.retain(|_, p| *p != id);
    }
}
