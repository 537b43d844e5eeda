//! Zeroed, 64-byte aligned host buffers (arena, KV caches, scratch, inputs).

use std::alloc::{alloc_zeroed, dealloc, Layout};

pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    pub fn zeroed(bytes: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(bytes.max(64).div_ceil(64) * 64, 64).expect("buffer size fits");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn fill_zero(&mut self) {
        // SAFETY: `ptr` is valid for `len` bytes.
        unsafe { std::ptr::write_bytes(self.ptr, 0, self.len()) };
    }

    pub fn as_f32(&self, offset: usize, n: usize) -> &[f32] {
        assert!(
            offset.is_multiple_of(4) && offset + n * 4 <= self.len(),
            "f32 view inside the buffer"
        );
        // SAFETY: in bounds (checked), aligned to 4, and the buffer outlives the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset) as *const f32, n) }
    }

    pub fn as_i32_mut(&mut self, n: usize) -> &mut [i32] {
        assert!(n * 4 <= self.len(), "i32 view inside the buffer");
        // SAFETY: in bounds (checked), 64-byte aligned, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut i32, n) }
    }

    /// Copies `bytes` in (for weights whose mapping is not aligned to their element).
    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let b = AlignedBuf::zeroed(bytes.len());
        // SAFETY: the buffer holds at least `bytes.len()` bytes and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.ptr, bytes.len()) };
        b
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `zeroed`.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}
