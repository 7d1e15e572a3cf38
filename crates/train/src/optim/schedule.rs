//! The learning-rate schedule: linear warm-up, then cosine decay to a floor.

use super::OptimConfig;

/// Learning rate at optimizer step `step` (0-based) of `total` steps: linear warm-up over
/// `warmup_steps`, then cosine decay from `lr` to `lr * min_lr_ratio` at the last step.
pub fn lr_at(cfg: &OptimConfig, step: u64, total: u64) -> f64 {
    if cfg.warmup_steps > 0 && step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let decay_steps = total.saturating_sub(cfg.warmup_steps).max(1);
    let progress = ((step - cfg.warmup_steps.min(step)) as f64 / decay_steps as f64).min(1.0);
    let min_lr = cfg.lr * cfg.min_lr_ratio;
    min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let cfg = OptimConfig {
            lr: 1.0,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            ..Default::default()
        };
        assert!((lr_at(&cfg, 0, 100) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 9, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 10, 100) - 1.0).abs() < 1e-12);
        // Half-way through the decay: the midpoint between peak and floor.
        assert!((lr_at(&cfg, 55, 100) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 100, 100) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 500, 100) - 0.1).abs() < 1e-12);
    }
}
