//! Driver-side helpers for the XenbusState handshake (spec/xenbus.md §1,
//! §3–5): reading and switching `state`, waiting for the peer's state, and
//! typed readers of the protocol keys (blkif.md §6, netif.md §5) that
//! refuse bad values (SECURITY.md C3).
//!
//! Every helper treats the peer's keys as hostile input: values are parsed
//! strictly (decimal ASCII digits, optionally one trailing NUL; nothing
//! else), bounded where the protocol has a bound, and a missing key is its
//! own error. Watch events are only hints: [`wait_for_state`] re-reads the
//! state after every event, so coalesced, spurious or skipped events do no
//! harm (§3 "always act on the current value").

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pvio_abi::DomId;
use pvio_abi::xenbus::XenbusState;

use crate::{XsClient, XsError, XsRead, with_transaction};

/// Error of the device helpers: a store error, or a key that is missing or
/// holds a value the protocol does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum XenbusError {
    /// A store request failed.
    Xs(XsError),
    /// A required key does not exist.
    Missing {
        /// The key.
        path: String,
    },
    /// The value is not of the expected form.
    Malformed {
        /// The key.
        path: String,
        /// The value (lossy UTF-8, at most 64 bytes shown).
        value: String,
    },
    /// The number is outside the allowed range.
    OutOfRange {
        /// The key.
        path: String,
        /// The value read.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// [`wait_for_state`] gave up.
    Timeout {
        /// The state key watched.
        path: String,
        /// The last state read.
        last: XenbusState,
    },
}

impl fmt::Display for XenbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenbusError::Xs(e) => write!(f, "xenstore: {e}"),
            XenbusError::Missing { path } => write!(f, "{path}: missing"),
            XenbusError::Malformed { path, value } => {
                write!(f, "{path}: malformed value {value:?}")
            }
            XenbusError::OutOfRange {
                path,
                value,
                min,
                max,
            } => {
                write!(f, "{path}: {value} outside {min}..={max}")
            }
            XenbusError::Timeout { path, last } => {
                write!(f, "{path}: timed out waiting, state is {last}")
            }
        }
    }
}

impl std::error::Error for XenbusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            XenbusError::Xs(e) => Some(e),
            _ => None,
        }
    }
}

impl From<XsError> for XenbusError {
    fn from(e: XsError) -> XenbusError {
        XenbusError::Xs(e)
    }
}

fn malformed(path: &str, value: &[u8]) -> XenbusError {
    let shown = &value[..value.len().min(64)];
    XenbusError::Malformed {
        path: path.to_owned(),
        value: String::from_utf8_lossy(shown).into_owned(),
    }
}

/// `<dir>/state`.
pub fn state_path(dir: &str) -> String {
    format!("{dir}/state")
}

