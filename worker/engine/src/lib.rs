//! Molting's worker: fine-tunes Llama-family chat models with LoRA into agent personas,
//! bit-reproducibly, and hands the result out as PEFT and GGUF adapters.
//!
//! - [`gguf`], [`model`]: weights from GGUF or a Hugging Face directory, as f32.
//! - [`backend`]: the kernel interface and the CPU reference backend.
//! - [`engine`]: forward and backward of the decoder with LoRA.
//! - [`lora`], [`rng`]: adapters and the protocol's randomness.
//! - [`recipe`], [`bounds`]: what a job trains: one recipe, or a contest's bounds within
//!   which each miner writes its own.

pub mod adapter;
pub mod backend;
pub mod bench;
pub mod bounds;
pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod generate;
pub mod gguf;
pub mod lora;
pub mod math;
pub mod model;
pub mod optim;
pub mod recipe;
pub mod rng;
pub mod spec;
pub mod testing;
pub mod tokenizer;
pub mod train;
