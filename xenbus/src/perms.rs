//! Node permissions, as in xenstored (`docs/misc/xenstore.txt`,
//! `perm_for_conn` in `xenstored_core.c`).
//!
//! A node's permission list is never empty. Its first entry names the
//! **owner** and the **default** permission of every domain not listed;
//! the following entries are per-domain ACL entries, the first match wins.
//! Domain 0 and the owner have every right (read, write, set permissions).
//! On the wire each entry is a letter and a domid: `n5` none, `r5` read,
//! `w5` write, `b5` both.

use core::fmt;

use pvio_abi::DomId;

use crate::XsError;

/// The privileged domain: reads and writes everything, may set permissions
/// and owners anywhere, and is exempt from node quotas.
pub const DOM0: DomId = DomId(0);

/// One access right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Perm {
    /// `n`: no access.
    #[default]
    None,
    /// `r`: read only.
    Read,
    /// `w`: write only.
    Write,
    /// `b`: read and write.
    Both,
}

impl Perm {
    /// The wire letter (`'n'`, `'r'`, `'w'`, `'b'`).
    pub const fn letter(self) -> char {
        match self {
            Perm::None => 'n',
            Perm::Read => 'r',
            Perm::Write => 'w',
            Perm::Both => 'b',
        }
    }

    /// Parses a wire letter.
    pub const fn from_letter(c: u8) -> Option<Perm> {
        match c {
            b'n' => Some(Perm::None),
            b'r' => Some(Perm::Read),
            b'w' => Some(Perm::Write),
            b'b' => Some(Perm::Both),
            _ => None,
        }
    }

    /// True for `r` and `b`.
    pub const fn can_read(self) -> bool {
        matches!(self, Perm::Read | Perm::Both)
    }

    /// True for `w` and `b`.
    pub const fn can_write(self) -> bool {
        matches!(self, Perm::Write | Perm::Both)
    }
}

/// One entry of a permission list: a domain and its right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PermEntry {
    /// The domain.
    pub domid: DomId,
    /// Its right (for the first entry: the default right of everyone else).
    pub perm: Perm,
}

impl PermEntry {
    /// Parses one wire string (`"r5"`): a letter and a decimal domid
    /// (0..=65535, no sign, no spaces).
    pub fn parse(s: &str) -> Result<PermEntry, XsError> {
        let bytes = s.as_bytes();
        let (&letter, digits) = bytes.split_first().ok_or(XsError::Invalid)?;
        let perm = Perm::from_letter(letter).ok_or(XsError::Invalid)?;
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(XsError::Invalid);
        }
        let id: u32 = digits
            .iter()
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        let id = u16::try_from(id).map_err(|_| XsError::Invalid)?;
        Ok(PermEntry {
            domid: DomId(id),
            perm,
        })
    }
}

/// Formats the wire string (`r5`).
impl fmt::Display for PermEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.perm.letter(), self.domid)
    }
}

/// A node's permission list: owner and default right, then ACL entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Never empty: `entries[0]` is the owner and default right.
    entries: Vec<PermEntry>,
}

impl Perms {
    /// A list owned by `owner` giving `default` to every other domain.
    pub fn new(owner: DomId, default: Perm) -> Perms {
        Perms {
            entries: vec![PermEntry {
                domid: owner,
                perm: default,
            }],
        }
    }

    /// Appends an ACL entry giving `perm` to `domid`.
    #[must_use]
    pub fn with(mut self, domid: DomId, perm: Perm) -> Perms {
        self.entries.push(PermEntry { domid, perm });
        self
    }

    /// Builds a list from entries; `None` if `entries` is empty.
    pub fn from_entries(entries: Vec<PermEntry>) -> Option<Perms> {
        if entries.is_empty() {
            None
        } else {
            Some(Perms { entries })
        }
    }

    /// Parses wire strings (`["n1", "r0"]`); `EINVAL` if empty or malformed.
    pub fn parse<S: AsRef<str>>(strings: &[S]) -> Result<Perms, XsError> {
        let entries = strings
            .iter()
            .map(|s| PermEntry::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Perms::from_entries(entries).ok_or(XsError::Invalid)
    }

    /// The wire strings (`["n1", "r0"]`).
    pub fn to_strings(&self) -> Vec<String> {
        self.entries.iter().map(ToString::to_string).collect()
    }

    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.entries[0].domid
    }