/// Parses a decimal number as written in xenstore: ASCII digits, optionally
/// followed by one NUL; no sign, no spaces, no empty string, no overflow.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let digits = match bytes {
        [rest @ .., 0] => rest,
        all => all,
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &b| {
        if b.is_ascii_digit() {
            v.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Reads a key that may be absent: `Ok(None)` if it does not exist.
pub fn read_opt<R: XsRead + ?Sized>(r: &R, path: &str) -> Result<Option<Vec<u8>>, XenbusError> {
    match r.xs_read(path) {
        Ok(v) => Ok(Some(v)),
        Err(XsError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads a required key ([`XenbusError::Missing`] if absent).
pub fn read_value<R: XsRead + ?Sized>(r: &R, path: &str) -> Result<Vec<u8>, XenbusError> {
    read_opt(r, path)?.ok_or_else(|| XenbusError::Missing {
        path: path.to_owned(),
    })
}

/// Reads a required UTF-8 string (one trailing NUL is dropped).
pub fn read_string<R: XsRead + ?Sized>(r: &R, path: &str) -> Result<String, XenbusError> {
    let mut v = read_value(r, path)?;
    if v.last() == Some(&0) {
        v.pop();
    }
    String::from_utf8(v).map_err(|e| malformed(path, e.as_bytes()))
}

/// Reads a required decimal `u64`.
pub fn read_u64<R: XsRead + ?Sized>(r: &R, path: &str) -> Result<u64, XenbusError> {
    let v = read_value(r, path)?;
    parse_u64(&v).ok_or_else(|| malformed(path, &v))
}

/// Reads a required decimal number in `min..=max`
/// ([`XenbusError::OutOfRange`] otherwise).
pub fn read_u32_range<R: XsRead + ?Sized>(
    r: &R,
    path: &str,
    min: u32,
    max: u32,
) -> Result<u32, XenbusError> {
    let value = read_u64(r, path)?;
    match u32::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(XenbusError::OutOfRange {
            path: path.to_owned(),
            value,
            min: min.into(),
            max: max.into(),
        }),
    }
}

/// Reads a required decimal `u32`.
pub fn read_u32<R: XsRead + ?Sized>(r: &R, path: &str) -> Result<u32, XenbusError> {
    read_u32_range(r, path, 0, u32::MAX)
}

/// Reads a required decimal `u32` and refuses values above `max`
/// (SECURITY.md C3: `ring-page-order`, queue counts).
pub fn read_u32_max<R: XsRead + ?Sized>(r: &R, path: &str, max: u32) -> Result<u32, XenbusError> {
    read_u32_range(r, path, 0, max)
}

/// Reads an optional decimal `u32`: `default` if absent, an error if
/// present but malformed (absent keys have protocol defaults, e.g.
/// `ring-page-order` ⇒ 0, `multi-queue-num-queues` ⇒ 1).
pub fn read_u32_or<R: XsRead + ?Sized>(
    r: &R,
    path: &str,
    default: u32,
) -> Result<u32, XenbusError> {
    match read_u32(r, path) {
        Err(XenbusError::Missing { .. }) => Ok(default),
        other => other,
    }
}

/// Reads a required boolean: exactly `"1"` or `"0"` (optionally
/// NUL-terminated).
pub fn read_bool<R: XsRead + ?Sized>(r: &R, path: &str) -> Result<bool, XenbusError> {
    let v = read_value(r, path)?;
    match v.as_slice() {
        b"1" | b"1\0" => Ok(true),
        b"0" | b"0\0" => Ok(false),
        _ => Err(malformed(path, &v)),
    }
}

/// Reads an optional boolean: `default` if absent (feature keys: absent ⇒
/// not supported), an error if malformed.
pub fn read_bool_or<R: XsRead + ?Sized>(
    r: &R,
    path: &str,
    default: bool,
) -> Result<bool, XenbusError> {
    match read_bool(r, path) {
        Err(XenbusError::Missing { .. }) => Ok(default),
        other => other,
    }
}

/// The state published in `<dir>/state`: [`XenbusState::Unknown`] if the key
/// is missing, unreadable or unparsable (as Linux's
/// `xenbus_read_driver_state`).
pub fn read_state<R: XsRead + ?Sized>(r: &R, dir: &str) -> XenbusState {
    r.xs_read(&state_path(dir))
        .ok()
        .and_then(|v| XenbusState::parse(&v))
        .unwrap_or(XenbusState::Unknown)
}

/// Publishes `state` in `<dir>/state` (decimal string).
///
/// Reads the current value first, in one transaction with the write:
/// * same state already there → nothing is written and no watch fires
///   (returns `Ok(false)`);
/// * the `state` key does not exist → `ENOENT` and nothing is written: the
///   toolstack removed the device, and recreating its directory would leak
///   it (as Linux's `xenbus_switch_state`);
/// * otherwise the new value is written (`Ok(true)`).
pub fn switch_state<X: XsClient + ?Sized>(
    client: &X,
    dir: &str,
    state: XenbusState,
) -> Result<bool, XsError> {
    let path = state_path(dir);
    with_transaction(client, |tx| {
        let current = tx.read(&path)?;
        if XenbusState::parse(&current) == Some(state) {
            return Ok(false);
        }
        tx.write(&path, state.as_str().as_bytes())?;
        Ok(true)
    })
}

/// Reads the peer's directory and domain from one's own directory (§2):
/// `side` is `"backend"` (frontend's view: `backend`, `backend-id`) or
/// `"frontend"` (backend's view). The path must be a valid absolute path
/// and the id an ordinary domain id (not reserved); anything else is
/// [`XenbusError::Malformed`].
pub fn read_otherend<R: XsRead + ?Sized>(
    r: &R,
    dir: &str,
    side: &str,
) -> Result<(String, DomId), XenbusError> {
    let path_key = format!("{dir}/{side}");
    let peer = read_string(r, &path_key)?;
    if !peer.starts_with('/') || crate::path::canonicalize(DomId(0), &peer).is_err() {
        return Err(malformed(&path_key, peer.as_bytes()));
    }
    let id_key = format!("{dir}/{side}-id");
    let max = u32::from(pvio_abi::types::DOMID_FIRST_RESERVED.0) - 1;
    let id = read_u32_range(r, &id_key, 0, max)?;
    Ok((peer, DomId(id as u16)))
}

/// Largest error message [`dev_fatal`] writes (longer ones are cut at a
/// character boundary), well below the value quota.
pub const ERROR_MESSAGE_MAX: usize = 1024;

/// Reports a fatal device error as Linux's `xenbus_dev_fatal` does (§2):
/// writes `message` to `error/<dir>/error` below the caller's home
/// (`<dir>` relative to the home if it lies under it), then switches
/// `<dir>/state` to Closing. The exact error path is **UNVERIFIED** in
/// spec/xenbus.md.
pub fn dev_fatal<X: XsClient + ?Sized>(
    client: &X,
    dir: &str,
    message: &str,
) -> Result<(), XsError> {
    let home = format!("{}/", crate::path::domain_path(client.domid()));
    let rel = dir
        .strip_prefix(&home)
        .unwrap_or(dir)
        .trim_start_matches('/');
    let mut end = message.len().min(ERROR_MESSAGE_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    client.write(&format!("error/{rel}/error"), &message.as_bytes()[..end])?;
    switch_state(client, dir, XenbusState::Closing).map(drop)
}

/// Source of unique watch tokens for [`wait_for_state`].
static WAIT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// Waits until the state in `<dir>/state` satisfies `pred`, and returns that
/// state.
///
/// Registers a watch of its own (a unique token, removed before returning)
/// and re-reads the state at once and after every event, so the value
/// returned is always a *current* one: events may be coalesced, spurious,
/// or skip intermediate states. Events of the client's other watches stay
/// queued. A missing or malformed state reads as `Unknown`.
///
/// Errors: [`XenbusError::Timeout`] with the last state read when `timeout`
/// passes (use it as a failure guard, not a clock), or the store error if
/// the connection fails (e.g. `EIO` once the domain is released).
pub fn wait_for_state<X, P>(
    client: &X,
    dir: &str,
    timeout: Duration,
    mut pred: P,
) -> Result<XenbusState, XenbusError>
where
    X: XsClient + ?Sized,
    P: FnMut(XenbusState) -> bool,
{
    let path = state_path(dir);
    let token = format!("pvio-wait-{}", WAIT_TOKEN.fetch_add(1, Ordering::Relaxed));
    let deadline = Instant::now().checked_add(timeout);
    client.watch(&path, &token)?;
    let result = loop {
        let state = match client.read_in(None, &path) {
            Ok(v) => XenbusState::parse(&v).unwrap_or(XenbusState::Unknown),
            Err(XsError::NotFound | XsError::Access) => XenbusState::Unknown,
            Err(e) => break Err(e.into()),
        };
        if pred(state) {
            break Ok(state);
        }
        let remaining = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if remaining.is_zero() {
            break Err(XenbusError::Timeout {
                path: path.clone(),
                last: state,
            });
        }
        // Any outcome (event, timeout, closed connection) leads to a
        // re-read: a closed connection then fails the read with EIO.
        let _ = client.next_event_for(&token, remaining);
    };
    // Removing the watch also drops its pending events. It can only fail if
    // the connection is closed, which the result already reports.
    let _ = client.unwatch(&path, &token);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"42\0"), Some(42));
        assert_eq!(parse_u64(b"007"), Some(7));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"\0",
            b"18446744073709551616",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"0x10",
            b"1\0\0",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
