//! What the runtime's tests share.

pub mod models;
