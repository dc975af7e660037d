//! smoltcp's `phy::Device` over a [`Netfront`] (feature `smoltcp`), so a
//! guest can run a TCP/IP stack over the vif.
//!
//! smoltcp computes and verifies every checksum itself, so a received
//! frame with a partial checksum (`csum_blank`) is completed in software
//! before smoltcp sees it, and frames go out with complete checksums.
//! Received GSO frames (larger than the MTU) are dropped: turn GSO off in
//! [`crate::NetfrontConfig`] for a smoltcp interface.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::{Netfront, Packet, complete_checksum};

/// A received frame, handed to smoltcp.
#[derive(Debug)]
pub struct NetfrontRxToken {
    data: Vec<u8>,
}

impl RxToken for NetfrontRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.data)
    }
}

/// Room to send one frame.
#[derive(Debug)]
pub struct NetfrontTxToken<'a> {
    nf: &'a mut Netfront,
}

impl TxToken for NetfrontTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        // A frame that cannot go (ring full after all, device broken) is
        // dropped, as a NIC would.
        let _ = self.nf.try_send(Packet::new(buf));
        r
    }
}

impl Netfront {
    fn max_frame(&self) -> usize {
        usize::from(self.info.mtu) + 14
    }

    fn tx_room(&mut self) -> bool {
        self.broken.is_none()
            && self.down.is_none()
            && self
                .queues
                .iter()
                .all(crate::queue::Queue::tx_has_room_for_any)
    }

    fn next_for_stack(&mut self) -> Option<Vec<u8>> {
        loop {
            let p = self.recv()?;
            if p.gso.is_some() || p.data.len() > self.max_frame() + 4 {
                continue;
            }
            let mut data = p.data.to_vec();
            if p.csum_blank {
                complete_checksum(&mut data);
            }
            return Some(data);
        }
    }
}

impl Device for Netfront {
    type RxToken<'a>
        = NetfrontRxToken
    where
        Self: 'a;
    type TxToken<'a>
        = NetfrontTxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let data = self.next_for_stack()?;
        Some((NetfrontRxToken { data }, NetfrontTxToken { nf: self }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.tx_room() {
            self.process();
        }
        self.tx_room().then_some(NetfrontTxToken { nf: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.max_frame();
        caps.max_burst_size = None;
        caps
    }
}
