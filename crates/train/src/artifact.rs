//! A training stage's checkpoint as files, and loading a model back from one.
//!
//! Every checkpoint directory holds:
//! - `model.safetensors` — the weights, under the module-tree names;
//! - `config.json` — the `GptConfig` that builds them;
//! - `tokenizer.json` — the tokenizer the model was trained with;
//! - `meta.json` — stage, step, tokenizer hash, and the resolved training config;
//! - `optimizer.safetensors` and `trainer_state.json` — what resume needs (optimizer moments,
//!   step, data cursor, guard and every other piece of loop state);
//! - `MANIFEST.json` (written last by `chatforge_model::checkpoint`) — sizes and sha256 of all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use chatforge_model::checkpoint::{
    latest_checkpoint, safetensors_from_bytes, save_checkpoint, tensors_to_safetensors, Checkpoint,
};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::optim::AdamW;
use crate::{Error, Result};

/// Identity of a checkpoint, in `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub stage: String,
    pub step: u64,
    pub tokenizer_hash: String,
    pub chatforge_version: String,
    /// The resolved configuration of the stage that wrote it.
    pub config: serde_json::Value,
}

/// Everything a stage writes into one checkpoint.
pub struct SaveRequest<'a> {
    pub run_dir: &'a Path,
    pub step: u64,
    pub params: &'a Params,
    pub model_config: &'a GptConfig,
    pub tokenizer: &'a Tokenizer,
    pub meta: Meta,
    pub optimizer: &'a AdamW,
    pub trainer_state: serde_json::Value,
    pub keep: usize,
}

/// The trainable variables by name (cheap: a `Var` is a shared handle).
pub fn var_map(params: &Params) -> BTreeMap<String, Var> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn ensure_finite(tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    for (name, t) in tensors {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFiniteTensor(name.clone()));
        }
    }
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::State(e.to_string()))
}

/// Writes a complete checkpoint atomically; refuses if any weight or moment is not finite.
pub fn save(req: SaveRequest<'_>) -> Result<PathBuf> {
    // One copy to the host for weights on another device (none for CPU ones), read twice below.
    let weights = req
        .params
        .tensors()
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    ensure_finite(&weights)?;
    let (opt_tensors, opt_step) = req.optimizer.state_tensors(&var_map(req.params))?;
    ensure_finite(&opt_tensors)?;
    let mut state = req.trainer_state;
    if let serde_json::Value::Object(map) = &mut state {
        map.insert("optimizer_step".into(), opt_step.into());
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("model.safetensors", tensors_to_safetensors(&weights)?),
        (
            "optimizer.safetensors",
            tensors_to_safetensors(&opt_tensors)?,
        ),
        ("config.json", json(req.model_config)?),
        ("tokenizer.json", req.tokenizer.to_json().into_bytes()),
        ("meta.json", json(&req.meta)?),
        ("trainer_state.json", json(&state)?),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    Ok(save_checkpoint(req.run_dir, req.step, &refs, req.keep)?)
}

/// What a training stage needs to write its checkpoints: everything but the step, the loop
/// state and the optimizer, which change as the run goes.
pub struct StageWriter<'a> {
    pub stage: &'static str,
    pub run_dir: &'a Path,
    pub params: &'a Params,
    pub model_config: &'a GptConfig,
    pub tokenizer: &'a Tokenizer,
    /// The stage's resolved configuration (recorded in `meta.json`).
    pub config: &'a dyn erased::ToJson,
    pub keep: usize,
}

impl StageWriter<'_> {
    /// Writes the checkpoint of `step` with the loop `state` and the optimizer moments.
    pub fn save<S: Serialize>(&self, step: u64, state: &S, optimizer: &AdamW) -> Result<PathBuf> {
        save(SaveRequest {
            run_dir: self.run_dir,
            step,
            params: self.params,
            model_config: self.model_config,
            tokenizer: self.tokenizer,
            meta: Meta {
                stage: self.stage.into(),
                step,
                tokenizer_hash: self.tokenizer.hash(),
                chatforge_version: env!("CARGO_PKG_VERSION").into(),
                config: self.config.to_json()?,
            },
            optimizer,
            trainer_state: serde_json::to_value(state).map_err(|e| Error::State(e.to_string()))?,
            keep: self.keep,
        })
    }
}

/// Object-safe serialization of a stage config (so `StageWriter` is not generic over it).
pub mod erased {
    /// Anything serializable, as a JSON value.
    pub trait ToJson {
        fn to_json(&self) -> crate::Result<serde_json::Value>;
    }

    impl<T: serde::Serialize> ToJson for T {
        fn to_json(&self) -> crate::Result<serde_json::Value> {
            serde_json::to_value(self).map_err(|e| crate::Error::State(e.to_string()))
        }
    }
}

/// A model loaded from a checkpoint with its tokenizer.
pub struct LoadedModel {
    pub config: GptConfig,
    pub params: Params,
    pub model: Gpt,
    pub tokenizer: Tokenizer,
    pub meta: Meta,
    pub checkpoint: Checkpoint,
}

