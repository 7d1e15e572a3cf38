//! chatforge-model: the GPT (GPT-2 and Llama style), its heads, KV cache, ops and checkpoints.
//!
//! Build a model from a config and fresh or loaded parameters:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use chatforge_model::{Gpt, GptConfig, Params};
//!
//! let cfg = GptConfig::preset("tiny", 256).expect("known preset");
//! let params = Params::init(&cfg, 42, &Device::Cpu)?;
//! let model = Gpt::new(&cfg, params.var_builder(DType::F32))?;
//! let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
//! let logits = model.forward(&ids, None)?; // (1, 3, 256)
//! assert_eq!(logits.dims(), &[1, 3, 256]);
//! # Ok::<(), chatforge_model::Error>(())
//! ```

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod gpt;
pub mod kv_cache;
pub mod ops;
pub mod params;

pub use config::{GptConfig, MlpKind, NormKind, PositionKind};
pub use error::{Error, Result};
pub use gpt::{Gpt, ScalarHead};
pub use kv_cache::KvCache;
pub use params::Params;
