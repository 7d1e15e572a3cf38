//! Task accuracy by generation: each held-out task's prompt (its conversation without the gold
//! reply) is rendered with the chat template, the model answers greedily until the
//! assistant-end token, and the world's grader checks the reply. Reported per task kind.

use std::collections::BTreeMap;

use candle_core::Device;
pub use chatforge_data::world::read_tasks;
use chatforge_data::world::{grade, Task};
use chatforge_engine::{generate, SamplingParams};
use chatforge_model::Gpt;
use chatforge_tokenizer::chat::{assistant_end, render_prompt, ChatTemplate};
use chatforge_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Correct / total per task kind, and overall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskAccuracy {
    pub per_kind: BTreeMap<String, (usize, usize)>,
    pub correct: usize,
    pub total: usize,
}

impl TaskAccuracy {
    /// Overall fraction correct (0 when there were no tasks).
    pub fn overall(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// Fraction correct for one kind.
    pub fn of(&self, kind: &str) -> Option<f64> {
        self.per_kind
            .get(kind)
            .map(|(c, t)| *c as f64 / (*t).max(1) as f64)
    }
}

/// One task's prompt for generation: every message but the final (gold) assistant reply.
pub fn task_prompt(tok: &Tokenizer, task: &Task, template: ChatTemplate) -> Result<Vec<u32>> {
    let msgs = &task.conversation.messages;
    let upto = msgs.len().saturating_sub(1);
    Ok(render_prompt(tok, &msgs[..upto], template)?)
}

/// Greedy reply of `model` (weights on `device`) to a rendered prompt, decoded without the end
/// token.
pub fn reply(
    model: &Gpt,
    device: &Device,
    tok: &Tokenizer,
    prompt: &[u32],
    template: ChatTemplate,
    max_new_tokens: usize,
) -> Result<String> {
    let end = assistant_end(tok, template)?;
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: max_new_tokens,
        stop_tokens: vec![end],
        ..SamplingParams::default()
    };
    let g = generate(model, device, prompt, &params, |_| true)?;
    let ids: Vec<u32> = g.tokens.into_iter().filter(|&id| id != end).collect();
    Ok(String::from_utf8_lossy(&tok.decode_bytes(&ids)?).into_owned())
}

/// Grades greedy replies of `model` (weights on `device`) to `tasks`.
pub fn task_accuracy(
    model: &Gpt,
    device: &Device,
    tok: &Tokenizer,
    template: ChatTemplate,
    tasks: &[Task],
    max_new_tokens: usize,
) -> Result<TaskAccuracy> {
    let mut acc = TaskAccuracy::default();
    let ctx = model.config().context_length;
    for task in tasks {
        let prompt = task_prompt(tok, task, template)?;
        // A prompt that leaves no room to answer counts as a wrong answer, not an error.
        let ok = if prompt.len() + 1 >= ctx {
            false
        } else {
            let text = reply(model, device, tok, &prompt, template, max_new_tokens)?;
            grade(task, &text)
        };
        let kind = serde_json::to_value(task.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", task.kind));
        let e = acc.per_kind.entry(kind).or_default();
        e.1 += 1;
        acc.total += 1;
        if ok {
            e.0 += 1;
            acc.correct += 1;
        }
    }
    Ok(acc)
}
