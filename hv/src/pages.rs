//! A multi-page mapping: several granted frames seen as one region.

use std::fmt;
use std::sync::Arc;

use pvio_abi::{GrantHandle, PAGE_SIZE};
use pvio_shmem::{MemError, MemfdMem, Ordering, Pod, RawView, SharedMem, Window};

use crate::domain::Domain;

/// The pages of a multi-page mapping: one window when the granted frames
/// are consecutive in the granter's memory (the usual case: frontends
/// allocate ring pages together), else one window per page.
enum Pages {
    One(Window<Arc<MemfdMem>>),
    Many(Vec<Window<Arc<MemfdMem>>>),
}

/// Writable mappings of several grants of one domain, in order, as one
/// [`SharedMem`] region (a multi-page ring, `spec/ring.md` §9). Dropping it
/// unmaps every grant.
pub struct MappedPages {
    pages: Pages,
    handles: Vec<GrantHandle>,
    dom: Domain,
}

impl fmt::Debug for MappedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedPages")
            .field("pages", &self.handles.len())
            .finish()
    }
}

impl MappedPages {
    pub(crate) fn new(
        dom: Domain,
        granter: &Arc<MemfdMem>,
        handles: Vec<GrantHandle>,
        frames: &[u32],
    ) -> Option<Self> {
        let nr_frames = granter.len() / PAGE_SIZE;
        let frame_window = |f: u32| {
            ((f as usize) < nr_frames)
                .then(|| Window::new(granter.clone(), f as usize * PAGE_SIZE, PAGE_SIZE).ok())
                .flatten()
        };
        let consecutive = frames.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
        let pages = if consecutive && !frames.is_empty() {
            let first = frames[0] as usize;
            if first + frames.len() > nr_frames {
                return None;
            }
            Pages::One(
                Window::new(granter.clone(), first * PAGE_SIZE, frames.len() * PAGE_SIZE).ok()?,
            )
        } else {
            Pages::Many(
                frames
                    .iter()
                    .map(|&f| frame_window(f))
                    .collect::<Option<Vec<_>>>()?,
            )
        };
        Some(MappedPages {
            pages,
            handles,
            dom,
        })
    }

    /// The handles of the mapped grants, in page order.
    pub fn handles(&self) -> &[GrantHandle] {
        &self.handles
    }

    /// Whether the pages are one contiguous run of the granter's memory.
    pub fn is_contiguous(&self) -> bool {
        matches!(self.pages, Pages::One(_))
    }

    /// The page holding `offset` and the offset inside it.
    fn page(&self, offset: usize) -> Result<(&Window<Arc<MemfdMem>>, usize), MemError> {
        match &self.pages {
            Pages::One(w) => Ok((w, offset)),
            Pages::Many(v) => v
                .get(offset / PAGE_SIZE)
                .map(|w| (w, offset % PAGE_SIZE))
                .ok_or(MemError::OutOfBounds {
                    offset,
                    len: 1,
                    size: v.len() * PAGE_SIZE,
                }),
        }
    }

