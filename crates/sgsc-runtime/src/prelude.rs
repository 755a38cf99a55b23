//! What `std`'s prelude would bring, from `alloc`, so that every module reads the same with or
//! without the `std` feature.

pub use alloc::boxed::Box;
pub use alloc::format;
pub use alloc::string::{String, ToString};
pub use alloc::vec;
pub use alloc::vec::Vec;
