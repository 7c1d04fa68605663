//! Molting's worker: fine-tunes Llama-family chat models with LoRA into agent personas,
//! bit-reproducibly, and hands the result out as PEFT and GGUF adapters.
//!
//! - [`gguf`], [`model`]: weights from GGUF or a Hugging Face directory, as f32.
//! - [`backend`]: the kernel interface and the CPU reference backend.
//! - [`engine`]: forward and backward of the decoder with LoRA.
//! - [`lora`], [`rng`]: adapters and the protocol's randomness.

pub mod backend;
pub mod engine;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod rng;
pub mod testing;
