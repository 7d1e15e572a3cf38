//! Turns training events into a progress bar and concise log lines on stderr.

use chatforge_train::TrainEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar for one training stage.
pub struct TrainProgress {
    stage: &'static str,
    bar: Option<ProgressBar>,
}

impl TrainProgress {
    pub fn new(stage: &'static str) -> Self {
        Self { stage, bar: None }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(s),
            // No terminal (CI, pipes): the bar draws nothing, so neither would its println.
            _ => eprintln!("{s}"),
        }
    }

    pub fn on_event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Prepared {
                train_tokens,
                val_tokens,
                reused,
            } => self.line(format!(
                "[{}] data {}: {train_tokens} train tokens, {val_tokens} val tokens",
                self.stage,
                if *reused { "reused" } else { "prepared" }
            )),
            TrainEvent::Start {
                step,
                total_steps,
                params,
                per_step,
                unit,
                resumed,
            } => {
                self.line(format!(
                    "[{}] {} at step {step}/{total_steps}: {:.2}M parameters, {per_step} {unit}/step",
                    self.stage,
                    if *resumed { "resuming" } else { "starting" },
                    *params as f64 / 1e6
                ));
                let bar = ProgressBar::with_draw_target(
                    Some(*total_steps),
                    ProgressDrawTarget::stderr_with_hz(4),
                );
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(self.stage);
                bar.set_position(*step);
                self.bar = Some(bar);
            }
            TrainEvent::Step(m) => {
                if let Some(b) = &self.bar {
                    b.set_position(m.step);
                    b.set_message(format!(
                        "loss {:.4} lr {:.2e} {:.0} tok/s",
                        m.loss, m.lr, m.tokens_per_sec
                    ));
                    if b.is_hidden() && (m.step % 10 == 0 || m.step == 1) {
                        // No terminal (CI, pipes): one concise line every 10 steps instead.
                        eprintln!(
                            "[{}] step {} loss {:.4} lr {:.2e} {:.0} tok/s",
                            self.stage, m.step, m.loss, m.lr, m.tokens_per_sec
                        );
                    }
                }
            }
            TrainEvent::Eval {
                step,
                val_loss,
                val_bpb,
            } => self.line(if val_bpb.is_nan() {
                format!("[{}] step {step}: val loss {val_loss:.4}", self.stage)
            } else {
                format!(
                    "[{}] step {step}: val loss {val_loss:.4}, {val_bpb:.4} bits/byte",
                    self.stage
                )
            }),
            TrainEvent::Accuracy { step, accuracy } => {
                let kinds: Vec<String> = accuracy
                    .per_kind
                    .iter()
                    .map(|(k, (c, t))| format!("{k} {c}/{t}"))
                    .collect();
                self.line(format!(
                    "[{}] step {step}: task accuracy {:.1}% ({})",
                    self.stage,
                    100.0 * accuracy.overall(),
                    kinds.join(", ")
                ))
            }
            TrainEvent::Sample { step, text, .. } => self.line(format!(
                "[{}] step {step} sample: {}",
                self.stage,
                text.replace('\n', " ⏎ ")
            )),
            TrainEvent::Checkpoint { step, path } => self.line(format!(
                "[{}] step {step}: checkpoint {}",
                self.stage,
                path.display()
            )),
            TrainEvent::Skipped { step, reason } => self.line(format!(
                "[{}] WARNING step {step} skipped: {reason}",
                self.stage
            )),
            TrainEvent::Ppo(s) => {
                if let Some(b) = &self.bar {
                    b.set_position(s.step);
                    b.set_message(format!(
                        "score {:+.3} kl {:.2} β {:.3} len {:.0}",
                        s.score_mean, s.kl, s.beta, s.response_len
                    ));
                    if b.is_hidden() {
                        eprintln!(
                            "[{}] step {} score {:+.3}±{:.3} kl {:.3} β {:.4} entropy {:.3} \
                             pg {:+.4} vf {:.4} clip {:.3} approx-kl {:.4} ev {:.2} len {:.1} \
                             ended {:.0}%{}",
                            self.stage,
                            s.step,
                            s.score_mean,
                            s.score_std,
                            s.kl,
                            s.beta,
                            s.entropy,
                            s.policy_loss,
                            s.value_loss,
                            s.clip_frac,
                            s.approx_kl,
                            s.explained_variance,
                            s.response_len,
                            100.0 * s.ended_frac,
                            s.ptx_loss
                                .map(|l| format!(" ptx {l:.4}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            TrainEvent::PpoEval(e) => {
                let win = e
                    .win_rate
                    .as_ref()
                    .map(|w| {
                        format!(
                            "win rate vs SFT {:.1}% [{:.1}, {:.1}] ({})",
                            100.0 * w.rate,
                            100.0 * w.lo,
                            100.0 * w.hi,
                            if e.gold_judge {
                                "gold judge"
                            } else {
                                "reward model"
                            }
                        )
                    })
                    .unwrap_or_else(|| "no eval prompts".into());
                let tax = e
                    .pretrain_loss
                    .map(|l| format!(", pretraining loss {l:.4}"))
                    .unwrap_or_default();
                let rm = e
                    .rm_score
                    .map(|s| format!(", RM score {s:+.3}"))
                    .unwrap_or_default();
                self.line(format!("[{}] step {}: {win}{rm}{tax}", self.stage, e.step))
            }
            TrainEvent::Warning { step, message } => {
                self.line(format!("[{}] WARNING step {step}: {message}", self.stage))
            }
            TrainEvent::RewardEval { step, eval } => self.line(format!(
                "[{}] step {step}: held-out pairwise accuracy {:.1}% ({} pairs), Kendall τ {:.3}, \
                 loss {:.4}, reward {:+.3} ± {:.3}",
                self.stage,
                100.0 * eval.accuracy,
                eval.pairs,
                eval.kendall_tau,
                eval.loss,
                eval.reward_mean,
                eval.reward_std
            )),
            TrainEvent::Done { .. } => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// A plain counting bar (`done / total`) on stderr, for stages that are not training loops.
pub fn count_bar(prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}
