//! Work over a batch's examples: on rayon's threads with the `std` feature, one after another
//! without it. Every caller's result is in input order either way.

use alloc::vec::Vec;

/// `work(state, chunk)` for each `size`-long chunk of `data`, in order, each thread with its own
/// `state` from `init`.
#[cfg(feature = "std")]
pub fn map_chunks<T, S, R>(
    data: &[T],
    size: usize,
    init: impl Fn() -> S + Sync + Send,
    work: impl Fn(&mut S, &[T]) -> R + Sync + Send,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    use rayon::prelude::*;
    data.par_chunks(size.max(1)).map_init(init, work).collect()
}

/// `work(state, chunk)` for each `size`-long chunk of `data`, in order, with one `state`.
#[cfg(not(feature = "std"))]
pub fn map_chunks<T, S, R>(
    data: &[T],
    size: usize,
    init: impl Fn() -> S,
    work: impl Fn(&mut S, &[T]) -> R,
) -> Vec<R> {
    let mut state = init();
    data.chunks(size.max(1))
        .map(|chunk| work(&mut state, chunk))
        .collect()
}
