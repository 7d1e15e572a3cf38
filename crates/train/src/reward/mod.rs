//! Reward model: the SFT transformer read out by a scalar head, trained on K-wise rankings.
//!
//! The algorithm (DESIGN.md "Reward model", InstructGPT step 2):
//! 1. The model is the SFT checkpoint with a scalar head `score_head` (`(1, C)` weight drawn
//!    from N(0, 1/(C+1)) with a seeded stream, bias 0) in place of the LM head. A response is
//!    the row `render_prompt(prompt) ++ encode(response) ++ [assistant_end] ++ [<|reward|>]`
//!    (responses in ranking files are finished replies) and its score `r` is the head at the
//!    readout token, the row's last position (`model`). A record with a row longer than the
//!    context is dropped whole and counted, never truncated.
//! 2. For a prompt with K ranked responses, all K rows go through the model in one forward
//!    batch and the loss is `−1/P Σ log σ(r_better − r_worse)` over its `P` ordered pairs
//!    (C(K,2) without ties; tied pairs are skipped), computed as a softplus that never
//!    overflows (`loss`). A step averages this over `batch_size` records: InstructGPT's
//!    batching, which avoids treating the C(K,2) correlated pairs of one prompt as independent
//!    rows (it overfits in one pass when they are shuffled). `pairwise_baseline = true` trains
//!    the TRL way instead, for comparison: every ordered pair an independent row, shuffled,
//!    `batch_size` pairs a step, the same loss per pair.
//! 3. AdamW, warm-up + cosine, clipping and the numeric guard as in the other stages; one
//!    epoch by default (InstructGPT trains one: the RM overfits quickly). The LM head is not
//!    trained (it is not in the forward pass; it stays in the checkpoint) and neither is the
//!    score bias by the loss (the loss depends only on differences of scores, so its gradient
//!    is exactly 0).
//! 4. Held-out prompts are chosen by a hash of the prompt (`val_fraction`, stable across runs
//!    and files). Before the first step, every `eval_every` steps and at the end: held-out
//!    pairwise accuracy (share of ordered pairs with `r_better > r_worse`, equal scores ½),
//!    Kendall τ-b per record between scores and ranking (averaged over records where it is
//!    defined), the K-wise loss, and the mean and spread of the scores.
//! 5. After the last step the bias is shifted so that the training responses (in the built-in
//!    recipe, the SFT model's own samples) score mean 0: `bias −= mean r`. The final checkpoint
//!    holds the shifted bias and remembers the unshifted one, so a run resumed past its end
//!    trains on from exactly the weights it would have had (bit-exact resume, family 6).
//!
//! Checkpoints are the SFT parameters plus `score_head.*`, written as stage `"reward"` with the
//! resolved config (including the chat template), and resume bit-exactly as in SFT.

mod eval;
mod loss;
mod model;
mod run;

pub use eval::{evaluate_rankings, is_heldout, RewardEval};
pub use loss::{
    kwise_loss_f64, log_sigmoid_f64, pair_agreement, ranking_step_grads, softplus, softplus_f64,
    weighted_pair_loss, RankedGroup,
};
pub use model::{
    init_score_head, load_scalar, pad_rows, response_ids, reward_row, score_rows, LoadedScalar,
    RewardModel, ScalarModel, SCORE_BATCH_ROWS,
};
pub use run::{run, trainable, RewardConfig, RewardPaths, RewardSummary};
