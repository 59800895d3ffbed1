//! Serialization into frames: postcard written at the end of a buffer the caller keeps, so
//! that a frame's header and body are built in one allocation (the process pool's task and
//! reply frames, the manager's messages).
//!
//! This module must never panic: a failed serialization is an error value.

/// Serializes `value` at the end of `buf` (the pool's frames; postcard's own `to_extend` copies byte by byte;
/// this copies byte strings with one `memcpy`, which matters for large payloads).
#[cfg(feature = "process")]
pub(crate) fn append<T: serde::Serialize + ?Sized>(value: &T, mut buf: Vec<u8>) -> postcard::Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, Extend(&mut buf))?;
    Ok(buf)
}

/// A postcard output that appends to a buffer the caller keeps (on an error, what was
/// appended stays; callers truncate).
pub(crate) struct Extend<'a>(pub(crate) &'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Extend<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
