//! The store over the real xenstore wire protocol (spec/xenbus.md §6.2–6.4,
//! `io/xs_wire.h`): a strict codec, [`WireServer`] (serves a [`Store`] on
//! a Unix socket, as xenstored does) and [`WireConn`] (a client
//! implementing [`crate::XsClient`] over a `UnixStream`).
//!
//! # Codec
//! A message is a 16-byte header `{type, req_id, tx_id, len}` (native-endian
//! `u32`s) followed by `len` payload bytes, `len` ≤
//! [`XENSTORE_PAYLOAD_MAX`]. The codec never allocates more than one
//! payload: a header announcing more is refused ([`WireError::TooLong`])
//! before anything is read, and the server then closes that connection
//! (as xenstored does). Payload strings are NUL-terminated
//! ([`split_strings`]); a malformed payload gets an `EINVAL` reply, an
//! unknown or unsupported type `ENOSYS`.
//!
//! # Against hostile clients (SECURITY.md C1/C2)
//! A server connection handles one request at a time (no queue of
//! outstanding requests), keeps at most one message in memory, and its
//! watch events come from the store's bounded, coalescing per-connection
//! queue. A client that stops reading blocks only its own connection; after
//! [`WRITE_TIMEOUT`] without progress that connection is closed.
//!
//! # Standard clients
//! Debian's `xenstore-utils` (libxenstore) talk to a [`WireServer`] when
//! `XENSTORED_PATH` names its socket: libxenstore's `xs_open` tries
//! `xs_daemon_socket()` first, which returns `$XENSTORED_PATH` (else
//! `/var/run/xenstored/socket`), and uses the socket protocol when the path
//! is a socket. E.g. `XENSTORED_PATH=/run/pvio/xs.sock xenstore-ls /local`.
//!
//! [`Store`]: crate::Store

mod client;
mod server;

use std::fmt;
use std::io::{self, Read};

use pvio_abi::xenbus::{XENSTORE_PAYLOAD_MAX, XsdSockmsg};

use crate::XsError;

pub use client::WireConn;
pub use server::{WRITE_TIMEOUT, WireServer, serve_stream, serve_stream_blocking};

/// Size of the message header (`struct xsd_sockmsg`).
pub const HEADER_SIZE: usize = 16;

/// One xenstore message: header fields and payload (at most
/// [`XENSTORE_PAYLOAD_MAX`] bytes once encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `XS_*` type.
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message.
    pub fn new(ty: u32, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        Message {
            ty,
            req_id,
            tx_id,
            payload,
        }
    }

    /// The header of this message.
    pub fn header(&self) -> XsdSockmsg {
        XsdSockmsg {
            type_: self.ty,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: self.payload.len() as u32,
        }
    }

    /// Header and payload as sent; `E2BIG` if the payload is above
    /// [`XENSTORE_PAYLOAD_MAX`].
    pub fn encode(&self) -> Result<Vec<u8>, XsError> {
        if self.payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::TooBig);
        }
        let h = self.header();
        let mut out = Vec::with_capacity(HEADER_SIZE + self.payload.len());
        for v in [h.type_, h.req_id, h.tx_id, h.len] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

/// Why a byte stream is not a valid message sequence.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    /// A header announced a payload above [`XENSTORE_PAYLOAD_MAX`]: the
    /// connection must be closed.
    TooLong(u32),
    /// The stream ended inside a message.
    Truncated,
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLong(len) => write!(
                f,
                "payload of {len} bytes announced (max {XENSTORE_PAYLOAD_MAX})"
            ),
            WireError::Truncated => f.write_str("stream ended inside a message"),
            WireError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Parses a header; [`WireError::TooLong`] if `len` is above
/// [`XENSTORE_PAYLOAD_MAX`].
pub fn parse_header(bytes: &[u8; HEADER_SIZE]) -> Result<XsdSockmsg, WireError> {
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let h = XsdSockmsg {
        type_: word(0),
        req_id: word(4),
        tx_id: word(8),
        len: word(12),
    };
    if h.len as usize > XENSTORE_PAYLOAD_MAX {
        return Err(WireError::TooLong(h.len));
    }
    Ok(h)
}

/// Decodes the first message of `buf`: `Ok(None)` if `buf` holds only part
/// of one (read more), else the message and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_SIZE>() else {
        return Ok(None);
    };
    let h = parse_header(head)?;
    let end = HEADER_SIZE + h.len as usize;
    let Some(payload) = buf.get(HEADER_SIZE..end) else {
        return Ok(None);
    };
    let msg = Message::new(h.type_, h.req_id, h.tx_id, payload.to_vec());
    Ok(Some((msg, end)))
}

/// Reads one message: `Ok(None)` at a clean end of stream (between
/// messages). Allocates at most [`XENSTORE_PAYLOAD_MAX`] bytes.
pub fn read_message(r: &mut impl Read) -> Result<Option<Message>, WireError> {
    let mut head = [0u8; HEADER_SIZE];
    let mut got = 0;
    while got < HEADER_SIZE {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    let h = parse_header(&head)?;
    let mut payload = vec![0u8; h.len as usize];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Truncated,
        _ => WireError::Io(e),
    })?;
    Ok(Some(Message::new(h.type_, h.req_id, h.tx_id, payload)))
}

/// Splits a payload of NUL-terminated strings (`a\0b\0`) into the strings
/// without their NULs. An empty payload has none; a payload not ending in
/// NUL is `EINVAL`.
pub fn split_strings(payload: &[u8]) -> Result<Vec<&[u8]>, XsError> {
    let Some(body) = payload.strip_suffix(&[0]) else {
        return if payload.is_empty() {
            Ok(Vec::new())
        } else {
            Err(XsError::Invalid)
        };
    };
    Ok(body.split(|&b| b == 0).collect())
}

/// Joins strings into a payload, each followed by a NUL.
pub fn join_strings<S: AsRef<[u8]>>(strings: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(s.as_ref());
        out.push(0);
    }
    out
}

/// A string argument: UTF-8 without NUL, else `EINVAL`.
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, XsError> {
    std::str::from_utf8(bytes).map_err(|_| XsError::Invalid)
}
