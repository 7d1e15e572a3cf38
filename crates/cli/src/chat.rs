//! `chatforge chat`: a terminal chat with a checkpoint. Streams each reply as it is generated,
//! keeps the conversation, and drops the oldest turns when the context window fills up.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use chatforge_data::conversation::{Message, Role};
use chatforge_engine::{generate, SamplingParams};
use chatforge_tokenizer::chat::{assistant_end, render_prompt, ChatTemplate};
use chatforge_tokenizer::StreamDecoder;
use chatforge_train::artifact::load_model;

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// A checkpoint directory, or a run directory (its newest checkpoint).
    #[arg(long)]
    model: PathBuf,
    /// A system prompt placed before the conversation.
    #[arg(long)]
    system: Option<String>,
    #[arg(long, value_enum, default_value_t = TemplateArg::Native)]
    template: TemplateArg,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Longest reply in tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TemplateArg {
    Native,
    Chatml,
}

const HELP: &str = "commands: /reset (forget the conversation), /temp X, /top_k N, /top_p X, \
                    /max N, /system TEXT, /help, /quit (or Ctrl-D)";

pub fn run(a: ChatArgs) -> Result<()> {
    let device = a.device.open()?;
    let loaded = load_model(&a.model, &device)
        .with_context(|| format!("loading a model from {}", a.model.display()))?;
    let tok = &loaded.tokenizer;
    let template = match a.template {
        TemplateArg::Native => ChatTemplate::Native,
        TemplateArg::Chatml => ChatTemplate::ChatMl,
    };
    let end = assistant_end(tok, template)?;
    let ctx = loaded.config.context_length;
    let mut params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop_tokens: vec![end],
    };
    params.validate()?;
    let mut system = a.system.clone();
    let mut history: Vec<Message> = Vec::new();
    eprintln!(
        "chatforge chat — {} ({} parameters, context {ctx}). {HELP}",
        loaded.checkpoint.dir.display(),
        loaded.params.num_params()
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut turn = 0u64;
    loop {
        eprint!("\nyou> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let arg = arg.trim();
            let result: Result<String, String> = match name {
                "quit" | "exit" => return Ok(()),
                "reset" => {
                    history.clear();
                    Ok("(conversation cleared)".into())
                }
                "temp" => set(&mut params.temperature, arg),
                "top_k" => set(&mut params.top_k, arg),
                "top_p" => set(&mut params.top_p, arg),
                "max" => set(&mut params.max_tokens, arg),
                "system" => {
                    system = (!arg.is_empty()).then(|| arg.to_string());
                    Ok(format!(
                        "(system prompt {})",
                        if arg.is_empty() { "removed" } else { "set" }
                    ))
                }
                "help" => Ok(HELP.into()),
                _ => Err(format!("unknown command /{name}; {HELP}")),
            };
            match result.and_then(|m| params.validate().map(|_| m).map_err(|e| e.to_string())) {
                Ok(m) => eprintln!("{m}"),
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        history.push(Message {
            role: Role::User,
            content: line.to_string(),
        });
        let render = |history: &[Message]| {
            let mut msgs = Vec::new();
            if let Some(s) = &system {
                msgs.push(Message {
                    role: Role::System,
                    content: s.clone(),
                });
            }
            msgs.extend(history.iter().cloned());
            render_prompt(tok, &msgs, template)
        };
        // A message that cannot fit even alone is refused before any history is dropped.
        let alone = render(&history[history.len() - 1..])?;
        if alone.len() >= ctx {
            eprintln!(
                "(that message is {} tokens; the context window is {ctx} — please send something shorter)",
                alone.len()
            );
            history.pop();
            continue;
        }
        // Fit the prompt and room for a reply into the context, dropping the oldest exchanges.
        let room_wanted = params.max_tokens.min(ctx / 4).max(1);
        let mut dropped = 0;
        let prompt = loop {
            let ids = render(&history)?;
            if ctx.saturating_sub(ids.len()) >= room_wanted || history.len() <= 1 {
                break ids;
            }
            history.drain(..history.len().min(2));
            dropped += 1;
        };
        if dropped > 0 {
            eprintln!("(context full: dropped the {dropped} oldest exchange(s))");
        }
        eprint!("bot> ");
        let mut dec = StreamDecoder::new(tok);
        let mut reply = String::new();
        let mut p = params.clone();
        p.seed = params.seed.wrapping_add(turn);
        turn += 1;
        let g = generate(&loaded.model, &device, &prompt, &p, |id| {
            if let Ok(piece) = dec.push(id) {
                reply.push_str(&piece);
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            }
            true
        })?;
        let tail = dec.finish();
        reply.push_str(&tail);
        writeln!(out, "{tail}")?;
        if g.finish == chatforge_engine::FinishReason::Context {
            eprintln!("(the reply filled the context window)");
        }
        if reply.trim().is_empty() {
            // An empty turn cannot be rendered back; forget the question instead.
            eprintln!("(the model gave an empty reply)");
            history.pop();
        } else {
            history.push(Message {
                role: Role::Assistant,
                content: reply.trim().to_string(),
            });
        }
    }
}

fn set<T: std::str::FromStr + std::fmt::Display>(
    slot: &mut T,
    arg: &str,
) -> Result<String, String> {
    match arg.parse::<T>() {
        Ok(v) => {
            *slot = v;
            Ok(format!("(set to {slot})"))
        }
        Err(_) => Err(format!("could not read {arg:?} as a number")),
    }
}
