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

/// Where one frame goes.
#[derive(Clone)]
enum Route {
    /// Malformed (no MACs): dropped.
    Invalid,
    /// To the port it came from: not sent anywhere, not an error.
    Back,
    /// A learnt unicast destination (`None`: that port has no receiver).
    One(Option<Sink>),
    /// Flooded to every other port with a receiver.
    Flood(Arc<[Sink]>),
}

impl Inner {
    /// Learns the source of a frame port `from` sends and routes it.
    fn route(&mut self, from: u64, pkt: &Packet) -> Route {
        let (Some(dst), Some(src)) = (pkt.dst_mac(), pkt.src_mac()) else {
            return Route::Invalid;
        };
        self.stats.frames += 1;
        if src[0] & 1 == 0 && src != [0; 6] && self.fdb.get(&src) != Some(&from) {
            if self.fdb.len() >= MAX_FDB && !self.fdb.contains_key(&src) {
                self.fdb.clear();
            }
            self.fdb.insert(src, from);
        }
        let known = if dst[0] & 1 == 0 {
            self.fdb.get(&dst).copied()
        } else {
            None
        };
        match known {
            Some(id) if id == from => Route::Back,
            Some(id) => {
                self.stats.forwarded += 1;
                Route::One(self.sinks.get(&id).cloned().flatten())
            }
            None => {
                self.stats.flooded += 1;
                Route::Flood(
                    self.sinks
                        .iter()
                        .filter(|(id, _)| **id != from)
                        .filter_map(|(_, s)| s.clone())
                        .collect(),
                )
            }
        }
    }
}

impl SwitchPort {
    /// Delivers `pkts` (all routed to `route`), leaving it empty; returns
    /// how many deliveries a receiver refused.
    fn send(route: &Route, pkts: &mut Vec<Packet>) -> usize {
        match route {
            // Nowhere to go (the caller counts invalid frames).
            Route::Invalid | Route::Back | Route::One(None) => {
                pkts.clear();
                0
            }
            Route::One(Some(t)) => t.deliver_batch(pkts),
            Route::Flood(sinks) => {
                // Bytes clones share the buffer: no copy per receiver.
                let mut refused = 0;
                for p in pkts.drain(..) {
                    for t in sinks.iter() {
                        refused += usize::from(!t.deliver(p.clone()));
                    }
                }
                refused
            }
        }
    }

    fn count_dropped(&self, dropped: usize) {
        if dropped > 0 {
            lock(&self.inner).stats.dropped += dropped as u64;
        }
    }
}

impl Port for SwitchPort {
    fn transmit(&self, pkt: Packet) -> bool {
        let route = lock(&self.inner).route(self.id, &pkt);
        if matches!(route, Route::Invalid) {
            return false;
        }
        let dropped = Self::send(&route, &mut vec![pkt]);
        self.count_dropped(dropped);
        true
    }

    /// Routes the whole batch under one lock (frames to the same MACs as
    /// the one before reuse its route), then hands each run of frames with
    /// the same destination to its receiver in one call.
    fn transmit_batch(&self, pkts: &mut Vec<Packet>) -> usize {
        let mut routes: Vec<(usize, Route)> = Vec::new();
        let mut invalid = 0;
        {
            let mut g = lock(&self.inner);
            let mut last: Option<([u8; 12], Route)> = None;
            for (i, p) in pkts.iter().enumerate() {
                let macs = p.data.get(..12).and_then(|m| <[u8; 12]>::try_from(m).ok());
                let route = match (&last, macs) {
                    (Some((m, r)), Some(macs)) if *m == macs => {
                        g.stats.frames += 1;
                        match r {
                            Route::One(_) => g.stats.forwarded += 1,
                            Route::Flood(_) => g.stats.flooded += 1,
                            Route::Back | Route::Invalid => {}
                        }
                        r.clone()
                    }
                    _ => {
                        let r = g.route(self.id, p);
                        last = macs.map(|m| (m, r.clone()));
                        r
                    }
                };
                invalid += usize::from(matches!(route, Route::Invalid));
                let same = routes.last().is_some_and(|(_, r)| same_route(r, &route));
                if !same {
                    routes.push((i, route));
                }
            }
        }
        let mut dropped = 0; // refused by a receiver
        let mut run = Vec::with_capacity(pkts.len());
        let mut rest = pkts.drain(..);
        for (k, (at, route)) in routes.iter().enumerate() {
            let end = routes.get(k + 1).map_or(usize::MAX, |(next, _)| *next);
            run.extend(rest.by_ref().take(end - at));
            dropped += Self::send(route, &mut run);
        }
        drop(rest);
        self.count_dropped(dropped);
        invalid
    }

