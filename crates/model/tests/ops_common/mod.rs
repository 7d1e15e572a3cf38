//! Shared helpers for the `ops_*` tests: seeded random tensors, central finite differences
//! against autograd, and closeness checks.
#![allow(dead_code)] // each test binary uses a different subset

use candle_core::{DType, Device, Result, Tensor, Var};
use chatforge_data::rng::Rng;

/// Finite-difference step.
pub const H: f64 = 1e-6;
/// Gradient-check tolerances (PyTorch gradcheck).
pub const FD_ATOL: f64 = 1e-5;
pub const FD_RTOL: f64 = 1e-3;

/// A tensor of standard normal values (times `scale`) from `rng`.
pub fn randn(rng: &mut Rng, dims: &[usize], scale: f64, dtype: DType) -> Tensor {
    let n: usize = dims.iter().product();
    let data: Vec<f64> = (0..n).map(|_| rng.normal() * scale).collect();
    Tensor::from_vec(data, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The elements of `t` as f64, row-major.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `sum(f(inputs) * weights)` as f64.
fn weighted_loss(out: &Tensor, weights: &Tensor) -> Tensor {
    out.mul(weights).unwrap().sum_all().unwrap()
}

/// Checks autograd gradients of `loss = sum(f(inputs) * w)` (w fixed random) against central
/// finite differences with step [`H`], for every element of every input. Inputs must be f64.
/// `what` names the op in failure messages.
pub fn check_gradients(
    what: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    seed: u64,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let as_tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&as_tensors).unwrap();
    let mut rng = Rng::new(seed);
    let w = randn(&mut rng, out.dims(), 1.0, DType::F64);
    let grads = weighted_loss(&out, &w).backward().unwrap();
    let eval = |ins: &[Tensor]| -> f64 {
        weighted_loss(&f(ins).unwrap(), &w)
            .to_scalar::<f64>()
            .unwrap()
    };
    for (i, input) in inputs.iter().enumerate() {
        let analytic = values(grads.get(vars[i].as_tensor()).unwrap_or_else(|| {
            panic!("{what}: input {i} got no gradient");
        }));
        let base = values(input);
        for (j, &a) in analytic.iter().enumerate() {
            let shifted = |delta: f64| -> f64 {
                let mut data = base.clone();
                data[j] += delta;
                let t = Tensor::from_vec(data, input.dims(), &Device::Cpu).unwrap();
                let mut ins = inputs.to_vec();
                ins[i] = t;
                eval(&ins)
            };
            let numeric = (shifted(H) - shifted(-H)) / (2.0 * H);
            assert!(
                (a - numeric).abs() <= FD_ATOL + FD_RTOL * numeric.abs(),
                "{what}: d loss / d input{i}[{j}]: autograd {a}, finite difference {numeric}"
            );
        }
    }
}

/// Asserts `|a - b| <= atol + rtol |b|` elementwise, with the same shape.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    for (i, (x, y)) in values(a).iter().zip(values(b)).enumerate() {
        assert!(x.is_finite() && y.is_finite(), "{what}[{i}]: {x} vs {y}");
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}[{i}]: {x} vs {y} (atol {atol}, rtol {rtol})"
        );
    }
}

/// Output and input gradients of `f` under `loss = sum(f(inputs) * w)` with a fixed random `w`.
pub fn forward_backward(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    seed: u64,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts).unwrap();
    let mut rng = Rng::new(seed);
    let w = randn(&mut rng, out.dims(), 1.0, out.dtype());
    let grads = weighted_loss(&out, &w).backward().unwrap();
    let gs = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).expect("no gradient").clone())
        .collect();
    (out.detach(), gs)
}

/// Checks that `fused` and `composed` agree (forward and every input gradient) within
/// `atol + rtol |composed|`, and that the public op is bitwise the fused one. Returns whether
/// fused and composed differ bitwise somewhere, i.e. whether that last check proved that the
/// public op dispatched to the fused kernel (callers assert it for at least one input).
pub fn check_fused_matches_composed(
    what: &str,
    inputs: &[Tensor],
    public: impl Fn(&[Tensor]) -> Result<Tensor>,
    fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    composed: impl Fn(&[Tensor]) -> Result<Tensor>,
    atol: f64,
    rtol: f64,
) -> bool {
    let (yf, gf) = forward_backward(inputs, &fused, 7);
    let (yc, gc) = forward_backward(inputs, &composed, 7);
    let (yp, gp) = forward_backward(inputs, &public, 7);
    assert_close(&format!("{what} forward"), &yf, &yc, atol, rtol);
    for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
        assert_close(&format!("{what} grad of input {i}"), a, b, atol, rtol);
    }
    let all = |y: &Tensor, g: &[Tensor]| -> Vec<f64> {
        g.iter().fold(values(y), |mut v, g| {
            v.extend(values(g));
            v
        })
    };
    let (fused_all, public_all) = (all(&yf, &gf), all(&yp, &gp));
    assert!(
        fused_all == public_all,
        "{what}: the public op's output or gradients are not bitwise the fused kernel's"
    );
    fused_all != all(&yc, &gc)
}

/// Every element is finite.
pub fn assert_finite(what: &str, t: &Tensor) {
    for (i, v) in values(t).iter().enumerate() {
        assert!(v.is_finite(), "{what}[{i}] = {v}");
    }
}
