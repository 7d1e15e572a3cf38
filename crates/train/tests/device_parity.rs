//! CPU ≡ CUDA: the same model from the same seeded initialisation, once on the CPU (our fused
//! kernels, the in-place AdamW) and once on a CUDA GPU (candle's composed ops and cuBLAS in f32,
//! the tensor-op AdamW, gradients kept on the device), must compute the same function:
//!
//! - forward logits and loss, and every parameter's gradient: relative error `‖gpu − cpu‖ /
//!   ‖cpu‖` at most [`TOL_FORWARD`] / [`TOL_GRAD`] (f32 with different reduction orders lands
//!   near 1e-6; TF32 products would land near 3e-4 and fail), and per tensor
//!   [`TOL_GRAD_TENSOR`] (see [`tensor_err`]);
//! - [`STEPS`] optimizer steps of two accumulated micro-batches with clipping: the losses and the
//!   final weights;
//! - greedy generation of [`GEN_TOKENS`] tokens with the KV cache after those steps: identical
//!   ids (a divergence is accepted only at a genuine near tie of the two tokens' logits);
//! - weights saved from the GPU read back on the CPU bit for bit;
//! - given the same gradients, the optimizer's fused CUDA kernels, its composed tensor-op update
//!   on the GPU and its fused CPU pass produce the same weights and moments bit for bit, and the
//!   gradient norm agrees to f64 round-off.
//!
//! For `tiny` (GPT-2 style), `llama-tiny` (RMSNorm, RoPE, SwiGLU, GQA, untied) and `gpt2-bench`.
//! Without the `cuda` feature (the default build, CI) the tests are ignored, saying why;
//! with it but without a GPU each one prints why it skipped and passes, unless
//! `CHATFORGE_REQUIRE_CUDA=1` makes a missing GPU a failure. To run it on a GPU machine:
//!
//! ```text
//! scripts/build-cuda.sh test --release -p chatforge-train --features cuda --test device_parity --no-run
//! CHATFORGE_REQUIRE_CUDA=1 CHATFORGE_PARITY_JSON=parity.json target-cuda/release/deps/device_parity-* --nocapture
//! ```
//!
//! `CHATFORGE_PARITY_JSON=FILE` writes every measured error there (one JSON object per preset).

use std::collections::BTreeMap;
use std::io::Write;

use candle_core::{DType, Device, Tensor, Var};
use chatforge_data::Rng;
use chatforge_engine::{generate, SamplingParams};
use chatforge_model::checkpoint::{safetensors_from_bytes, tensors_to_safetensors};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_train::artifact::var_map;
use chatforge_train::optim::{
    accumulate_grads, clip_grads, global_norm, AdamW, FlatGrads, Grad, OptimConfig,
};

// Measured on an H100 (driver 580, 2026-11-23): logits 3e-7 .. 1e-6, loss <= 8e-8, all
// gradients 5e-7 .. 6e-7, per tensor <= 8e-7 (but see `tensor_err`), step losses <= 1.5e-5,
// weights after the steps 6e-6 .. 1.4e-5.
const TOL_FORWARD: f64 = 1e-4;
const TOL_GRAD: f64 = 1e-4;
const TOL_GRAD_TENSOR: f64 = 1e-3;
/// Adam divides each element's step by its own gradient scale, so an element whose gradient is
/// at round-off level on both sides (the key biases, whose true gradient is exactly 0: softmax
/// ignores a shift shared by a row's scores) moves by about the learning rate in an arbitrary
/// direction on each. That dominates this error (measured up to 1.4e-5).
const TOL_WEIGHTS: f64 = 1e-4;
const LR: f64 = 1e-3;
const TOL_LOSS_STEPS: f64 = 1e-4;
const STEPS: usize = 4;
const GEN_TOKENS: usize = 48;
const VOCAB: usize = 512;

