use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_train::artifact::var_map;
use chatforge_train::optim::{accumulate_grads, AdamW, FlatGrads, OptimConfig};

fn main() -> anyhow::Result<()> {
    let preset = std::env::args().nth(1).unwrap_or("tiny".into());
    let cfg = GptConfig::preset(&preset, 4096).unwrap();
    let params = Params::init(&cfg, 1, &Device::Cpu)?;
    let prec = match std::env::args().nth(2).as_deref() {
        Some("bf16") => chatforge_model::ops::MatmulPrecision::Bf16,
        _ => chatforge_model::ops::MatmulPrecision::F32,
    };
    let model = Gpt::new(&cfg, params.var_builder(DType::F32))?.with_matmul_precision(prec);
    let vars = var_map(&params);
    let (b, t) = (8, cfg.context_length);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 4096) as u32).collect();
    let x = Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu)?;
    let y = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
    let mut opt = AdamW::new(OptimConfig::default());
    for _ in 0..8 {
        let t0 = Instant::now();
        let loss = model.loss(&x, &y)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let g = loss.backward()?;
        let t2 = Instant::now();
        let mut grads = FlatGrads::new();
        accumulate_grads(&vars, &g, 1.0, &mut grads)?;
        let t3 = Instant::now();
        opt.step(&vars, &grads, 1e-3)?;
        let t4 = Instant::now();
        println!(
            "fwd {:.3}s bwd {:.3}s acc {:.3}s adamw {:.3}s",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t4 - t3).as_secs_f64()
        );
    }
    Ok(())
}
