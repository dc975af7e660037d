//! `xs_wire`: the xenstore wire protocol, both the codec
//! (`pvio_xenbus::wire::{decode, split_strings}`) on the raw byte stream and
//! the real server (`pvio_xenbus::wire::serve_stream` on a
//! `pvio_xenbus::Store`) on one end of a Unix socketpair, a hostile client
//! on the other (SECURITY.md C1, C2). The server must answer each request
//! in order with its `req_id`, never send an oversized message, and close
//! when the client does.

use std::io::Write;
use std::os::unix::net::UnixStream;

use arbitrary::Arbitrary;
use pvio_abi::DomId;
use pvio_abi::xenbus::{XENSTORE_PAYLOAD_MAX, XS_ERROR, XS_WATCH_EVENT};
use pvio_xenbus::Store;
use pvio_xenbus::wire::{HEADER_SIZE, Message, decode, read_message, split_strings};

use crate::Enc;

/// The connection's domain: 0 (privileged) or a guest.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub guest: bool,
}

const PATHS: [&str; 8] = [
    "/local/domain/1/a",
    "/local/domain/1",
    "/",
    "a",
    "",
    "/local/domain/0/x/y",
    "@introduceDomain",
    "/tool/t",
];

/// One string argument: a path from a table, a suffix, a NUL or not.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    pub path: u8,
    pub suffix: [u8; 2],
    pub suffix_len: u8,
    pub nul: bool,
}

/// What the client sends.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A well-framed message of type `ty % 28` (or `ty` itself if
    /// `raw_ty`), with up to 3 arguments.
    Msg {
        ty: u32,
        raw_ty: bool,
        req_id: u32,
        tx_id: u8,
        nargs: u8,
        args: [Arg; 3],
    },
    /// A raw header announcing `len` bytes, then `body[..body_len % 17]`.
    Junk {
        ty: u32,
        len: u32,
        body_len: u8,
        body: [u8; 16],
    },
}

/// Number of [`Op`] variants.
pub const OPS: u32 = 2;