/// The GPU, or `None` with the reason printed (a failure with `CHATFORGE_REQUIRE_CUDA=1`).
fn cuda() -> Option<Device> {
    let required = std::env::var("CHATFORGE_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "CHATFORGE_REQUIRE_CUDA=1 but {why}");
        eprintln!("skipping the CPU/CUDA parity test: {why}");
        None
    };
    if !candle_core::utils::cuda_is_available() {
        return skip("this test was built without the cuda feature (--features cuda)".into());
    }
    #[cfg(feature = "cuda")]
    {
        // cudarc panics when libcuda is missing; ask first.
        // SAFETY: only tries to dlopen the driver library.
        let present = unsafe { candle_core::cuda_backend::cudarc::driver::sys::is_culib_present() };
        if !present {
            return skip("the CUDA driver library (libcuda.so) is not on the library path".into());
        }
    }
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => skip(format!("no CUDA device: {e}")),
    }
}

/// Inputs and targets of one batch, `rows × t` each.
type Batch = (Vec<Vec<u32>>, Vec<Vec<u32>>);

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// One tensor's gradient error, `‖a − b‖ / max(‖b‖, 1e-3 · scale)` (b is the CPU reference,
/// `scale` the norm of all the model's gradients together). The floor keeps a tensor whose true
/// gradient is zero (the attention key biases: adding a constant to every key's score of a query
/// changes no softmax) from dividing round-off by round-off: there both sides hold ~1e-9 noise
/// and the plain relative error is of order 1.
fn tensor_err(a: &[f64], b: &[f64], scale: f64) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&diff) / norm(b).max(1e-3 * scale)
}

/// `‖a − b‖ / ‖b‖` (b is the CPU reference).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// One side of the comparison: weights, model, optimizer on `device`.
struct Side {
    device: Device,
    params: Params,
    model: Gpt,
    vars: BTreeMap<String, Var>,
    opt: AdamW,
}

impl Side {
    fn new(cfg: &GptConfig, device: &Device) -> Side {
        let params = Params::init(cfg, 7, device).unwrap();
        let model = Gpt::new(cfg, params.var_builder(DType::F32)).unwrap();
        let vars = var_map(&params);
        Side {
            device: device.clone(),
            params,
            model,
            vars,
            opt: AdamW::new(OptimConfig {
                lr: LR,
                ..OptimConfig::default()
            }),
        }
    }

    fn ids(&self, rows: &[Vec<u32>]) -> Tensor {
        let (b, t) = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.concat(), (b, t), &self.device).unwrap()
    }

    /// One optimizer step over two micro-batches (gradients scaled by 1/2 and accumulated),
    /// clipped to norm 1: `(mean loss, pre-clip gradient norm)`.
    fn step(&mut self, micro: &[Batch]) -> (f64, f64) {
        let mut grads = FlatGrads::new();
        let mut loss = 0.0;
        for (x, y) in micro {
            let l = self.model.loss(&self.ids(x), &self.ids(y)).unwrap();
            loss += l.to_scalar::<f32>().unwrap() as f64 / micro.len() as f64;
            let g = l.backward().unwrap();
            accumulate_grads(&self.vars, &g, 1.0 / micro.len() as f32, &mut grads).unwrap();
        }
        let norm = clip_grads(&mut grads, 1.0).unwrap();
        self.opt.step(&self.vars, &grads, LR).unwrap();
        (loss, norm)
    }

    fn greedy(&self, prompt: &[u32]) -> Vec<u32> {
        let frozen = Gpt::new(
            self.model.config(),
            self.params.frozen_var_builder(DType::F32),
        )
        .unwrap();
        let params = SamplingParams {
            temperature: 0.0,
            max_tokens: GEN_TOKENS,
            ..SamplingParams::default()
        };
        generate(&frozen, &self.device, prompt, &params, |_| true)
            .unwrap()
            .tokens
    }
}

fn batch(rng: &mut Rng, rows: usize, t: usize) -> Batch {
    // A learnable stream (a repeating pattern with noise), so that a few steps lower the loss.
    let full: Vec<Vec<u32>> = (0..rows)
        .map(|_| {
            let start = rng.below(64) as u32;
            (0..=t)
                .map(|i| {
                    if rng.below(8) == 0 {
                        rng.below(VOCAB as u64) as u32
                    } else {
                        (start + 3 * i as u32) % 97
                    }
                })
                .collect()
        })
        .collect();
    (
        full.iter().map(|r| r[..t].to_vec()).collect(),
        full.iter().map(|r| r[1..].to_vec()).collect(),
    )
}