    /// The right of every domain that is neither the owner nor listed.
    pub fn default_perm(&self) -> Perm {
        self.entries[0].perm
    }

    /// The ACL entries after the first.
    pub fn acl(&self) -> &[PermEntry] {
        &self.entries[1..]
    }

    /// All entries, owner first.
    pub fn entries(&self) -> &[PermEntry] {
        &self.entries
    }

    /// The effective right of `domid` (`perm_for_conn`): everything for
    /// dom0 and the owner, else the first matching ACL entry, else the
    /// default.
    pub fn for_domain(&self, domid: DomId) -> Perm {
        if domid == DOM0 || domid == self.owner() {
            return Perm::Both;
        }
        self.acl()
            .iter()
            .find(|e| e.domid == domid)
            .map_or(self.default_perm(), |e| e.perm)
    }

    /// True if `domid` may read.
    pub fn can_read(&self, domid: DomId) -> bool {
        self.for_domain(domid).can_read()
    }

    /// True if `domid` may write.
    pub fn can_write(&self, domid: DomId) -> bool {
        self.for_domain(domid).can_write()
    }

    /// True if `domid` may change these permissions (dom0 or the owner).
    pub fn is_owner_or_privileged(&self, domid: DomId) -> bool {
        domid == DOM0 || domid == self.owner()
    }

    /// A copy owned by `owner` (other entries unchanged).
    pub(crate) fn with_owner(&self, owner: DomId) -> Perms {
        let mut p = self.clone();
        p.entries[0].domid = owner;
        p
    }

    /// Forgets `domid` (XSA-322): its ACL entries are dropped and, if it
    /// owned the node, dom0 takes over. Returns true if anything changed.
    pub(crate) fn forget(&mut self, domid: DomId) -> bool {
        let before = self.entries.len();
        let mut owner = self.entries[0];
        let mut changed = false;
        if owner.domid == domid {
            owner.domid = DOM0;
            changed = true;
        }
        let mut entries = Vec::with_capacity(before);
        entries.push(owner);
        entries.extend(
            self.entries[1..]
                .iter()
                .copied()
                .filter(|e| e.domid != domid),
        );
        changed |= entries.len() != before;
        self.entries = entries;
        changed
    }
}

/// Formats the wire strings separated by commas (`n1,r0`).
impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let p = Perms::parse(&["n1", "r2", "b65535"]).unwrap();
        assert_eq!(p.owner(), DomId(1));
        assert_eq!(p.default_perm(), Perm::None);
        assert_eq!(p.acl().len(), 2);
        assert_eq!(p.to_strings(), ["n1", "r2", "b65535"]);
        assert_eq!(p.to_string(), "n1,r2,b65535");
        for bad in ["", "x1", "r", "r-1", "r65536", "r 1", "r1a", "r123456"] {
            assert_eq!(PermEntry::parse(bad), Err(XsError::Invalid), "{bad:?}");
        }
        assert_eq!(Perms::parse::<&str>(&[]), Err(XsError::Invalid));
    }

    #[test]
    fn effective_rights() {
        let p = Perms::new(DomId(1), Perm::Read)
            .with(DomId(2), Perm::None)
            .with(DomId(2), Perm::Both);
        assert_eq!(p.for_domain(DomId(0)), Perm::Both);
        assert_eq!(p.for_domain(DomId(1)), Perm::Both);
        assert_eq!(p.for_domain(DomId(2)), Perm::None, "first match wins");
        assert_eq!(p.for_domain(DomId(3)), Perm::Read);
        assert!(p.can_read(DomId(3)) && !p.can_write(DomId(3)));
        assert!(p.is_owner_or_privileged(DomId(1)) && !p.is_owner_or_privileged(DomId(3)));
    }

    #[test]
    fn forget_domain() {
        let mut p = Perms::new(DomId(1), Perm::None)
            .with(DomId(2), Perm::Read)
            .with(DomId(3), Perm::Both);
        assert!(p.forget(DomId(2)));
        assert_eq!(p.to_string(), "n1,b3");
        assert!(p.forget(DomId(1)));
        assert_eq!(p.to_string(), "n0,b3");
        assert!(!p.forget(DomId(7)));
    }
}