fn bytes(op: &Op) -> (Vec<u8>, Option<u32>) {
    match op {
        Op::Msg {
            ty,
            raw_ty,
            req_id,
            tx_id,
            nargs,
            args,
        } => {
            let mut payload = Vec::new();
            for a in &args[..usize::from(nargs % 4)] {
                payload.extend_from_slice(PATHS[usize::from(a.path) % PATHS.len()].as_bytes());
                payload.extend_from_slice(&a.suffix[..usize::from(a.suffix_len % 3)]);
                if a.nul {
                    payload.push(0);
                }
            }
            let ty = if *raw_ty { *ty } else { ty % 28 };
            let m = Message::new(ty, *req_id, u32::from(*tx_id % 4), payload);
            (m.encode().expect("small message"), Some(*req_id))
        }
        Op::Junk {
            ty,
            len,
            body_len,
            body,
        } => {
            let mut v = Vec::new();
            for w in [*ty, 7, 0, *len] {
                v.extend_from_slice(&w.to_ne_bytes());
            }
            v.extend_from_slice(&body[..usize::from(body_len % 17)]);
            (v, None)
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((h, ops)) = crate::decode::<Header, Op>(data) else {
        return;
    };
    let mut stream = Vec::new();
    let mut ids = Vec::new();
    let mut framed = true;
    for op in &ops {
        let (b, id) = bytes(op);
        stream.extend_from_slice(&b);
        match id {
            Some(id) => ids.push(id),
            None => framed = false,
        }
    }
    // The codec on the whole stream.
    let mut at = 0;
    while let Ok(Some((m, used))) = decode(&stream[at..]) {
        assert!(used >= HEADER_SIZE && used <= stream.len() - at);
        assert!(m.payload.len() <= XENSTORE_PAYLOAD_MAX);
        let _ = split_strings(&m.payload);
        at += used;
    }
    // The server on a socketpair.
    let store = Store::new();
    let (client, server) = UnixStream::pair().expect("socketpair");
    let domid = if h.guest { DomId(1) } else { DomId(0) };
    let srv = std::thread::spawn(move || {
        let _ = pvio_xenbus::wire::serve_stream_blocking(&store, server, domid);
    });
    let mut reader = client.try_clone().expect("clone");
    let rd = std::thread::spawn(move || {
        let mut replies = Vec::new();
        while let Ok(Some(m)) = read_message(&mut reader) {
            assert!(m.payload.len() <= XENSTORE_PAYLOAD_MAX);
            replies.push(m);
        }
        replies
    });
    let mut w = &client;
    let _ = w.write_all(&stream);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let replies = rd.join().expect("reader");
    srv.join().expect("server");
    if framed {
        let answers: Vec<u32> = replies
            .iter()
            .filter(|m| m.ty != XS_WATCH_EVENT)
            .map(|m| m.req_id)
            .collect();
        assert!(answers.len() <= ids.len());
        assert_eq!(answers, ids[..answers.len()], "replies out of order");
        for m in &replies {
            if m.ty == XS_ERROR {
                assert!(split_strings(&m.payload).is_ok());
            }
        }
    }
}

fn msg(e: &mut Enc, ty: u32, req_id: u32, tx: u8, args: &[(u8, bool)]) {
    e.variant(0, OPS)
        .u32(ty)
        .bool(false)
        .u32(req_id)
        .u8(tx)
        .u8(args.len() as u8);
    for i in 0..3 {
        let (p, nul) = args.get(i).copied().unwrap_or((0, true));
        e.u8(p).bytes(b"x1").u8(0).bool(nul);
    }
}

/// Seeds: write/read/directory/rm, watches and a transaction, malformed
/// payloads, an oversized header, a truncated message.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use pvio_abi::xenbus::*;
    let mut out = Vec::new();
    let mut e = Enc::new();
    e.bool(false);
    msg(&mut e, XS_WRITE, 1, 0, &[(0, true), (3, false)]);
    msg(&mut e, XS_READ, 2, 0, &[(0, true)]);
    msg(&mut e, XS_DIRECTORY, 3, 0, &[(1, true)]);
    msg(&mut e, XS_GET_PERMS, 4, 0, &[(0, true)]);
    msg(&mut e, XS_MKDIR, 5, 0, &[(5, true)]);
    msg(&mut e, XS_RM, 6, 0, &[(1, true)]);
    msg(&mut e, XS_GET_DOMAIN_PATH, 7, 0, &[(3, true)]);
    out.push(("ops", e.done()));
    let mut e = Enc::new();
    e.bool(true);
    msg(&mut e, XS_WATCH, 1, 0, &[(1, true), (3, true)]);
    msg(&mut e, XS_TRANSACTION_START, 2, 0, &[(4, true)]);
    msg(&mut e, XS_WRITE, 3, 1, &[(0, true), (3, false)]);
    msg(&mut e, XS_TRANSACTION_END, 4, 1, &[(3, true)]);
    msg(&mut e, XS_UNWATCH, 5, 0, &[(1, true), (3, true)]);
    msg(&mut e, XS_RESET_WATCHES, 6, 0, &[]);
    out.push(("watch_tx_guest", e.done()));
    let mut e = Enc::new();
    e.bool(false);
    msg(&mut e, XS_READ, 1, 0, &[(0, false)]);
    msg(&mut e, XS_WRITE, 2, 0, &[]);
    msg(
        &mut e,
        XS_SET_PERMS,
        3,
        0,
        &[(0, true), (3, true), (3, true)],
    );
    msg(&mut e, 99, 4, 0, &[]);
    e.variant(1, OPS)
        .u32(XS_READ)
        .u32(4097)
        .u8(0)
        .bytes(&[0; 16]);
    out.push(("malformed_toolong", e.done()));
    let mut e = Enc::new();
    e.bool(false);
    msg(&mut e, XS_WRITE, 1, 0, &[(7, true), (3, false)]);
    e.variant(1, OPS)
        .u32(XS_READ)
        .u32(100)
        .u8(5)
        .bytes(&[b'/'; 16]);
    out.push(("truncated", e.done()));
    out
}