    fn attach(&self, sink: Option<Arc<dyn PacketSink>>) {
        let mut g = lock(&self.inner);
        if let Some(s) = g.sinks.get_mut(&self.id) {
            *s = sink;
        }
    }
}

/// Whether two routes send to the same place (so their frames form one run).
fn same_route(a: &Route, b: &Route) -> bool {
    match (a, b) {
        (Route::Invalid, Route::Invalid) | (Route::Back, Route::Back) => true,
        (Route::One(None), Route::One(None)) => true,
        (Route::One(Some(x)), Route::One(Some(y))) => Arc::ptr_eq(x, y),
        (Route::Flood(x), Route::Flood(y)) => Arc::ptr_eq(x, y),
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is offered; refuses everything past `cap`.
    #[derive(Default)]
    struct Rec {
        got: Mutex<Vec<Packet>>,
        cap: usize,
    }

    impl PacketSink for Rec {
        fn deliver(&self, pkt: Packet) -> bool {
            let mut g = self.got.lock().unwrap();
            if g.len() >= self.cap {
                return false;
            }
            g.push(pkt);
            true
        }
    }

    fn frame(dst: u8, src: u8, tag: u8) -> Packet {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
        f[59] = tag;
        Packet::new(f)
    }

    /// A switch with ports 1, 2, 3 (port k's host has MAC ..:k), receiver
    /// 3 taking `cap` frames; ports 2 and 3 have announced themselves.
    fn setup(cap: usize) -> (Switch, Vec<SwitchPort>, Vec<Arc<Rec>>) {
        let sw = Switch::new();
        let ports: Vec<SwitchPort> = (0..3).map(|_| sw.port()).collect();
        let recs: Vec<Arc<Rec>> = (0..3)
            .map(|i| {
                Arc::new(Rec {
                    got: Mutex::new(Vec::new()),
                    cap: if i == 2 { cap } else { usize::MAX },
                })
            })
            .collect();
        for (p, r) in ports.iter().zip(&recs) {
            p.attach(Some(r.clone() as Arc<dyn PacketSink>));
        }
        ports[1].transmit(frame(1, 2, 0));
        ports[2].transmit(frame(1, 3, 0));
        for r in &recs {
            r.got.lock().unwrap().clear();
        }
        (sw, ports, recs)
    }

    #[test]
    fn batch_routes_like_one_by_one() {
        // From port 1 (MAC 1): runs to 2, to 3, to itself, to an unknown
        // MAC (flooded), broadcast, a runt, and back to 2; receiver 3 takes
        // only 3 frames (the rest count as dropped).
        let mut frames = Vec::new();
        for (tag, dst) in (1..).zip([2, 2, 3, 3, 3, 3, 1, 9, 0xFF, 2]) {
            let mut f = frame(dst, 1, tag);
            if dst == 0xFF {
                let mut d = f.data.to_vec();
                d[..6].copy_from_slice(&[0xFF; 6]);
                f = Packet::new(d);
            }
            frames.push(f);
        }
        frames.insert(7, Packet::new(vec![1u8; 8]));
        let (sw1, p1, r1) = setup(3);
        let refused_one: usize = frames
            .iter()
            .map(|f| usize::from(!p1[0].transmit(f.clone())))
            .sum();
        let (sw2, p2, r2) = setup(3);
        let mut batch = frames.clone();
        let refused_batch = p2[0].transmit_batch(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(refused_one, 1, "the runt");
        assert_eq!(refused_batch, refused_one);
        let frames_of = |r: &Rec| -> Vec<_> {
            r.got
                .lock()
                .unwrap()
                .iter()
                .map(|p| p.data.clone())
                .collect()
        };
        for (a, b) in r1.iter().zip(&r2) {
            assert_eq!(frames_of(a), frames_of(b));
        }
        assert_eq!(
            r2[0].got.lock().unwrap().len(),
            0,
            "never back to the sender"
        );
        let tags = |r: &Rec| {
            r.got
                .lock()
                .unwrap()
                .iter()
                .map(|p| p.data[59])
                .collect::<Vec<_>>()
        };
        assert_eq!(tags(&r2[1]), [1, 2, 8, 9, 10], "unicast and floods");
        assert_eq!(tags(&r2[2]), [3, 4, 5], "capped");
        let (s1, s2) = (sw1.stats(), sw2.stats());
        assert_eq!(s1, s2);
        assert_eq!(s2.dropped, 3, "one unicast and two floods refused by 3");
        assert_eq!(s2.flooded, 4, "two in the setup, two here");
        drop((p1, p2));
    }
}
