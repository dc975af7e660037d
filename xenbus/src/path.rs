//! Path syntax (spec/xenbus.md §6.2, `docs/misc/xenstore.txt`).
//!
//! A path is ASCII alphanumerics plus `-/_@`; no `//`, no trailing `/`
//! (except the root `/` itself), not empty. Absolute paths start with `/`
//! and are at most [`XENSTORE_ABS_PATH_MAX`] bytes; relative paths are at
//! most [`XENSTORE_REL_PATH_MAX`] bytes and resolve below
//! `/local/domain/<caller>/`. Paths starting with `@` name special watches
//! (`@introduceDomain`, `@releaseDomain`) and are accepted only where the
//! protocol allows them (watches, permissions of special nodes).

use pvio_abi::DomId;
use pvio_abi::xenbus::{XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX};

use crate::XsError;

/// Special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Special watch path fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// `/local/domain/<domid>`: the home directory of a domain, the base of its
/// relative paths (`XS_GET_DOMAIN_PATH`).
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// True for a legal path byte: `[A-Za-z0-9-/_@]`.
const fn valid_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'/' | b'_' | b'@')
}

/// True if every byte is a legal path character.
fn valid_chars(path: &str) -> bool {
    path.bytes().all(valid_byte)
}

/// Checks an absolute node path (one pass: this runs on every request).
fn check_absolute(path: &str) -> Result<(), XsError> {
    let bytes = path.as_bytes();
    let shape_ok = bytes.first() == Some(&b'/')
        && bytes.len() <= XENSTORE_ABS_PATH_MAX
        && (bytes.len() == 1 || bytes.last() != Some(&b'/'));
    if !shape_ok {
        return Err(XsError::Invalid);
    }
    let mut prev = 0u8;
    for &b in bytes {
        if !valid_byte(b) || (b == b'/' && prev == b'/') {
            return Err(XsError::Invalid);
        }
        prev = b;
    }
    Ok(())
}

/// Resolves `path` as given by `caller` to a validated absolute node path.
///
/// Relative paths get the caller's home prefix; `@` paths are refused
/// (`EINVAL`): they name no node.
pub fn canonicalize(caller: DomId, path: &str) -> Result<String, XsError> {
    if path.is_empty() || path.starts_with('@') {
        return Err(XsError::Invalid);
    }
    if path.starts_with('/') {
        check_absolute(path)?;
        return Ok(path.to_owned());
    }
    if path.len() > XENSTORE_REL_PATH_MAX {
        return Err(XsError::Invalid);
    }
    let abs = format!("{}/{path}", domain_path(caller));
    check_absolute(&abs)?;
    Ok(abs)
}

/// A watch path resolved for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WatchPath {
    /// A node path; `relative` if the caller gave it without leading `/`
    /// (events are then reported relative too).
    Node { abs: String, relative: bool },
    /// A special path (`@...`); matches only special events of that name.
    Special(String),
}

impl WatchPath {
    /// True if both name the same node or special path, however spelled
    /// (xenstored compares canonical paths).
    pub(crate) fn same_target(&self, other: &WatchPath) -> bool {
        match (self, other) {
            (WatchPath::Node { abs: a, .. }, WatchPath::Node { abs: b, .. }) => a == b,
            (WatchPath::Special(a), WatchPath::Special(b)) => a == b,
            _ => false,
        }
    }
}

/// Resolves the path of a `watch`/`unwatch` request.
pub(crate) fn canonicalize_watch(caller: DomId, path: &str) -> Result<WatchPath, XsError> {
    if let Some(rest) = path.strip_prefix('@') {
        if rest.is_empty() || path.len() > XENSTORE_ABS_PATH_MAX || !valid_chars(path) {
            return Err(XsError::Invalid);
        }
        return Ok(WatchPath::Special(path.to_owned()));
    }
    let abs = canonicalize(caller, path)?;
    Ok(WatchPath::Node {
        abs,
        relative: !path.starts_with('/'),
    })
}

/// The parent of a valid absolute path other than `/`.
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a valid absolute path other than `/`.
pub(crate) fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `parent/name` for a valid absolute `parent`.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// True if `path` is `base` or lies below it (xenstore's "child" relation).
pub(crate) fn is_at_or_below(path: &str, base: &str) -> bool {
    base == "/"
        || path == base
        || (path.len() > base.len()
            && path.starts_with(base)
            && path.as_bytes()[base.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        let d = DomId(3);
        assert_eq!(canonicalize(d, "/a/b").unwrap(), "/a/b");
        assert_eq!(canonicalize(d, "/").unwrap(), "/");
        assert_eq!(
            canonicalize(d, "device/vif").unwrap(),
            "/local/domain/3/device/vif"
        );
        for bad in ["", "/a/", "//a", "/a//b", "/a b", "/a.b", "a/", "@x", "/é"] {
            assert_eq!(canonicalize(d, bad), Err(XsError::Invalid), "{bad:?}");
        }
        let long_abs = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX));
        assert_eq!(canonicalize(d, &long_abs), Err(XsError::Invalid));
        let ok_abs = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX - 1));
        assert!(canonicalize(d, &ok_abs).is_ok());
        let long_rel = "a".repeat(XENSTORE_REL_PATH_MAX + 1);
        assert_eq!(canonicalize(d, &long_rel), Err(XsError::Invalid));
        assert!(canonicalize(d, &"a".repeat(XENSTORE_REL_PATH_MAX)).is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(basename("/a/b/c"), "c");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(is_at_or_below("/a", "/"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(!is_at_or_below("/a", "/a/b"));
        assert_eq!(
            canonicalize_watch(DomId(1), "@releaseDomain").unwrap(),
            WatchPath::Special("@releaseDomain".into())
        );
        assert_eq!(canonicalize_watch(DomId(1), "@"), Err(XsError::Invalid));
        assert_eq!(
            canonicalize_watch(DomId(1), "x").unwrap(),
            WatchPath::Node {
                abs: "/local/domain/1/x".into(),
                relative: true
            }
        );
    }
}