    /// Runs `f(page, offset_in_page, range_in_buffer)` over the pages that
    /// `[offset, offset + len)` covers.
    fn split(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&Window<Arc<MemfdMem>>, usize, std::ops::Range<usize>) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(MemError::OutOfBounds { offset, len, size }),
        }
        let mut done = 0;
        while done < len {
            let (w, at) = self.page(offset + done)?;
            let n = (len - done).min(w.size() - at);
            f(w, at, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

impl Drop for MappedPages {
    fn drop(&mut self) {
        for &h in &self.handles {
            let _ = self.dom.unmap_grant(h);
        }
    }
}

macro_rules! one_page {
    ($self:ident, $offset:ident, $size:expr, |$w:ident, $at:ident| $body:expr) => {{
        if let Pages::One($w) = &$self.pages {
            let $at = $offset;
            return $body;
        }
        let ($w, $at) = $self.page($offset)?;
        if $at + $size > PAGE_SIZE {
            return Err(MemError::Misaligned {
                offset: $offset,
                align: $size,
            });
        }
        $body
    }};
}

impl SharedMem for MappedPages {
    fn size(&self) -> usize {
        match &self.pages {
            Pages::One(w) => w.size(),
            Pages::Many(v) => v.len() * PAGE_SIZE,
        }
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), MemError> {
        if let Pages::One(w) = &self.pages {
            return w.read_bytes(offset, dst);
        }
        self.split(offset, dst.len(), |w, at, r| w.read_bytes(at, &mut dst[r]))
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), MemError> {
        if let Pages::One(w) = &self.pages {
            return w.write_bytes(offset, src);
        }
        self.split(offset, src.len(), |w, at, r| w.write_bytes(at, &src[r]))
    }
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), MemError> {
        self.split(offset, len, |w, at, r| w.fill(at, r.len(), byte))
    }
    fn raw_view(&self) -> Option<RawView<'_>> {
        match &self.pages {
            Pages::One(w) => w.raw_view(),
            Pages::Many(_) => None,
        }
    }
    fn prefetch(&self, offset: usize, len: usize, write: bool) {
        if let Pages::One(w) = &self.pages {
            w.prefetch(offset, len, write)
        }
    }
    #[inline(always)]
    fn read_pod<T: Pod>(&self, offset: usize) -> Result<T, MemError> {
        match &self.pages {
            Pages::One(w) => w.read_pod(offset),
            Pages::Many(_) => {
                if !offset.is_multiple_of(align_of::<T>()) {
                    return Err(MemError::Misaligned {
                        offset,
                        align: align_of::<T>(),
                    });
                }
                let mut v = T::zeroed();
                self.read_bytes(offset, bytemuck_bytes_mut(&mut v))?;
                Ok(v)
            }
        }
    }
    #[inline(always)]
    fn write_pod<T: Pod>(&self, offset: usize, val: &T) -> Result<(), MemError> {
        match &self.pages {
            Pages::One(w) => w.write_pod(offset, val),
            Pages::Many(_) => {
                if !offset.is_multiple_of(align_of::<T>()) {
                    return Err(MemError::Misaligned {
                        offset,
                        align: align_of::<T>(),
                    });
                }
                self.write_bytes(offset, bytemuck_bytes(val))
            }
        }
    }
    #[inline(always)]
    fn read_records<T: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(T),
    ) -> Result<(), MemError> {
        if let Pages::One(w) = &self.pages {
            return w.read_records(offset, stride, n, f);
        }
        for i in 0..n {
            f(self.read_pod(offset + i * stride)?);
        }
        Ok(())
    }
    #[inline(always)]
    fn write_records<T: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(usize) -> T,
    ) -> Result<(), MemError> {
        if let Pages::One(w) = &self.pages {
            return w.write_records(offset, stride, n, f);
        }
        if n > 0 {
            let last = (n - 1)
                .checked_mul(stride)
                .and_then(|x| x.checked_add(offset + size_of::<T>()));
            if last.is_none_or(|end| end > self.size()) {
                return Err(MemError::OutOfBounds {
                    offset,
                    len: n * stride,
                    size: self.size(),
                });
            }
        }
        for i in 0..n {
            self.write_pod(offset + i * stride, &f(i))?;
        }
        Ok(())
    }
    #[inline(always)]
    fn update_records<R: Pod, W: Pod>(
        &self,
        offset: usize,
        stride: usize,
        n: usize,
        mut f: impl FnMut(R) -> W,
    ) -> Result<(), MemError> {
        if let Pages::One(w) = &self.pages {
            return w.update_records(offset, stride, n, f);
        }
        for i in 0..n {
            let off = offset + i * stride;
            let w = f(self.read_pod(off)?);
            self.write_pod(off, &w)?;
        }
        Ok(())
    }
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, MemError> {
        one_page!(self, offset, 2, |w, at| w.load_u16(at, order))
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, MemError> {
        one_page!(self, offset, 4, |w, at| w.load_u32(at, order))
    }
    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, MemError> {
        one_page!(self, offset, 8, |w, at| w.load_u64(at, order))
    }
    fn store_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<(), MemError> {
        one_page!(self, offset, 2, |w, at| w.store_u16(at, val, order))
    }
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<(), MemError> {
        one_page!(self, offset, 4, |w, at| w.store_u32(at, val, order))
    }
    fn store_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<(), MemError> {
        one_page!(self, offset, 8, |w, at| w.store_u64(at, val, order))
    }
    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u16, u16>, MemError> {
        one_page!(self, offset, 2, |w, at| w
            .compare_exchange_u16(at, current, new, success, failure))
    }
    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u32, u32>, MemError> {
        one_page!(self, offset, 4, |w, at| w
            .compare_exchange_u32(at, current, new, success, failure))
    }
    fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Result<u64, u64>, MemError> {
        one_page!(self, offset, 8, |w, at| w
            .compare_exchange_u64(at, current, new, success, failure))
    }
    fn fetch_or_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError> {
        one_page!(self, offset, 2, |w, at| w.fetch_or_u16(at, val, order))
    }
    fn fetch_and_u16(&self, offset: usize, val: u16, order: Ordering) -> Result<u16, MemError> {
        one_page!(self, offset, 2, |w, at| w.fetch_and_u16(at, val, order))
    }
    fn fetch_or_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError> {
        one_page!(self, offset, 4, |w, at| w.fetch_or_u32(at, val, order))
    }
    fn fetch_and_u32(&self, offset: usize, val: u32, order: Ordering) -> Result<u32, MemError> {
        one_page!(self, offset, 4, |w, at| w.fetch_and_u32(at, val, order))
    }
    fn fetch_or_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<u64, MemError> {
        one_page!(self, offset, 8, |w, at| w.fetch_or_u64(at, val, order))
    }
    fn fetch_and_u64(&self, offset: usize, val: u64, order: Ordering) -> Result<u64, MemError> {
        one_page!(self, offset, 8, |w, at| w.fetch_and_u64(at, val, order))
    }
    fn fence(&self, order: Ordering) {
        std::sync::atomic::fence(order)
    }
}

fn bytemuck_bytes_mut<T: Pod>(v: &mut T) -> &mut [u8] {
    pvio_shmem::bytes_of_mut(v)
}

fn bytemuck_bytes<T: Pod>(v: &T) -> &[u8] {
    pvio_shmem::bytes_of(v)
}
