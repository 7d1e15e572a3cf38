//! The ranking loss: an f64 reference for tests, the tensor form, and one step's gradients.
//!
//! For one prompt with scores `r` of its K responses and ordered pairs `(better, worse)` from
//! its ranking (ties skipped), the loss is
//!
//! ```text
//! loss = −1/P · Σ_(b,w) log σ(r_b − r_w) = 1/P · Σ_(b,w) softplus(−(r_b − r_w))
//! ```
//!
//! with `P` the number of pairs (C(K,2) when nothing ties). `softplus(x) = max(x, 0) +
//! log(1 + e^−|x|)` never overflows. The f64 versions here are the golden reference for tests.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use super::model::{pad_rows, ScalarModel};
use crate::optim::{accumulate_grads, FlatGrads};
use crate::{Error, Result};

/// `log σ(x)`, stable for every finite `x`: `−softplus(−x)`.
pub fn log_sigmoid_f64(x: f64) -> f64 {
    -softplus_f64(-x)
}

/// `log(1 + e^x)`, stable for every finite `x`.
pub fn softplus_f64(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The K-wise loss of one record (f64 reference): the mean over `rec_pairs` of
/// `−log σ(scores[b] − scores[w])`; 0 when there is no pair.
pub fn kwise_loss_f64(scores: &[f64], rec_pairs: &[(usize, usize)]) -> f64 {
    if rec_pairs.is_empty() {
        return 0.0;
    }
    rec_pairs
        .iter()
        .map(|&(b, w)| softplus_f64(-(scores[b] - scores[w])))
        .sum::<f64>()
        / rec_pairs.len() as f64
}

/// `softplus(x)` elementwise, as a differentiable tensor expression.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// `Σ_p weights[p] · softplus(−(scores[better_p] − scores[worse_p]))` and each pair's loss.
///
/// # Shapes
/// - `scores`: `(N,)`; `pairs`, `weights`: `P` entries; returns a scalar `()` and `P` values.
pub fn weighted_pair_loss(
    scores: &Tensor,
    pairs: &[(usize, usize)],
    weights: &[f32],
) -> Result<(Tensor, Vec<f32>)> {
    let dev = scores.device();
    let b: Vec<u32> = pairs.iter().map(|p| p.0 as u32).collect();
    let w: Vec<u32> = pairs.iter().map(|p| p.1 as u32).collect();
    let n = pairs.len();
    let diff = (scores.index_select(&Tensor::from_vec(b, n, dev)?, 0)?
        - scores.index_select(&Tensor::from_vec(w, n, dev)?, 0)?)?; // (P,)
    let per_pair = softplus(&diff.neg()?)?; // (P,)
    let values = per_pair.to_vec1::<f32>()?;
    let weights = Tensor::from_slice(weights, n, dev)?;
    Ok(((per_pair * weights)?.sum_all()?, values))
}

/// Pairwise agreement of scores with a ranking: `(agreements, pairs)` over `pairs`, where a
/// pair counts 1 when `scores[b] > scores[w]`, ½ when they are equal.
pub fn pair_agreement(scores: &[f64], pairs: &[(usize, usize)]) -> (f64, usize) {
    let a = pairs
        .iter()
        .map(|&(b, w)| {
            if scores[b] > scores[w] {
                1.0
            } else if scores[b] == scores[w] {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    (a, pairs.len())
}

/// The rows of one training unit and the ordered pairs among them (`(better, worse)`
/// indices into `rows`): a whole ranking record, or one pair of the pairwise baseline.
#[derive(Debug, Clone)]
pub struct RankedGroup<'a> {
    pub rows: Vec<&'a [u32]>,
    pub pairs: Vec<(usize, usize)>,
}

/// Loss and gradients of one optimizer step over `batch`: the mean over its groups of each
/// group's mean pair loss `softplus(−(r_b − r_w))`. Groups are packed into forwards of at most
/// `forward_rows` rows (a group is never split, so a record's K rows share one forward); each
/// forward's backward carries its groups' share of the mean, so the packing does not change
/// the gradient. Every group must have at least one pair. Gradients are taken for `vars`.
/// Returns (loss, gradients, tokens in the rows scored).
pub fn ranking_step_grads(
    model: &ScalarModel,
    vars: &BTreeMap<String, Var>,
    batch: &[RankedGroup],
    forward_rows: usize,
    pad: u32,
) -> Result<(f64, FlatGrads, u64)> {
    if batch.is_empty() || batch.iter().any(|g| g.pairs.is_empty()) {
        return Err(Error::Data(
            "a reward-model step needs groups with at least one ordered pair".into(),
        ));
    }
    let n = batch.len() as f32;
    let mut grads = FlatGrads::new();
    let (mut loss_sum, mut tokens) = (0.0f64, 0u64);
    let mut start = 0;
    while start < batch.len() {
        let mut end = start + 1;
        let mut rows = batch[start].rows.len();
        while end < batch.len() && rows + batch[end].rows.len() <= forward_rows {
            rows += batch[end].rows.len();
            end += 1;
        }
        let (mut ids, mut pairs, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for g in &batch[start..end] {
            let base = ids.len();
            ids.extend(g.rows.iter().copied());
            let w = 1.0 / (g.pairs.len() as f32 * n);
            pairs.extend(g.pairs.iter().map(|&(b, l)| (base + b, base + l)));
            weights.extend(std::iter::repeat_n(w, g.pairs.len()));
        }
        let (x, lens) = pad_rows(&ids, pad, model.device())?;
        let scores = model.readout(&x, &lens)?; // (N,)
        let (loss, per_pair) = weighted_pair_loss(&scores, &pairs, &weights)?;
        loss_sum += per_pair
            .iter()
            .zip(&weights)
            .map(|(l, w)| *l as f64 * *w as f64)
            .sum::<f64>();
        accumulate_grads(vars, &loss.backward()?, 1.0, &mut grads)?;
        tokens += ids.iter().map(|r| r.len() as u64).sum::<u64>();
        start = end;
    }
    Ok((loss_sum, grads, tokens))
}
