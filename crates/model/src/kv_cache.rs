//! The per-sequence key/value cache of incremental decoding.
//!
//! The model never owns a cache (STYLE rule 8): the caller creates one per batch of sequences,
//! passes it to [`crate::gpt::Gpt::forward_hidden`], and forks it with `clone()` (cheap: tensors
//! are reference-counted and never mutated in place; appending builds new tensors).
//!
//! The cached tensors are whatever the model produced: built from
//! [`crate::params::Params::var_builder`] they carry an autograd graph back to the weights, so
//! generation should use a model built from [`crate::params::Params::frozen_var_builder`].

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Keys and values of every layer for the tokens seen so far.
///
/// # Shapes
/// Each cached layer holds `(k, v)`, both `(B, n_kv_head, S, head_dim)` where `S` is [`KvCache::len`];
/// keys are stored after the rotary embedding.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for a model of `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
        }
    }

    /// Number of layers this cache was built for.
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Number of cached positions (0 when empty); the next token sits at this position.
    pub fn len(&self) -> usize {
        self.dim(2)
    }

    /// Batch size of the cached sequences (0 when empty).
    pub fn batch_size(&self) -> usize {
        self.dim(0)
    }

    /// Dimension `d` of layer 0's cached keys, or 0 when empty.
    fn dim(&self, d: usize) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims().get(d).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every cached position (the layer count is kept).
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
    }

    /// The cached `(k, v)` of `layer`, if any.
    pub fn layer(&self, layer: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(layer).and_then(|l| l.as_ref())
    }

    /// A cache holding the batch rows `rows` of this one, in that order (rows may repeat): fork one
    /// prefilled prompt into several samples with `rows = [0; n]`.
    ///
    /// # Shapes
    /// Every `(B, Hkv, S, D)` entry becomes `(rows.len(), Hkv, S, D)`.
    pub fn select_rows(&self, rows: &[u32]) -> Result<KvCache> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            layers.push(match layer {
                Some((k, v)) => {
                    let idx = Tensor::new(rows, k.device())?;
                    Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
                }
                None => None,
            });
        }
        Ok(KvCache { layers })
    }

    /// Appends this step's keys and values to `layer` and returns the whole cached `(k, v)`.
    ///
    /// # Shapes
    /// - `k`, `v`: `(B, Hkv, T, D)`; returns `(B, Hkv, S + T, D)`.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n_layer = self.layers.len();
        let slot = self.layers.get_mut(layer).ok_or(Error::CacheLayers {
            expected: layer + 1,
            got: n_layer,
        })?;
        let kv = match slot.as_ref() {
            None => (k.contiguous()?, v.contiguous()?),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        *slot = Some(kv.clone());
        Ok(kv)
    }
}
