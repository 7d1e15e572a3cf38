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
            TrainEvent::Done { .. } => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
