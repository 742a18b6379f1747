// Copyright 2019 Octavian Oncescu

#![no_std]

//! A drop-in global allocator wrapper around the [mimalloc](https://github.com/microsoft/mimalloc) allocator.
//! Mimalloc is a general purpose, performance oriented allocator built by Microsoft.
//!
//! ## Usage
//! ```rust,ignore
//! use mimalloc::MiMalloc;
//!
//! #[global_allocator]
//! static GLOBAL: MiMalloc = MiMalloc;
//! ```
//!
//! ## Usage with secure mode
//! Using secure mode adds guard pages,
//! randomized allocation, encrypted free lists, etc. The performance penalty is usually
//! around 10% according to [mimalloc's](https://github.com/microsoft/mimalloc)
//! own benchmarks.
//!
//! To enable secure mode, put in `Cargo.toml`:
//! ```toml
//! [dependencies]
//! mimalloc = { version = "*", features = ["secure"] }
//! ```

extern crate libmimalloc_sys as ffi;

#[cfg(feature = "extended")]
mod extended;

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use ffi::*;

/// Drop-in mimalloc global allocator.
///
/// ## Usage
/// ```rust,ignore
/// use mimalloc::MiMalloc;
///
/// #[global_allocator]
/// static GLOBAL: MiMalloc = MiMalloc;
/// ```
pub struct MiMalloc;

// ai-gateway patch: every block mimalloc hands out is at least word aligned (its size classes
// are whole words, counted from a 16-byte aligned page start), so a layout asking no more is
// served by the plain calls. A size that is a multiple of 16 also lands in a size class that is
// a multiple of 16 (exact classes up to 16 words, steps of 2 words or more above), so its blocks
// are 16-byte aligned too: hashbrown's tables and boxed futures ask for that alignment. mimalloc
// v3's aligned calls take a slow over-allocating path for any size above 1 KiB that is not a
// power of two, and cost ~100-250 instructions more than the plain ones at any size
// (callgrind, loadtest/instructions.sh).
const WORD_ALIGN: usize = core::mem::size_of::<usize>();
const MAX_ALIGN: usize = 16;

/// Whether a block of `size` bytes from the plain calls is aligned enough for `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= WORD_ALIGN || (align <= MAX_ALIGN && size % MAX_ALIGN == 0)
}

unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi_malloc(layout.size()) as *mut u8
        } else {
            mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi_zalloc(layout.size()) as *mut u8
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ai-gateway patch: the plain calls must still honour every alignment they serve.
    #[test]
    fn word_aligned_layouts_are_aligned_at_every_size() {
        let alloc = MiMalloc;
        for align in [1, 2, 4, 8, 16, 64] {
            for size in (1..5000).step_by(7) {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let ptr = alloc.alloc(layout);
                    assert_eq!(ptr as usize % align, 0, "size {size} align {align}");
                    let grown = alloc.realloc(ptr, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc size {size} align {align}");
                    alloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }

    // ai-gateway patch: sizes that are multiples of 16 take the plain calls at alignment 16;
    // blocks kept alive so every size class is checked at many positions in its pages.
    #[test]
    fn sixteen_byte_multiples_are_sixteen_aligned() {
        let alloc = MiMalloc;
        for size in (16..300_000).step_by(16) {
            let layout = Layout::from_size_align(size, 16).unwrap();
            let count = if size < 4096 { 64 } else { 4 };
            unsafe {
                let mut blocks = [core::ptr::null_mut(); 64];
                for slot in &mut blocks[..count] {
                    *slot = alloc.alloc(layout);
                    assert_eq!(*slot as usize % 16, 0, "size {size}");
                }
                let zeroed = alloc.alloc_zeroed(layout);
                assert_eq!(zeroed as usize % 16, 0, "zeroed size {size}");
                let grown = alloc.realloc(zeroed, layout, size * 2 + 16);
                assert_eq!(grown as usize % 16, 0, "realloc size {size}");
                alloc.dealloc(grown, Layout::from_size_align(size * 2 + 16, 16).unwrap());
                for &ptr in &blocks[..count] {
                    alloc.dealloc(ptr, layout);
                }
            }
        }
    }

    #[test]
    fn it_frees_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 16);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 2 << 20);
            alloc.dealloc(ptr, layout);
        }
    }
}
