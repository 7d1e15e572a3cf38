//! Where one training step's time goes: forward, backward, gradient gathering, clipping and the
//! AdamW update, eight steps on a fixed batch (B 8 × the preset's context).
//!
//! ```text
//! cargo run --release -p chatforge-train --example step_profile -- [PRESET] [f32|bf16] [cpu|cuda]
//! ```
//!
//! On a GPU (`cuda`, a build with `--features cuda`) every phase ends with a device
//! synchronisation, so each figure is that phase's own time.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_train::artifact::var_map;
use chatforge_train::optim::{accumulate_grads, clip_grads, AdamW, FlatGrads, OptimConfig};

fn main() -> anyhow::Result<()> {
    let preset = std::env::args().nth(1).unwrap_or("tiny".into());
    let prec = match std::env::args().nth(2).as_deref() {
        Some("bf16") => chatforge_model::ops::MatmulPrecision::Bf16,
        _ => chatforge_model::ops::MatmulPrecision::F32,
    };
    let device = match std::env::args().nth(3).as_deref() {
        Some("cuda") => Device::new_cuda(0)?,
        _ => Device::Cpu,
    };
    let cfg = GptConfig::preset(&preset, 4096).unwrap(); // bench train's vocabulary
    let params = Params::init(&cfg, 1, &device)?;
    let model = Gpt::new(&cfg, params.var_builder(DType::F32))?.with_matmul_precision(prec);
    let vars = var_map(&params);
    let (b, t) = (8, cfg.context_length);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 4096) as u32).collect();
    let x = Tensor::from_vec(ids.clone(), (b, t), &device)?;
    let y = Tensor::from_vec(ids, (b, t), &device)?;
    let mut opt = AdamW::new(OptimConfig::default());
    let mark = || -> anyhow::Result<Instant> {
        device.synchronize()?;
        Ok(Instant::now())
    };
    for _ in 0..8 {
        let t0 = mark()?;
        let loss = model.loss(&x, &y)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = mark()?;
        let g = loss.backward()?;
        let t2 = mark()?;
        let mut grads = FlatGrads::new();
        accumulate_grads(&vars, &g, 1.0, &mut grads)?;
        drop(g);
        let t3 = mark()?;
        clip_grads(&mut grads, 1.0)?;
        let t4 = mark()?;
        opt.step(&vars, &grads, 1e-3)?;
        let t5 = mark()?;
        println!(
            "fwd {:.4}s bwd {:.4}s acc {:.4}s clip {:.4}s adamw {:.4}s total {:.4}s",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t4 - t3).as_secs_f64(),
            (t5 - t4).as_secs_f64(),
            (t5 - t0).as_secs_f64()
        );
    }
    Ok(())
}
