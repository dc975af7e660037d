//! [`BackendMachine`]: what a backend does when it sees the frontend's state
//! (spec/xenbus.md §3–5; SECURITY.md C4). Pure logic, no store access: the
//! driver reads the frontend state (and its own `online` key), asks the
//! machine, performs the [`Action`], then publishes the state the machine
//! returns (with [`crate::device::switch_state`]).

use pvio_abi::xenbus::XenbusState;

/// Which frontend state makes the backend connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectOn {
    /// Initialised **or** Connected (blkif: blkback connects on either, in
    /// case two watch events were coalesced).
    Initialised,
    /// Connected only (netif: netfront skips Initialised, and netback
    /// connects when it sees Connected).
    Connected,
}

/// What the backend must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing.
    Nothing,
    /// Read and validate the frontend's transport keys, map the rings, bind
    /// the event channels, publish the device properties. On failure call
    /// [`BackendMachine::connect_failed`] and publish what it returns.
    Connect,
    /// Stop using the rings: wait for in-flight requests, unmap, unbind.
    Disconnect,
}

/// The outcome of one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "the backend must perform the action and publish the state"]
pub struct Step {
    /// What to do first.
    pub action: Action,
    /// The state to publish afterwards (after a successful `Connect`), if
    /// it differs from the last one the machine asked for.
    pub publish: Option<XenbusState>,
    /// After the action: the device is gone (frontend Closed with the
    /// backend's `online` = 0, or frontend Unknown): remove the backend
    /// instance.
    pub remove: bool,
}

/// The backend side of the XenbusState handshake as a pure state machine.
///
/// Feed it the frontend's *current* state after every watch event (events
/// can be coalesced, spurious, and skip states); it is idempotent: the same
/// observation twice gives `Nothing` the second time, and it never asks to
/// connect while connected nor to disconnect while disconnected.
///
/// | Frontend state | Backend | Action | Publish | Remove |
/// |---|---|---|---|---|
/// | Initialising, InitWait | connected | `Disconnect` | InitWait | no |
/// | Initialising, InitWait | not connected | `Nothing` | InitWait | no |
/// | Initialised | not connected, [`ConnectOn::Initialised`], no failed connect | `Connect` | Connected | no |
/// | Initialised | otherwise | `Nothing` | — | no |
/// | Connected | not connected, no failed connect | `Connect` | Connected | no |
/// | Connected | connected, or a failed connect | `Nothing` | — | no |
/// | Closing | connected / not | `Disconnect` / `Nothing` | Closing | no |
/// | Closed | connected / not | `Disconnect` / `Nothing` | Closed | if `online` = 0 |
/// | Unknown (directory gone) | connected / not | `Disconnect` / `Nothing` | Closed | yes |
/// | Reconfiguring, Reconfigured | any | `Nothing` | — | no |
///
/// "Publish" is omitted when the machine already asked for that state.
/// The first observation (frontend Initialising, backend freshly probed
/// with its features written) publishes InitWait.
///
/// Notes:
/// * Frontend Connected → Initialising → Connected, when each state is
///   seen, gives `Disconnect` once then `Connect` once (the frontend
///   re-initialises: §5). If the Initialising was coalesced away the
///   backend sees Connected twice and does nothing: it is still connected
///   to the rings it validated, which is safe.
/// * Linux netback walks Connected → Closing → Closed → InitWait when the
///   frontend re-initialises; this machine publishes only the final
///   InitWait.
/// * A failed connect (bad keys, C3) publishes Closing and is sticky: the
///   machine will not try again until the frontend goes back through
///   Initialising, Closing, Closed or Unknown, so a hostile frontend
///   cannot make it loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendMachine {
    connect_on: ConnectOn,
    /// The last state the machine asked to publish.
    state: XenbusState,
    connected: bool,
    failed: bool,
    connects: u64,
    disconnects: u64,
}

impl BackendMachine {
    /// A machine for a freshly probed backend (state Initialising, not
    /// connected).
    pub fn new(connect_on: ConnectOn) -> BackendMachine {
        BackendMachine {
            connect_on,
            state: XenbusState::Initialising,
            connected: false,
            failed: false,
            connects: 0,
            disconnects: 0,
        }
    }

    /// The state the machine last asked to publish.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// True between a `Connect` and the next `Disconnect` (or a failed
    /// connect).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Number of `Connect` actions issued.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Number of `Disconnect` actions issued.
    pub fn disconnects(&self) -> u64 {
        self.disconnects
    }

