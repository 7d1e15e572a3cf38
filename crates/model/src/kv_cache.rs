//! The per-sequence key/value cache of incremental decoding.
//!
//! The model never owns a cache (STYLE rule 8): the caller creates one per batch of sequences,
//! passes it to [`crate::gpt::Gpt::forward_hidden`], and forks it with `clone()` or
//! [`KvCache::select_rows`].
//!
//! Storage is preallocated and written in place, like a `Vec`: each layer keeps one
//! `(B, Hkv, capacity, D)` buffer for keys and one for values, a decode step writes its position
//! into them (no copy of the cached positions), and attention reads the filled prefix through a
//! strided view (no copy either). When a step does not fit, the buffers grow to the larger of the
//! need and twice the old capacity (one copy, amortised); [`KvCache::with_capacity`] sizes them
//! up front so that a generation of known length never grows. Forks share storage until one of
//! them writes: a write into shared storage first copies it (copy-on-write), so `clone()` is cheap
//! and forks stay independent.
//!
//! The cache holds values only: writing into the buffers records no autograd graph, so no gradient
//! flows back through cached keys and values (generation never needs one).

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// One layer's buffers and how many positions of them are filled.
#[derive(Debug)]
struct LayerKv {
    /// `(B, Hkv, capacity, D)`, contiguous; positions `len..` hold nothing meaningful.
    k: Tensor,
    /// `(B, Hkv, capacity, D)`, contiguous.
    v: Tensor,
    len: usize,
}

impl LayerKv {
    fn capacity(&self) -> usize {
        self.k.dims()[2]
    }

    /// The filled prefix `(k, v)`, each `(B, Hkv, len, D)`: views into the buffers.
    fn filled(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    /// A private copy with room for `capacity >= len` positions.
    fn copy_with_capacity(&self, capacity: usize) -> Result<LayerKv> {
        let grow = |buf: &Tensor| -> Result<Tensor> {
            let (b, h, cap, d) = buf.dims4()?;
            Ok(if capacity == cap {
                buf.copy()?
            } else {
                let kept = buf.narrow(2, 0, self.len.min(capacity))?;
                let pad = Tensor::zeros(
                    (b, h, capacity - kept.dim(2)?, d),
                    buf.dtype(),
                    buf.device(),
                )?;
                Tensor::cat(&[&kept, &pad], 2)? // (B, Hkv, capacity, D), contiguous
            })
        };
        Ok(LayerKv {
            k: grow(&self.k)?,
            v: grow(&self.v)?,
            len: self.len,
        })
    }
}

/// Keys and values of every layer for the tokens seen so far.
///
/// # Shapes
/// Each cached layer holds `(k, v)`, both `(B, n_kv_head, S, head_dim)` where `S` is [`KvCache::len`];
/// keys are stored after the rotary embedding.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// `None` until the layer's first write. Shared between forks until one writes.
    layers: Vec<Option<Arc<LayerKv>>>,
    /// Positions to allocate room for at the first write (0: exactly what it needs).
    reserve: usize,
}

impl KvCache {
    /// An empty cache for a model of `n_layer` blocks, which allocates what its first write needs
    /// and grows by doubling.
    pub fn new(n_layer: usize) -> Self {
        Self::with_capacity(n_layer, 0)
    }

    /// An empty cache that allocates room for `capacity` positions at its first write (more if
    /// that write needs it), so that a sequence of up to `capacity` tokens is written in place
    /// without ever growing. Prefer it when the final length is known (a prompt plus
    /// `max_tokens`, bounded by the context length).
    pub fn with_capacity(n_layer: usize, capacity: usize) -> Self {
        Self {
            layers: (0..n_layer).map(|_| None).collect(),
            reserve: capacity,
        }
    }

    /// Number of layers this cache was built for.
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Number of cached positions (0 when empty); the next token sits at this position.
    pub fn len(&self) -> usize {
        self.first().map_or(0, |l| l.len)
    }

    /// Positions the cache can hold before it must grow (0 before the first write).
    pub fn capacity(&self) -> usize {
        self.first().map_or(0, LayerKv::capacity)
    }

