//! Pure-Rust runtime for packed `.sgsc` model files. It has no libtorch dependency; the file
//! format and the kernels arrive with the packing issue.
