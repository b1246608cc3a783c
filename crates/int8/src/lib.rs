//! The int8 encoder behind `semantic-router --classify-precision int8`: BERT's forward pass
//! (MiniLM and its family) with int8 linear layers, on plain vectors, for CPUs.
//!
//! A crate of its own so that it is compiled optimised in every profile (`Cargo.toml`):
//! the tests of the router would otherwise run its loops unoptimised, tens of times slower.
//! Safe Rust throughout; `pulp` picks AVX-512, AVX2 or plain code at run time.
//!
//! - [`bert`]: the forward pass; [`Int8Bert::new`] quantises a checkpoint's tensors.
//! - [`linear`]: int8 weights, activations quantised per row, byte dot products.
//! - [`attention`]: scaled dot-product attention in f32.
//! - [`math`]: `exp`, `erf`, GELU and sums without library calls, so loops over them vectorise.

pub mod attention;
pub mod bert;
pub mod linear;
pub mod math;

pub use bert::{Activation, BertError, BertShape, Int8Bert};
pub use linear::Int8Linear;

/// Floats handled together by the vectorised loops: one AVX-512 register.
const LANES: usize = 16;
