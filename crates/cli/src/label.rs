//! `chatforge label`: serves the labelling page (crates/server `label`) on a local address so a
//! person can rank K sampled responses of a model to each prompt; the rankings file it appends
//! to is the reward model's training data.
//!
//! Responses are sampled with the engine from `render_prompt(prompt)` under the checkpoint's chat
//! template (its stage config's `template`, else native), stopping at the assistant-end token
//! or an end-of-text token (a model that is only pretrained ends with the latter); the stop
//! token is not part of the text. The sampling seed of prompt `i` is derived from `--seed` and
//! `i`, so after a restart a prompt gets the same responses. A response that comes out empty
//! (the model ended its turn at once) is resampled with a further derived seed, up to
//! [`EMPTY_RETRIES`] times, because a ranking cannot hold an empty response.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chatforge_data::conversation::Message;
use chatforge_data::corpus::ReadOptions;
use chatforge_data::prompts::read_prompts;
use chatforge_engine::{generate_n, FinishReason, SamplingParams};
use chatforge_server::label::{serve, LabelApp, Responder, ResponderError, K_RANGE};
use chatforge_tokenizer::chat::{assistant_end, render_prompt, ChatTemplate};
use chatforge_tokenizer::Special;
use chatforge_train::artifact::{load_model, LoadedModel};

/// How many times an empty response is resampled before the prompt is reported as failed.
const EMPTY_RETRIES: u64 = 4;

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// The policy to sample from: a checkpoint directory, or a run directory (its newest).
    #[arg(long)]
    model: PathBuf,
    /// Prompt files (JSONL `{"prompt": [messages]}`); repeat the flag for several.
    #[arg(long, required = true)]
    prompts: Vec<PathBuf>,
    /// Responses per prompt (2 to 9).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// The rankings file to append to (created if missing; labelling resumes from it).
    #[arg(long)]
    out: PathBuf,
    /// Address to serve on. The page has no login: keep it on a loopback address unless the
    /// network is trusted. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Sampling temperature; 1 samples the model as it is (0 would make all K responses the
    /// same).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus mass in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Longest response in tokens.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling seed; prompt i uses a seed derived from it and i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip malformed prompt records (counted) instead of stopping at the first.
    #[arg(long)]
    skip_bad_records: bool,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

/// Samples responses with the engine.
struct EngineResponder {
    loaded: LoadedModel,
    template: ChatTemplate,
    params: SamplingParams,
}

/// SplitMix64 of `x`: decorrelates the seeds of neighbouring prompts and attempts.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Responder for EngineResponder {
    fn responses(
        &self,
        index: usize,
        prompt: &[Message],
        k: usize,
    ) -> std::result::Result<Vec<String>, ResponderError> {
        let tok = &self.loaded.tokenizer;
        let ids = render_prompt(tok, prompt, self.template)?;
        let mut out: Vec<Option<String>> = vec![None; k];
        for attempt in 0..=EMPTY_RETRIES {
            let missing: Vec<usize> = (0..k).filter(|&j| out[j].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let params = SamplingParams {
                seed: mix(mix(self.params.seed ^ mix(index as u64)) ^ attempt),
                ..self.params.clone()
            };
            let samples = generate_n(
                &self.loaded.model,
                self.loaded.params.device(),
                &ids,
                missing.len(),
                &params,
            )?;
            for (j, s) in missing.into_iter().zip(samples) {
                let mut tokens = s.tokens;
                if s.finish == FinishReason::Stop {
                    tokens.pop(); // the stop token
                }
                // A sample may end inside a multi-byte character: show what is there.
                let text = String::from_utf8_lossy(&tok.decode_bytes(&tokens)?)
                    .trim()
                    .to_string();
                if !text.is_empty() {
                    out[j] = Some(text);
                }
            }
        }
        out.into_iter()
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                format!(
                    "the model ended its reply at once {} times in a row for a response; \
                     skip this prompt or raise --temperature",
                    EMPTY_RETRIES + 1
                )
                .into()
            })
    }
}

pub fn run(a: LabelArgs) -> Result<()> {
    // The cheap checks first, before the model loads.
    if !K_RANGE.contains(&a.k) {
        bail!(
            "--k {}: a ranking compares {} to {} responses",
            a.k,
            K_RANGE.start(),
            K_RANGE.end()
        );
    }
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let opts = ReadOptions {
        skip_bad_records: a.skip_bad_records,
    };
    let (records, stats) = read_prompts(&a.prompts, &opts)?;
    let prompts: Vec<Vec<Message>> = records.into_iter().map(|r| r.prompt).collect();

    let loaded = load_model(&a.model, &a.device.open()?)
        .with_context(|| format!("loading a model from {}", a.model.display()))?;
    let template = chatforge_train::artifact::template_of(&loaded.meta)
        .with_context(|| format!("{}: meta.json", loaded.checkpoint.dir.display()))?;
    let end = assistant_end(&loaded.tokenizer, template)?;
    let eot = loaded.tokenizer.special(Special::Eot);
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop_tokens: vec![end, eot],
    };
    params.validate()?;
    let model_dir = loaded.checkpoint.dir.clone();
    let responder = Arc::new(EngineResponder {
        loaded,
        template,
        params,
    });
    let (app, report) = LabelApp::open(prompts, a.k, responder, &a.out)
        .with_context(|| format!("setting up labelling into {}", a.out.display()))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.bind)
            .await
            .with_context(|| format!("binding {}", a.bind))?;
        let addr = listener.local_addr()?;
        let p = report.progress;
        eprintln!(
            "labelling {} prompts with {} responses each from {}; {} already ranked in {}",
            p.total,
            a.k,
            model_dir.display(),
            p.ranked,
            a.out.display()
        );
        if stats.skipped_bad > 0 {
            eprintln!("(skipped {} malformed prompt records)", stats.skipped_bad);
        }
        if report.duplicate_prompts > 0 {
            eprintln!(
                "({} duplicate prompts are served once)",
                report.duplicate_prompts
            );
        }
        if report.unmatched_records > 0 {
            eprintln!(
                "({} records in the rankings file are for prompts not in this list; kept)",
                report.unmatched_records
            );
        }
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: serving on {} — the page has no login; anyone who can reach it can \
                 submit rankings",
                addr.ip()
            );
        }
        eprintln!("open http://{addr}/ in a browser (Ctrl-C to stop)");
        serve(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        eprintln!("stopped; every submitted ranking is in {}", a.out.display());
        Ok(())
    })
}