/// Resolves `path` to a checkpoint: a checkpoint directory itself, or a run directory whose
/// newest complete checkpoint is taken.
pub fn find_checkpoint(path: &Path) -> Result<Checkpoint> {
    if path.join("MANIFEST.json").is_file() {
        return Ok(Checkpoint::verify(path)?);
    }
    if !path.exists() {
        return Err(Error::File {
            path: path.to_path_buf(),
            msg: "no such file or directory".into(),
        });
    }
    latest_checkpoint(path)?.ok_or_else(|| Error::File {
        path: path.to_path_buf(),
        msg: "no complete checkpoint here (expected a checkpoint directory with MANIFEST.json \
              or a run directory with checkpoints/step-*)"
            .into(),
    })
}

fn parse<T: serde::de::DeserializeOwned>(ck: &Checkpoint, name: &str) -> Result<T> {
    let bytes = ck.read(name)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::File {
        path: ck.dir.join(name),
        msg: e.to_string(),
    })
}

/// The chat template a checkpoint was trained with (`template` in its stage config), the native
/// one for stages that have none (pretraining); an unreadable value is an error.
pub fn template_of(meta: &Meta) -> Result<chatforge_tokenizer::chat::ChatTemplate> {
    match meta.config.get("template") {
        None | Some(serde_json::Value::Null) => Ok(chatforge_tokenizer::chat::ChatTemplate::Native),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Error::State(format!("checkpoint config: template: {e}"))),
    }
}

/// Reads `trainer_state.json` of a checkpoint into the stage's state type.
pub fn trainer_state<T: serde::de::DeserializeOwned>(ck: &Checkpoint) -> Result<T> {
    parse(ck, "trainer_state.json")
}

/// Loads the optimizer moments of a checkpoint into `opt` for `params` (onto their device).
pub fn load_optimizer(ck: &Checkpoint, params: &Params, opt: &mut AdamW) -> Result<()> {
    let state: serde_json::Value = parse(ck, "trainer_state.json")?;
    let step = state
        .get("optimizer_step")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::File {
            path: ck.dir.join("trainer_state.json"),
            msg: "missing optimizer_step".into(),
        })?;
    let tensors = safetensors_from_bytes(&ck.read("optimizer.safetensors")?, &Device::Cpu)?;
    opt.load_state(&var_map(params), &tensors, step)
}

/// A checkpoint's files, read and cross-checked: config, meta, the tokenizer (against the hash
/// in `meta.json` and the vocabulary size), and the weights, whose names and shapes the caller
/// checks against what it builds.
pub struct Parts {
    pub checkpoint: Checkpoint,
    pub config: GptConfig,
    pub meta: Meta,
    pub tokenizer: Tokenizer,
    pub params: Params,
}

/// Reads the checkpoint at (or newest under) `path` into [`Parts`], with the weights on `device`.
pub fn load_parts(path: &Path, device: &Device) -> Result<Parts> {
    let checkpoint = find_checkpoint(path)?;
    let config: GptConfig = parse(&checkpoint, "config.json")?;
    config.validate()?;
    let meta: Meta = parse(&checkpoint, "meta.json")?;
    let tok_bytes = checkpoint.read("tokenizer.json")?;
    let tok_text = std::str::from_utf8(&tok_bytes).map_err(|e| Error::File {
        path: checkpoint.dir.join("tokenizer.json"),
        msg: format!("not UTF-8: {e}"),
    })?;
    let tokenizer = Tokenizer::from_json(tok_text)?;
    if tokenizer.hash() != meta.tokenizer_hash {
        return Err(Error::File {
            path: checkpoint.dir.join("tokenizer.json"),
            msg: "tokenizer does not match the hash recorded in meta.json".into(),
        });
    }
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(Error::File {
            path: checkpoint.dir.join("config.json"),
            msg: format!(
                "vocab_size {} differs from the tokenizer's {}",
                config.vocab_size,
                tokenizer.vocab_size()
            ),
        });
    }
    let tensors = safetensors_from_bytes(&checkpoint.read("model.safetensors")?, device)?;
    let params = Params::from_tensors(tensors)?;
    Ok(Parts {
        checkpoint,
        config,
        meta,
        tokenizer,
        params,
    })
}

/// Loads weights (onto `device`), config and tokenizer of the checkpoint at (or newest under)
/// `path`.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let Parts {
        checkpoint,
        config,
        meta,
        tokenizer,
        params,
    } = load_parts(path, device)?;
    params.check(&Params::expected_shapes(&config))?;
    // Inference: weights enter the graph as constants, so the KV cache holds no autograd graph.
    let model = Gpt::new(&config, params.frozen_var_builder(DType::F32))?;
    Ok(LoadedModel {
        config,
        params,
        model,
        tokenizer,
        meta,
        checkpoint,
    })
}
