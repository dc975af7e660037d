use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;

use crate::raw::RawRegion;
use crate::{MemError, PAGE_SIZE};

/// Zeroed, page-aligned heap memory shared between threads of one process.
#[derive(Debug)]
pub struct HeapMem {
    raw: RawRegion,
    layout: Layout,
}

impl HeapMem {
    /// Allocates `len` zeroed bytes aligned to [`PAGE_SIZE`].
    ///
    /// Returns `None` for a zero length or when the allocator fails.
    pub fn new(len: usize) -> Option<Self> {
        if len == 0 {
            return None;
        }
        let layout = Layout::from_size_align(len, PAGE_SIZE).ok()?;
        // SAFETY: layout has a non-zero size (checked above).
        let ptr = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(ptr)?;
        // SAFETY: base points to `len` freshly allocated bytes that stay
        // allocated until Drop, and no reference to them is ever created. The
        // layout's alignment makes it page-aligned.
        let Some(raw) = (unsafe { RawRegion::new(base, len) }) else {
            // SAFETY: allocated just above with this layout, never shared.
            unsafe { dealloc(ptr, layout) };
            return None;
        };
        Some(HeapMem { raw, layout })
    }

    /// Allocates `n` zeroed pages.
    pub fn pages(n: usize) -> Option<Self> {
        Self::new(n.checked_mul(PAGE_SIZE)?)
    }

    #[inline]
    fn raw(&self) -> &RawRegion {
        &self.raw
    }

    /// Copies the whole region into a vector (a snapshot for tests and tools).
    pub fn to_vec(&self) -> Result<alloc::vec::Vec<u8>, MemError> {
        let mut v = alloc::vec![0u8; self.raw.len()];
        self.raw.read_bytes(0, &mut v)?;
        Ok(v)
    }
}

impl Drop for HeapMem {
    fn drop(&mut self) {
        let ptr = self.raw.base_ptr();
        // SAFETY: ptr was returned by alloc_zeroed with self.layout and is
        // deallocated exactly once, here.
        unsafe { dealloc(ptr, self.layout) }
    }
}

crate::impl_shared_mem_via_raw!(HeapMem);
