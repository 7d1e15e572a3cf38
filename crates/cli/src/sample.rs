//! `chatforge sample`: generate a continuation from a checkpoint, streamed to stdout.
//!
//! With `--best-of-n N --reward DIR` the prompt is a user message instead: N replies are
//! sampled with the checkpoint's chat template, scored by the reward model, and the best is
//! printed (`--show-all` prints every reply with its score, best first).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chatforge_engine::{generate, FinishReason, SamplingParams};
use chatforge_tokenizer::{Special, StreamDecoder};
use chatforge_train::artifact::load_model;

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// A checkpoint directory, or a run directory (its newest checkpoint is used).
    #[arg(long)]
    model: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    prompt: String,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus mass in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Number of samples.
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Sample N chat replies to --prompt (a user message) and print the one the reward model
    /// scores highest. Needs --reward.
    #[arg(long, requires = "reward")]
    best_of_n: Option<usize>,
    /// The reward model for --best-of-n.
    #[arg(long, requires = "best_of_n")]
    reward: Option<PathBuf>,
    /// With --best-of-n: print every reply with its score, best first.
    #[arg(long, requires = "best_of_n")]
    show_all: bool,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

/// `--best-of-n`: sample `n` chat replies, print the best (or all, ranked).
fn run_best_of_n(a: &SampleArgs, n: usize, reward: &std::path::Path) -> Result<()> {
    use chatforge_data::conversation::Message;
    use chatforge_train::best_of_n::best_of_n;
    use chatforge_train::reward::RewardModel;

    if a.prompt.trim().is_empty() {
        anyhow::bail!("--best-of-n needs a --prompt (the user's message)");
    }
    let device = a.device.open()?;
    let loaded = load_model(&a.model, &device)
        .with_context(|| format!("loading a model from {}", a.model.display()))?;
    let rm = RewardModel::load(reward, &device)
        .with_context(|| format!("loading a reward model from {}", reward.display()))?;
    let template = chatforge_train::artifact::template_of(&loaded.meta)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop_tokens: Vec::new(),
    };
    let prompt = [Message::user(a.prompt.clone())];
    let ranked = best_of_n(
        &loaded.model,
        &device,
        &loaded.tokenizer,
        template,
        &rm,
        &prompt,
        n,
        &params,
    )?;
    let mut out = std::io::stdout().lock();
    if a.show_all {
        for (i, (text, score, ended)) in ranked.iter().enumerate() {
            let note = if *ended { "" } else { ", unfinished" };
            writeln!(out, "#{} score {score:+.4}{note}\n{text}\n---", i + 1)?;
        }
    } else if let Some((text, score, ended)) = ranked.first() {
        writeln!(out, "{text}")?;
        eprintln!(
            "(best of {n} by reward score {score:+.4}{})",
            if *ended { "" } else { "; unfinished" }
        );
    }
    Ok(())
}

pub fn run(a: SampleArgs) -> Result<()> {
    if let (Some(n), Some(reward)) = (a.best_of_n, a.reward.as_deref()) {
        return run_best_of_n(&a, n, reward);
    }
    let device = a.device.open()?;
    let loaded = load_model(&a.model, &device)
        .with_context(|| format!("loading a model from {}", a.model.display()))?;
    let tok = &loaded.tokenizer;
    let eot = tok.special(Special::Eot);
    // Like a document start in pretraining: the prompt follows an end-of-text token.
    let mut prompt = vec![eot];
    prompt.extend(tok.encode(&a.prompt));
    let stdout = std::io::stdout();
    for i in 0..a.n {
        let params = SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed.wrapping_add(i as u64),
            max_tokens: a.max_tokens,
            stop_tokens: vec![eot],
        };
        let mut out = stdout.lock();
        write!(out, "{}", a.prompt)?;
        out.flush()?;
        let mut dec = StreamDecoder::new(tok);
        let mut io_err = None;
        let g = generate(&loaded.model, &device, &prompt, &params, |id| {
            let written = match dec.push(id) {
                Ok(piece) => write!(out, "{piece}")
                    .and_then(|_| out.flush())
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            match written {
                Ok(()) => true,
                Err(e) => {
                    io_err = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = io_err {
            return Err(e);
        }
        write!(out, "{}", dec.finish())?;
        writeln!(out)?;
        if a.n > 1 {
            writeln!(out, "---")?;
        }
        if g.finish == FinishReason::Context {
            eprintln!(
                "(stopped: the context window of {} tokens is full)",
                loaded.config.context_length
            );
        }
    }
    Ok(())
}