fn check_preset(name: &str, rows: usize, t: usize) {
    let Some(gpu) = cuda() else { return };
    let cfg = GptConfig::preset(name, VOCAB).unwrap();
    let mut cpu = Side::new(&cfg, &Device::Cpu);
    let mut dev = Side::new(&cfg, &gpu);
    let mut report = serde_json::Map::new();
    report.insert("preset".into(), name.into());
    report.insert("batch".into(), format!("{rows}x{t}").into());

    // 1. Same initial weights (drawn on the host, uploaded).
    for (k, v) in cpu.params.iter() {
        let w = dev.params.get(k).unwrap();
        assert_eq!(
            flat(v.as_tensor()),
            flat(w.as_tensor()),
            "{name}: init of {k}"
        );
    }

    // 2. Forward logits, loss and every gradient.
    let mut rng = Rng::derive(11, "device-parity");
    let (x, y) = batch(&mut rng, rows, t);
    let logits_c = cpu.model.forward(&cpu.ids(&x), None).unwrap();
    let logits_g = dev.model.forward(&dev.ids(&x), None).unwrap();
    let e_logits = rel(&flat(&logits_g), &flat(&logits_c));
    let loss_c = cpu.model.loss(&cpu.ids(&x), &cpu.ids(&y)).unwrap();
    let loss_g = dev.model.loss(&dev.ids(&x), &dev.ids(&y)).unwrap();
    let (lc, lg) = (
        loss_c.to_scalar::<f32>().unwrap() as f64,
        loss_g.to_scalar::<f32>().unwrap() as f64,
    );
    let e_loss = (lg - lc).abs() / lc.abs();
    let gc = loss_c.backward().unwrap();
    let gg = loss_g.backward().unwrap();
    let mut per_tensor = Vec::new();
    for (k, v) in cpu.params.iter() {
        let a = flat(gc.get(v.as_tensor()).unwrap());
        let w = dev.params.get(k).unwrap();
        let g_dev = gg
            .get(w.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {k} on the GPU"));
        assert!(
            !g_dev.device().is_cpu(),
            "{name}: {k}'s gradient left the GPU"
        );
        per_tensor.push((k.to_string(), a, flat(g_dev)));
    }
    let all_c: Vec<f64> = per_tensor.iter().flat_map(|(_, a, _)| a.clone()).collect();
    let all_g: Vec<f64> = per_tensor.iter().flat_map(|(_, _, b)| b.clone()).collect();
    let e_grads = rel(&all_g, &all_c);
    let scale = all_c.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut worst = (0.0f64, String::new());
    for (k, a, b) in &per_tensor {
        let e = tensor_err(b, a, scale);
        if e > worst.0 {
            worst = (e, k.clone());
        }
    }
    eprintln!(
        "{name} ({rows}x{t}): logits rel err {e_logits:.2e}, loss {lc:.6} vs {lg:.6} (rel \
         {e_loss:.2e}), all gradients rel err {e_grads:.2e}, worst tensor {} {:.2e}",
        worst.1, worst.0
    );
    report.insert("logits_rel_err".into(), e_logits.into());
    report.insert("loss_cpu".into(), lc.into());
    report.insert("loss_cuda".into(), lg.into());
    report.insert("loss_rel_err".into(), e_loss.into());
    report.insert("grads_rel_err".into(), e_grads.into());
    report.insert("grad_worst_tensor".into(), worst.1.clone().into());
    report.insert("grad_worst_tensor_rel_err".into(), worst.0.into());

    // 3. Training steps: accumulation, clipping, AdamW (fused in place vs tensor ops).
    let (mut losses_c, mut losses_g) = (Vec::new(), Vec::new());
    for _ in 0..STEPS {
        let micro = vec![batch(&mut rng, rows, t), batch(&mut rng, rows, t)];
        let (l1, n1) = cpu.step(&micro);
        let (l2, n2) = dev.step(&micro);
        assert!(
            (n1 - n2).abs() <= 1e-3 * n1,
            "{name}: gradient norms {n1} vs {n2}"
        );
        losses_c.push(l1);
        losses_g.push(l2);
    }
    let e_steps = losses_c
        .iter()
        .zip(&losses_g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let (wc, wg): (Vec<f64>, Vec<f64>) = cpu
        .params
        .iter()
        .flat_map(|(k, v)| {
            let a = flat(v.as_tensor());
            let b = flat(dev.params.get(k).unwrap().as_tensor());
            a.into_iter().zip(b)
        })
        .unzip();
    let e_weights = rel(&wg, &wc);
    eprintln!(
        "{name}: {STEPS} steps, losses CPU {losses_c:.5?} CUDA {losses_g:.5?} (max |Δ| \
         {e_steps:.2e}); weights rel err {e_weights:.2e}"
    );
    report.insert("losses_cpu".into(), serde_json::json!(losses_c));
    report.insert("losses_cuda".into(), serde_json::json!(losses_g));
    report.insert("steps_loss_max_abs_diff".into(), e_steps.into());
    report.insert("weights_rel_err_after_steps".into(), e_weights.into());

    // 4. Greedy generation with the KV cache.
    let prompt: Vec<u32> = x[0][..16].to_vec();
    let (tc, tg) = (cpu.greedy(&prompt), dev.greedy(&prompt));
    let same = tc.iter().zip(&tg).take_while(|(a, b)| a == b).count();
    eprintln!(
        "{name}: greedy generation, first {same}/{} tokens identical",
        tc.len()
    );
    report.insert("greedy_tokens".into(), tc.len().into());
    report.insert("greedy_identical_prefix".into(), same.into());
    if same < tc.len().min(tg.len()) || tc.len() != tg.len() {
        // Only a genuine near tie may flip a token: the CPU's logits of the two choices.
        let mut ctx = prompt.clone();
        ctx.extend(&tc[..same]);
        let logits = cpu.model.forward(&cpu.ids(&[ctx]), None).unwrap();
        let last = flat(
            &logits
                .squeeze(0)
                .unwrap()
                .get(same + prompt.len() - 1)
                .unwrap(),
        );
        let gap = (last[tc[same] as usize] - last[tg[same] as usize]).abs();
        report.insert("greedy_divergence_logit_gap".into(), gap.into());
        assert!(
            gap < 1e-4,
            "{name}: greedy tokens differ at {same} ({} vs {}), logit gap {gap:e} is no tie",
            tc[same],
            tg[same]
        );
    }

    // 5. Weights written from the GPU read back on the CPU bit for bit.
    let bytes = tensors_to_safetensors(&dev.params.tensors()).unwrap();
    let back = safetensors_from_bytes(&bytes, &Device::Cpu).unwrap();
    for (k, v) in dev.params.iter() {
        assert_eq!(flat(&back[k]), flat(v.as_tensor()), "{name}: saved {k}");
    }

    if let Ok(path) = std::env::var("CHATFORGE_PARITY_JSON") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{}", serde_json::Value::Object(report)).unwrap();
    }
    assert!(
        e_logits <= TOL_FORWARD,
        "{name}: logits rel err {e_logits:e}"
    );
    assert!(e_loss <= TOL_FORWARD, "{name}: loss rel err {e_loss:e}");
    assert!(e_grads <= TOL_GRAD, "{name}: gradients rel err {e_grads:e}");
    assert!(
        worst.0 <= TOL_GRAD_TENSOR,
        "{name}: gradient of {} rel err {:e}",
        worst.1,
        worst.0
    );
    assert!(
        e_steps <= TOL_LOSS_STEPS,
        "{name}: step losses differ by {e_steps:e}"
    );
    assert!(
        e_weights <= TOL_WEIGHTS,
        "{name}: weights rel err {e_weights:e}"
    );
    assert!(
        losses_g.last() < losses_g.first(),
        "{name}: the loss did not fall on the GPU: {losses_g:?}"
    );
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn tiny_gpt2_style_agrees_on_cpu_and_cuda() {
    check_preset("tiny", 4, 64);
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn llama_style_agrees_on_cpu_and_cuda() {
    check_preset("llama-tiny", 4, 64);
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn gpt2_bench_agrees_on_cpu_and_cuda() {
    check_preset("gpt2-bench", 4, 256);
}

/// The optimizer alone, three ways, on the same gradients: CUDA kernels, composed tensor ops on
/// the GPU, the CPU's fused pass. Same f32 operations in the same order, so equal bit for bit.
#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "needs --features cuda and a GPU")]
fn optimizer_kernels_match_the_composed_update_and_the_cpu_bit_for_bit() {
    let Some(gpu) = cuda() else { return };
    let mut rng = Rng::derive(5, "adamw-kernels");
    let shapes: Vec<(String, Vec<usize>)> = vec![
        ("w".into(), vec![300, 257]),
        ("b".into(), vec![257]),
        ("e".into(), vec![1, 3]),
    ];
    let init: Vec<Vec<f32>> = shapes
        .iter()
        .map(|(_, s)| {
            (0..s.iter().product())
                .map(|_| rng.normal() as f32)
                .collect()
        })
        .collect();
    let vars_on = |d: &Device| -> BTreeMap<String, Var> {
        shapes
            .iter()
            .zip(&init)
            .map(|((k, s), x)| (k.clone(), Var::from_slice(x, s.as_slice(), d).unwrap()))
            .collect()
    };
    let (v_kernel, v_composed, v_cpu) = (vars_on(&gpu), vars_on(&gpu), vars_on(&Device::Cpu));
    let cfg = OptimConfig::default();
    let mut o_kernel = AdamW::new(cfg.clone());
    let mut o_composed = AdamW::new(cfg.clone()).with_composed_update();
    let mut o_cpu = AdamW::new(cfg);
    for step in 0..3 {
        let mut g_gpu = FlatGrads::new();
        let mut g_cpu = FlatGrads::new();
        for (k, s) in &shapes {
            let n: usize = s.iter().product();
            // Gradients over several orders of magnitude, some exactly zero.
            let g: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 17 == 0 {
                        0.0
                    } else {
                        (rng.normal() * 10f64.powi((i % 7) as i32 - 4)) as f32
                    }
                })
                .collect();
            let t = Tensor::from_slice(&g, s.as_slice(), &gpu).unwrap();
            g_gpu.insert(k.clone(), Grad::Tensor(t));
            g_cpu.insert(k.clone(), Grad::Host(g));
        }
        let (n_gpu, n_cpu) = (global_norm(&g_gpu).unwrap(), global_norm(&g_cpu).unwrap());
        assert!(
            (n_gpu - n_cpu).abs() <= 1e-12 * n_cpu,
            "step {step}: gradient norm {n_gpu} on the GPU, {n_cpu} on the CPU"
        );
        let lr = 1e-2 * (step + 1) as f64;
        o_kernel.step(&v_kernel, &g_gpu, lr).unwrap();
        o_composed.step(&v_composed, &g_gpu, lr).unwrap();
        o_cpu.step(&v_cpu, &g_cpu, lr).unwrap();
    }
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    for (k, _) in &shapes {
        let want = bits(v_cpu[k].as_tensor());
        assert_eq!(
            bits(v_kernel[k].as_tensor()),
            want,
            "{k}: CUDA kernels vs CPU"
        );
        assert_eq!(
            bits(v_composed[k].as_tensor()),
            want,
            "{k}: composed GPU vs CPU"
        );
    }
    let (s_kernel, _) = o_kernel.state_tensors(&v_kernel).unwrap();
    let (s_cpu, _) = o_cpu.state_tensors(&v_cpu).unwrap();
    for (k, t) in &s_cpu {
        assert_eq!(bits(&s_kernel[k]), bits(t), "moment {k}");
    }
    eprintln!("optimizer: CUDA kernels = composed GPU update = CPU pass, bit for bit (3 steps)");
}
