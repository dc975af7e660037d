use core::fmt;

/// A shared-memory access that could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// `[offset, offset + len)` does not lie inside the region of `size` bytes.
    OutOfBounds {
        /// Requested start.
        offset: usize,
        /// Requested length.
        len: usize,
        /// Size of the region.
        size: usize,
    },
    /// An atomic word access at an offset that is not a multiple of its size.
    Misaligned {
        /// Requested offset.
        offset: usize,
        /// Required alignment.
        align: usize,
    },
    /// The backend cannot perform this access (only [`crate::SharedMem`]
    /// model backends have such gaps; each documents them).
    Unsupported {
        /// Which access.
        what: &'static str,
    },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemError::OutOfBounds { offset, len, size } => write!(
                f,
                "shared memory access [{offset:#x}, +{len:#x}) outside a region of {size:#x} bytes"
            ),
            MemError::Misaligned { offset, align } => {
                write!(
                    f,
                    "atomic access at {offset:#x} is not {align}-byte aligned"
                )
            }
            MemError::Unsupported { what } => write!(f, "unsupported access: {what}"),
        }
    }
}

impl core::error::Error for MemError {}

/// Checks that `[offset, offset + len)` lies within `size` bytes.
#[inline]
pub(crate) fn check_range(offset: usize, len: usize, size: usize) -> Result<(), MemError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemError::OutOfBounds { offset, len, size }),
    }
}