    fn publish(&mut self, s: XenbusState) -> Option<XenbusState> {
        if self.state == s {
            None
        } else {
            self.state = s;
            Some(s)
        }
    }

    fn disconnect_if_connected(&mut self) -> Action {
        if self.connected {
            self.connected = false;
            self.disconnects += 1;
            Action::Disconnect
        } else {
            Action::Nothing
        }
    }

    /// The step for the frontend's current state `frontend`; `online` is the
    /// backend's own `online` key (false removes the device once the
    /// frontend is Closed).
    pub fn on_frontend(&mut self, frontend: XenbusState, online: bool) -> Step {
        use XenbusState as S;
        let (action, publish, remove) = match frontend {
            S::Initialising | S::InitWait => {
                self.failed = false;
                let action = self.disconnect_if_connected();
                (action, self.publish(S::InitWait), false)
            }
            S::Initialised | S::Connected => {
                let wanted = frontend == S::Connected || self.connect_on == ConnectOn::Initialised;
                if wanted && !self.connected && !self.failed {
                    self.connected = true;
                    self.connects += 1;
                    (Action::Connect, self.publish(S::Connected), false)
                } else {
                    (Action::Nothing, None, false)
                }
            }
            S::Closing => {
                self.failed = false;
                let action = self.disconnect_if_connected();
                (action, self.publish(S::Closing), false)
            }
            S::Closed => {
                self.failed = false;
                let action = self.disconnect_if_connected();
                (action, self.publish(S::Closed), !online)
            }
            S::Unknown => {
                self.failed = false;
                let action = self.disconnect_if_connected();
                (action, self.publish(S::Closed), true)
            }
            S::Reconfiguring | S::Reconfigured => (Action::Nothing, None, false),
        };
        Step {
            action,
            publish,
            remove,
        }
    }

    /// The `Connect` just issued failed (the frontend's keys were invalid,
    /// a ring could not be mapped, ...): nothing is connected; publish
    /// Closing. Sticky until the frontend restarts or closes.
    pub fn connect_failed(&mut self) -> Step {
        self.connected = false;
        self.failed = true;
        Step {
            action: Action::Nothing,
            publish: self.publish(XenbusState::Closing),
            remove: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use XenbusState as S;

    #[test]
    fn blk_handshake() {
        let mut m = BackendMachine::new(ConnectOn::Initialised);
        let s = m.on_frontend(S::Initialising, true);
        assert_eq!((s.action, s.publish), (Action::Nothing, Some(S::InitWait)));
        let s = m.on_frontend(S::Initialised, true);
        assert_eq!((s.action, s.publish), (Action::Connect, Some(S::Connected)));
        let s = m.on_frontend(S::Connected, true);
        assert_eq!((s.action, s.publish), (Action::Nothing, None));
        let s = m.on_frontend(S::Closing, true);
        assert_eq!(
            (s.action, s.publish),
            (Action::Disconnect, Some(S::Closing))
        );
        let s = m.on_frontend(S::Closed, false);
        assert_eq!(
            (s.action, s.publish, s.remove),
            (Action::Nothing, Some(S::Closed), true)
        );
    }

    #[test]
    fn net_waits_for_connected() {
        let mut m = BackendMachine::new(ConnectOn::Connected);
        let _ = m.on_frontend(S::Initialising, true);
        assert_eq!(m.on_frontend(S::Initialised, true).action, Action::Nothing);
        assert_eq!(m.on_frontend(S::Connected, true).action, Action::Connect);
    }

    #[test]
    fn failed_connect_is_sticky() {
        let mut m = BackendMachine::new(ConnectOn::Connected);
        assert_eq!(m.on_frontend(S::Connected, true).action, Action::Connect);
        assert_eq!(m.connect_failed().publish, Some(S::Closing));
        assert!(!m.is_connected());
        assert_eq!(m.on_frontend(S::Connected, true).action, Action::Nothing);
        let s = m.on_frontend(S::Initialising, true);
        assert_eq!((s.action, s.publish), (Action::Nothing, Some(S::InitWait)));
        assert_eq!(m.on_frontend(S::Connected, true).action, Action::Connect);
        assert_eq!((m.connects(), m.disconnects()), (2, 0));
    }
}
