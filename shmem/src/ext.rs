use crate::{MemError, Pod, SharedMem};

/// Typed copies in and out of a [`SharedMem`] region.
///
/// Blanket-implemented for every region.
pub trait SharedMemExt: SharedMem + Sized {
    /// Copies a `T` out of the region at `offset`, reading each byte once.
    ///
    /// The result is a private value: validate it, then use only it.
    #[inline(always)]
    fn read_obj<T: Pod>(&self, offset: usize) -> Result<T, MemError> {
        match self.read_pod(offset) {
            Err(MemError::Misaligned { .. }) => read_unaligned(self, offset),
            r => r,
        }
    }

    /// Copies `val` into the region at `offset` (all of its bytes, padding
    /// included: `Pod` types have no uninitialised bytes).
    #[inline(always)]
    fn write_obj<T: Pod>(&self, offset: usize, val: &T) -> Result<(), MemError> {
        match self.write_pod(offset, val) {
            Err(MemError::Misaligned { .. }) => self.write_bytes(offset, bytemuck::bytes_of(val)),
            r => r,
        }
    }

    /// Copies `out.len()` consecutive `T`s out of the region at `offset`.
    #[inline]
    fn read_slice<T: Pod>(&self, offset: usize, out: &mut [T]) -> Result<(), MemError> {
        self.read_bytes(offset, bytemuck::cast_slice_mut(out))
    }

    /// Copies `vals` into the region at `offset`.
    #[inline]
    fn write_slice<T: Pod>(&self, offset: usize, vals: &[T]) -> Result<(), MemError> {
        self.write_bytes(offset, bytemuck::cast_slice(vals))
    }
}

impl<M: SharedMem> SharedMemExt for M {}

#[cold]
fn read_unaligned<M: SharedMem, T: Pod>(mem: &M, offset: usize) -> Result<T, MemError> {
    let mut val = T::zeroed();
    mem.read_bytes(offset, bytemuck::bytes_of_mut(&mut val))?;
    Ok(val)
}
