//! Single-sequence generation with a streaming callback: a thin wrapper over the batched decode
//! loop of [`crate::batch`] with one row, used by `chatforge sample` and the pretraining samples.

use candle_core::Device;
use chatforge_model::Gpt;

pub use crate::batch::FinishReason;
use crate::batch::{generate_batch, GenerateRequest, Sample};
use crate::sampler::SamplingParams;
use crate::{Error, Result};

/// The result of [`generate`]: one [`Sample`] (every token is sampled, none forced).
pub type Generation = Sample;

/// Generates a continuation of `prompt`. `on_token` sees each token as it is produced (except a
/// stop token) and returns `false` to stop early. The output is row 0 of
/// [`crate::batch::generate_n`] with the same settings. `device` is where `model`'s weights are.
pub fn generate(
    model: &Gpt,
    device: &Device,
    prompt: &[u32],
    params: &SamplingParams,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let req = GenerateRequest {
        prompt,
        forced_prefix: &[],
        n: 1,
        params,
    };
    generate_batch(model, device, &req, |_, token| on_token(token))?
        .pop()
        .ok_or_else(|| Error::Params("the batch of one returned no sample".into()))
}
