use crate::{MemError, Pod, SharedMem};

/// Typed copies in and out of a [`SharedMem`] region.
///
/// Blanket-implemented for every region (including `dyn SharedMem`).
pub trait SharedMemExt: SharedMem {
    /// Copies a `T` out of the region at `offset`, reading each byte once.
    ///
    /// The result is a private value: validate it, then use only it.
    #[inline]
    fn read_obj<T: Pod>(&self, offset: usize) -> Result<T, MemError> {
        let mut val = T::zeroed();
        self.read_bytes(offset, bytemuck::bytes_of_mut(&mut val))?;
        Ok(val)
    }

    /// Copies `val` into the region at `offset` (all of its bytes, padding
    /// included: `Pod` types have no uninitialised bytes).
    #[inline]
    fn write_obj<T: Pod>(&self, offset: usize, val: &T) -> Result<(), MemError> {
        self.write_bytes(offset, bytemuck::bytes_of(val))
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

impl<M: SharedMem + ?Sized> SharedMemExt for M {}