    /// Batch size of the cached sequences (0 when empty).
    pub fn batch_size(&self) -> usize {
        self.first().map_or(0, |l| l.k.dims()[0])
    }

    fn first(&self) -> Option<&LayerKv> {
        self.layers.first().and_then(|l| l.as_deref())
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every cached position and releases the storage (the layer count and the capacity
    /// to reserve are kept).
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
    }

    /// The cached `(k, v)` of `layer`, if any: views of the filled positions, each
    /// `(B, Hkv, S, D)` (strided: the buffers have room for more positions).
    pub fn layer(&self, layer: usize) -> Option<(Tensor, Tensor)> {
        let l = self.layers.get(layer)?.as_deref()?;
        l.filled().ok()
    }

    /// A cache holding the batch rows `rows` of this one, in that order (rows may repeat): fork one
    /// prefilled prompt into several samples with `rows = [0; n]`. The new cache has the same
    /// capacity and its own storage.
    ///
    /// # Shapes
    /// Every `(B, Hkv, S, D)` entry becomes `(rows.len(), Hkv, S, D)`.
    pub fn select_rows(&self, rows: &[u32]) -> Result<KvCache> {
        if self.first().is_none() {
            return Ok(self.clone());
        }
        let b = self.batch_size();
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= b) {
            return Err(Error::Input(format!(
                "cannot select row {bad} of a KV cache of {b} rows"
            )));
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            layers.push(match layer {
                Some(l) => {
                    let idx = Tensor::new(rows, l.k.device())?;
                    // The whole buffer, so the copy keeps the capacity: (rows, Hkv, capacity, D).
                    Some(Arc::new(LayerKv {
                        k: l.k.index_select(&idx, 0)?,
                        v: l.v.index_select(&idx, 0)?,
                        len: l.len,
                    }))
                }
                None => None,
            });
        }
        Ok(KvCache {
            layers,
            reserve: self.reserve,
        })
    }

    /// Writes this step's keys and values after the cached positions of `layer` and returns the
    /// filled prefix, new positions included, as views into the buffers.
    ///
    /// # Shapes
    /// - `k`, `v`: `(B, Hkv, T, D)`; returns `(B, Hkv, S + T, D)` each.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n_layer = self.layers.len();
        let reserve = self.reserve;
        let slot = self.layers.get_mut(layer).ok_or(Error::CacheLayers {
            expected: layer + 1,
            got: n_layer,
        })?;
        let (b, hkv, t, d) = k.dims4()?;
        if v.dims() != k.dims() {
            return Err(Error::Input(format!(
                "cached values {:?} do not match keys {:?}",
                v.dims(),
                k.dims()
            )));
        }
        let len = slot.as_ref().map_or(0, |l| l.len);
        let need = len + t;
        match slot {
            None => {
                let shape = (b, hkv, need.max(reserve), d);
                *slot = Some(Arc::new(LayerKv {
                    k: Tensor::zeros(shape, k.dtype(), k.device())?,
                    v: Tensor::zeros(shape, v.dtype(), v.device())?,
                    len: 0,
                }));
            }
            Some(l) => {
                let (lb, lh, _, ld) = l.k.dims4()?;
                if (lb, lh, ld) != (b, hkv, d) {
                    return Err(Error::Input(format!(
                        "new keys {:?} do not match the cached (B, Hkv, D) = {:?}",
                        k.dims(),
                        (lb, lh, ld)
                    )));
                }
                let cap = l.capacity();
                if need > cap {
                    *l = Arc::new(l.copy_with_capacity(need.max(2 * cap))?);
                } else if Arc::get_mut(l).is_none() {
                    // Shared with a fork: writing in place would show in the other cache.
                    *l = Arc::new(l.copy_with_capacity(cap)?);
                }
            }
        }
        let Some(l) = slot.as_mut().and_then(Arc::get_mut) else {
            return Err(Error::Input("KV cache layer is not writable".into()));
        };
        // `slice_set` takes contiguous sources; a one-token step already is.
        l.k.slice_set(&k.contiguous()?, 2, len)?;
        l.v.slice_set(&v.contiguous()?, 2, len)?;
        l.len = need;
        l.filled()
    }
}
