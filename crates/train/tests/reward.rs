//! Reward model: golden values of the ranking loss (family 3), every trained parameter learns
//! (family 0), the readout and padding invariance (family 4), learning a synthetic preference,
//! bit-exact resume (family 6), clean errors on bad ranking files (family 9), best-of-n.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use chatforge_data::conversation::Message;
use chatforge_data::ranking::{RankGroup, RankingRecord};
use chatforge_data::Rng;
use chatforge_engine::SamplingParams;
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_tokenizer::chat::{render_prompt, ChatTemplate};
use chatforge_tokenizer::{Special, Tokenizer, TrainConfig};
use chatforge_train::artifact::{self, Meta, SaveRequest};
use chatforge_train::best_of_n::best_of_n;
use chatforge_train::optim::{AdamW, OptimConfig};
use chatforge_train::reward::{
    init_score_head, kwise_loss_f64, load_scalar, ranking_step_grads, response_ids, reward_row,
    run, softplus_f64, trainable, weighted_pair_loss, RankedGroup, RewardConfig, RewardModel,
    RewardPaths, RewardSummary, ScalarModel,
};
use chatforge_train::TrainEvent;

// ---------------------------------------------------------------------------------------------
// Fixtures

const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "a", "mat", "red", "blue", "dog", "ran", "far", "away", "small",
    "tree", "by", "river",
];
const MARKER: &str = "gold";

/// A ranking record over K responses of random words where the number of `gold` markers
/// (0, 1 or 2) decides the ranking (more is better; equal counts tie).
fn marker_record(i: usize, k: usize, rng: &mut Rng) -> RankingRecord {
    loop {
        let counts: Vec<usize> = (0..k).map(|_| rng.index(3)).collect();
        let mut distinct = counts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 2 {
            continue;
        }
        let responses = counts
            .iter()
            .map(|&c| {
                let n = 4 + rng.index(4);
                let mut words: Vec<&str> = (0..n).map(|_| *rng.choose(WORDS)).collect();
                for _ in 0..c {
                    let at = rng.index(words.len() + 1);
                    words.insert(at, MARKER);
                }
                words.join(" ")
            })
            .collect();
        let ranking = distinct
            .iter()
            .rev()
            .map(|&c| {
                let g: Vec<usize> = (0..k).filter(|&j| counts[j] == c).collect();
                if g.len() == 1 {
                    RankGroup::One(g[0])
                } else {
                    RankGroup::Tie(g)
                }
            })
            .collect();
        return RankingRecord {
            prompt: vec![Message::user(format!("Describe thing number {i}."))],
            responses,
            ranking,
            flagged: Vec::new(),
        };
    }
}

fn marker_records(n: usize, k: usize, seed: u64) -> Vec<RankingRecord> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| marker_record(i, k, &mut rng)).collect()
}

fn write_records(path: &Path, recs: &[RankingRecord]) {
    let text: String = recs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

fn tokenizer() -> Tokenizer {
    let mut text: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    text.push(format!("{MARKER} {MARKER} Describe thing number 123."));
    Tokenizer::train(&text, &TrainConfig::with_vocab_size(300)).unwrap()
}

fn model_config(tok: &Tokenizer, tied: bool) -> GptConfig {
    let mut cfg = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    cfg.context_length = 64;
    cfg.n_layer = 2;
    cfg.n_embd = 64;
    cfg.n_head = 2;
    cfg.n_kv_head = 2;
    cfg.intermediate_size = 256;
    cfg.tie_embeddings = tied;
    cfg
}

/// An "SFT" checkpoint: fresh weights saved as the SFT stage would, with its template.
fn sft_checkpoint(dir: &Path, tok: &Tokenizer, tied: bool) -> PathBuf {
    let cfg = model_config(tok, tied);
    let params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    artifact::save(SaveRequest {
        run_dir: dir,
        step: 1,
        params: &params,
        model_config: &cfg,
        tokenizer: tok,
        meta: Meta {
            stage: "sft".into(),
            step: 1,
            tokenizer_hash: tok.hash(),
            chatforge_version: "test".into(),
            config: serde_json::json!({ "template": "native" }),
        },
        optimizer: &AdamW::new(OptimConfig::default()),
        trainer_state: serde_json::json!({}),
        keep: 2,
    })
    .unwrap()
}

/// A scalar model over fresh SFT weights plus a fresh head.
fn fresh_scalar(tok: &Tokenizer, tied: bool) -> (GptConfig, Params) {
    let cfg = model_config(tok, tied);
    let mut params = Params::init(&cfg, 5, &Device::Cpu).unwrap();
    params
        .extend(init_score_head(&cfg, 7, &Device::Cpu).unwrap())
        .unwrap();
    (cfg, params)
}

fn rows_of(tok: &Tokenizer, rec: &RankingRecord) -> Vec<Vec<u32>> {
    let p = render_prompt(tok, &rec.prompt, ChatTemplate::Native).unwrap();
    rec.responses
        .iter()
        .map(|r| {
            let resp = response_ids(tok, ChatTemplate::Native, r, true).unwrap();
            reward_row(tok, ChatTemplate::Native, &p, &resp)
        })
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Family 3: golden values

#[test]
fn ranking_loss_golden_values() {
    // −log σ(0) = ln 2; −log σ(1) = ln(1 + e⁻¹).
    let l0 = kwise_loss_f64(&[0.0, 0.0], &[(0, 1)]);
    let l1 = kwise_loss_f64(&[1.0, 0.0], &[(0, 1)]);
    assert!((l0 - std::f64::consts::LN_2).abs() <= 1e-12, "{l0}");
    assert!((l1 - 0.313_261_687_518_222_9).abs() <= 1e-12, "{l1}");
    // The six-digit values TESTING.md (family 3) states.
    #[allow(clippy::approx_constant)]
    let stated = (0.693147, 0.313262);
    assert!((l0 - stated.0).abs() <= 1e-6 && (l1 - stated.1).abs() <= 1e-6);
    // The pair order matters: the worse response scoring higher costs more.
    let l_wrong = kwise_loss_f64(&[0.0, 1.0], &[(0, 1)]);
    assert!(
        (l_wrong - 1.313_261_687_518_222_9).abs() <= 1e-12,
        "{l_wrong}"
    );
    // Stable at extreme margins: no overflow, no NaN.
    assert_eq!(softplus_f64(-1e4), 0.0);
    assert!((softplus_f64(1e4) - 1e4).abs() <= 1e-9);
}

#[test]
fn kwise_loss_is_the_mean_of_its_pairwise_losses_with_ties_skipped() {
    let scores = [0.3, -1.2, 2.0, 0.7, -0.1];
    // Ranking [2, [0, 3], 4, 1]: responses 0 and 3 tie.
    let rec = RankingRecord {
        prompt: vec![Message::user("q")],
        responses: (0..5).map(|i| format!("r{i}")).collect(),
        ranking: vec![
            RankGroup::One(2),
            RankGroup::Tie(vec![0, 3]),
            RankGroup::One(4),
            RankGroup::One(1),
        ],
        flagged: Vec::new(),
    };
    let pairs = rec.ordered_pairs();
    assert_eq!(pairs.len(), 10 - 1, "C(5,2) pairs minus the tied one");
    assert!(!pairs.contains(&(0, 3)) && !pairs.contains(&(3, 0)));
    let kwise = kwise_loss_f64(&scores, &pairs);
    let mean: f64 = pairs
        .iter()
        .map(|&(b, w)| kwise_loss_f64(&[scores[b], scores[w]], &[(0, 1)]))
        .sum::<f64>()
        / pairs.len() as f64;
    assert!((kwise - mean).abs() <= 1e-9, "{kwise} vs {mean}");
    // Without ties: exactly C(K,2) pairs.
    let all = RankingRecord {
        ranking: (0..5).map(RankGroup::One).collect(),
        ..rec.clone()
    };
    assert_eq!(all.ordered_pairs().len(), 10);
    // The tensor loss with weights 1/P is the same number (f32).
    let t = Tensor::from_vec(
        scores.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        5,
        &Device::Cpu,
    )
    .unwrap();
    let w = vec![1.0 / pairs.len() as f32; pairs.len()];
    let (loss, per_pair) = weighted_pair_loss(&t, &pairs, &w).unwrap();
    let loss = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((loss - kwise).abs() <= 1e-6, "{loss} vs {kwise}");
    assert_eq!(per_pair.len(), pairs.len());
}

// ---------------------------------------------------------------------------------------------
// Family 0: every trained parameter learns

#[test]
fn every_trained_parameter_gets_a_gradient_and_changes() {
    let tok = tokenizer();
    // Untied embeddings, so the (unused) LM head is a separate tensor.
    let (cfg, params) = fresh_scalar(&tok, false);
    let model = ScalarModel::new(&cfg, params.var_builder(DType::F32)).unwrap();
    let vars = trainable(&params);
    assert!(vars.contains_key("score_head.weight"));
    assert!(vars.contains_key("wte.weight"));
    // Everything but the LM head (not in the forward) and the score bias (zero gradient by
    // construction: the loss sees only differences of scores) is trained.
    let excluded: Vec<&str> = params
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !vars.contains_key(*k))
        .collect();
    assert_eq!(excluded, vec!["lm_head.weight", "score_head.bias"]);

    let recs = marker_records(3, 4, 1);
    let rows: Vec<Vec<Vec<u32>>> = recs.iter().map(|r| rows_of(&tok, r)).collect();
    let batch: Vec<RankedGroup> = recs
        .iter()
        .zip(&rows)
        .map(|(r, rows)| RankedGroup {
            rows: rows.iter().map(|r| r.as_slice()).collect(),
            pairs: r.ordered_pairs(),
        })
        .collect();
    let (loss, grads, _) =
        ranking_step_grads(&model, &vars, &batch, 64, tok.special(Special::Eot)).unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    for (name, g) in &grads {
        let g = g.to_vec().unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
    assert_eq!(grads.len(), vars.len());

    let before: BTreeMap<String, Vec<f32>> = params
        .iter()
        .map(|(k, v)| (k.to_string(), flat(v.as_tensor())))
        .collect();
    let mut opt = AdamW::new(OptimConfig::default());
    opt.step(&vars, &grads, 1e-3).unwrap();
    for (name, v) in params.iter() {
        let changed = flat(v.as_tensor()) != before[name];
        assert_eq!(changed, vars.contains_key(name), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Family 4: the readout, and padding changes nothing

#[test]
fn score_is_the_head_at_the_readout_token_and_padding_changes_nothing() {
    let tok = tokenizer();
    let (cfg, params) = fresh_scalar(&tok, true);
    let model = ScalarModel::new(&cfg, params.frozen_var_builder(DType::F32)).unwrap();
    let rec = marker_records(1, 4, 2).remove(0);
    let rows = rows_of(&tok, &rec);
    let reward = tok.special(Special::Reward);
    assert!(rows.iter().all(|r| r.last() == Some(&reward)));
    let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
    assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");

    let rm = RewardModel::from_params(&cfg, &params, tok.clone(), ChatTemplate::Native).unwrap();
    let batched = rm.score_ids(&rows).unwrap();
    // The same scores from the text API.
    let text = rm.score(&rec.prompt, &rec.responses).unwrap();
    assert_eq!(batched, text);

    // Head applied to the hidden state at the readout position.
    let head_w = flat(params.get("score_head.weight").unwrap().as_tensor());
    let head_b = flat(params.get("score_head.bias").unwrap().as_tensor())[0];
    for (i, row) in rows.iter().enumerate() {
        let ids = Tensor::new(row.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let alone = rm.score_ids(std::slice::from_ref(row)).unwrap()[0];
        let hidden = model.gpt.forward_hidden(&ids, None).unwrap(); // (1, T, C)
        let last = flat(&hidden.squeeze(0).unwrap().get(row.len() - 1).unwrap());
        let by_hand: f32 = last.iter().zip(&head_w).map(|(h, w)| h * w).sum::<f32>() + head_b;
        let per_position = flat(&model.forward(&ids).unwrap());
        assert!((alone - by_hand).abs() <= 1e-5, "{alone} vs {by_hand}");
        assert!((alone - per_position[row.len() - 1]).abs() <= 1e-5);
        // Padding (other, longer rows in the batch) does not change a row's score.
        assert!(
            (alone - batched[i]).abs() <= 1e-5,
            "row {i}: {alone} alone vs {} batched",
            batched[i]
        );
    }
    // A different pad token changes nothing either.
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let (x, l) = chatforge_train::reward::pad_rows(&refs, 7, &Device::Cpu).unwrap();
    let other = flat(&model.readout(&x, &l).unwrap());
    for (a, b) in other.iter().zip(&batched) {
        assert!((a - b).abs() <= 1e-5);
    }
}

// ---------------------------------------------------------------------------------------------
// Training

fn setup(dir: &Path, n: usize) -> RewardPaths {
    let tok = tokenizer();
    let base = sft_checkpoint(&dir.join("sft"), &tok, true);
    let mut recs = marker_records(n, 4, 42);
    // One record too long for the context: dropped whole and counted.
    let mut long = recs[0].clone();
    long.responses[1] = WORDS.join(" ").repeat(4);
    recs.push(long);
    write_records(&dir.join("rankings.jsonl"), &recs);
    RewardPaths {
        base,
        data: vec![dir.join("rankings.jsonl")],
        out: dir.join("rm"),
    }
}

fn config(steps: u64) -> RewardConfig {
    let mut c = RewardConfig {
        batch_size: 8,
        forward_rows: 16,
        steps: Some(steps),
        val_fraction: 0.2,
        eval_every: 20,
        checkpoint_every: 3,
        seed: 11,
        ..RewardConfig::default()
    };
    c.optim.lr = 2e-3;
    c.optim.warmup_steps = 5;
    c
}

fn run_collect(
    cfg: &RewardConfig,
    paths: &RewardPaths,
    resume: bool,
) -> (RewardSummary, Vec<(u64, u64)>) {
    let mut steps = Vec::new();
    let s = run(cfg, paths, &Device::Cpu, resume, &mut |e| {
        if let TrainEvent::Step(m) = e {
            steps.push((m.step, m.loss.to_bits()));
        }
    })
    .unwrap();
    (s, steps)
}

#[test]
fn learns_a_marker_preference_kwise_and_pairwise() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path(), 300);
    let cfg = config(60);
    let (s, _) = run_collect(&cfg, &paths, false);
    let first = s.heldout_first.as_ref().unwrap();
    eprintln!(
        "K-wise: held-out accuracy {:.3} -> {:.3}, tau {:.3} -> {:.3}, bias shift {:.4}, \
         reward mean {:.3} std {:.3}; curve {:?}",
        first.accuracy,
        s.heldout_accuracy,
        first.kendall_tau,
        s.heldout_kendall_tau,
        s.bias_shift,
        s.reward_mean,
        s.reward_std,
        s.curve
    );
    assert_eq!(s.dropped_too_long, 1);
    assert!(s.val_records > 20, "{}", s.val_records);
    assert!(
        s.heldout_accuracy > 0.9,
        "held-out accuracy {}",
        s.heldout_accuracy
    );
    assert!(s.heldout_kendall_tau > 0.7, "tau {}", s.heldout_kendall_tau);
    assert_eq!(s.curve.first().map(|p| p.0), Some(0));
    assert_eq!(s.curve.last().map(|p| p.0), Some(60));

    // The shift makes the training responses score mean 0 with the saved model.
    let rm = RewardModel::load(&s.checkpoint, &Device::Cpu).unwrap();
    assert_eq!(rm.template(), ChatTemplate::Native);
    let recs = chatforge_data::ranking::read_rankings(&paths.data, &Default::default())
        .unwrap()
        .0;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for r in recs.iter().take(300) {
        if chatforge_train::reward::is_heldout(&r.prompt, cfg.val_fraction) {
            continue;
        }
        for x in rm.score(&r.prompt, &r.responses).unwrap() {
            sum += x as f64;
            n += 1;
        }
    }
    assert!(
        (sum / n as f64).abs() < 1e-3,
        "train mean {}",
        sum / n as f64
    );
    let loaded = load_scalar(&s.checkpoint, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.stage, "reward");

    // The TRL-style baseline on the same comparisons, as independent shuffled pairs: the same
    // number of pairs per step as the K-wise run sees (8 records × up to 6 pairs).
    let base_cfg = RewardConfig {
        pairwise_baseline: true,
        batch_size: 40,
        ..cfg.clone()
    };
    let pw = RewardPaths {
        out: tmp.path().join("pairwise"),
        ..paths.clone()
    };
    let (b, _) = run_collect(&base_cfg, &pw, false);
    eprintln!(
        "pairwise baseline: held-out accuracy {:.3}, tau {:.3}; curve {:?}",
        b.heldout_accuracy, b.heldout_kendall_tau, b.curve
    );
    assert!(b.heldout_accuracy > 0.7, "{}", b.heldout_accuracy);
}

fn files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let ck = chatforge_model::checkpoint::latest_checkpoint(dir)
        .unwrap()
        .unwrap();
    (
        ck.read("model.safetensors").unwrap(),
        ck.read("optimizer.safetensors").unwrap(),
    )
}

#[test]
fn resumes_bit_exactly_after_a_crash_and_after_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path(), 60);
    let cfg = config(10);
    let straight = RewardPaths {
        out: tmp.path().join("straight"),
        ..paths.clone()
    };
    let (s_all, all) = run_collect(&cfg, &straight, false);
    assert_eq!(all.len(), 10);

    // Killed after step 7 (checkpoint at 6): resume runs 7..10.
    let crashed = RewardPaths {
        out: tmp.path().join("crashed"),
        ..paths.clone()
    };
    let died = catch_unwind(AssertUnwindSafe(|| {
        run(&cfg, &crashed, &Device::Cpu, false, &mut |e| {
            if let TrainEvent::Step(m) = e {
                if m.step == 7 {
                    panic!("simulated crash");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    }));
    assert!(died.is_err());
    let (s_res, resumed) = run_collect(&cfg, &crashed, true);
    assert_eq!(resumed.first().map(|s| s.0), Some(7));
    assert_eq!(&all[6..], &resumed[..]);
    assert_eq!(files(&straight.out), files(&crashed.out));
    assert_eq!(s_all.bias_shift.to_bits(), s_res.bias_shift.to_bits());
    // The evaluation before the first step survives the crash.
    assert!(s_res.heldout_first.is_some());
    assert_eq!(s_all.heldout_first, s_res.heldout_first);

    // A finished run of 6 steps (its final weights bias-shifted), continued to 10.
    let short = RewardPaths {
        out: tmp.path().join("short"),
        ..paths.clone()
    };
    let (_, first6) = run_collect(&config(6), &short, false);
    assert_eq!(&all[..6], &first6[..]);
    let (s_cont, rest) = run_collect(&cfg, &short, true);
    assert_eq!(&all[6..], &rest[..]);
    assert_eq!(files(&straight.out), files(&short.out));
    assert_eq!(s_all.curve.last(), s_cont.curve.last());

    // Changed settings cannot silently resume.
    let mut changed = cfg.clone();
    changed.optim.lr = 1e-2;
    assert!(run(&changed, &crashed, &Device::Cpu, true, &mut |_| {}).is_err());
}

// ---------------------------------------------------------------------------------------------
// Family 9: bad data

#[test]
fn a_bad_ranking_file_is_a_clean_error_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path(), 30);
    let good = std::fs::read_to_string(&paths.data[0]).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    let bad = r#"{"prompt": "Hi", "chosen": "same", "rejected": "same"}"#;
    lines.insert(2, bad);
    let file = tmp.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let bad_paths = RewardPaths {
        data: vec![file.clone()],
        ..paths.clone()
    };
    let err = run(&config(2), &bad_paths, &Device::Cpu, false, &mut |_| {})
        .expect_err("a bad record must fail the run")
        .to_string();
    assert!(err.contains(&format!("{}:3", file.display())), "{err}");
    // Asked to, the run skips it and counts it.
    let skip = RewardConfig {
        skip_bad_records: true,
        ..config(2)
    };
    let s = run(&skip, &bad_paths, &Device::Cpu, false, &mut |_| {}).unwrap();
    assert_eq!(s.skipped_bad, 1);
    // A missing file is an error too, not an empty data set.
    let none = RewardPaths {
        data: vec![tmp.path().join("missing.jsonl")],
        ..paths
    };
    assert!(run(&config(2), &none, &Device::Cpu, false, &mut |_| {}).is_err());
}

// ---------------------------------------------------------------------------------------------
// Best-of-n

#[test]
fn best_of_n_returns_every_sample_scored_best_first() {
    let tok = tokenizer();
    let (cfg, params) = fresh_scalar(&tok, true);
    let policy = Gpt::new(&cfg, params.frozen_var_builder(DType::F32)).unwrap();
    let rm = RewardModel::from_params(&cfg, &params, tok.clone(), ChatTemplate::Native).unwrap();
    let prompt = vec![Message::user("Describe thing number 5.")];
    let sp = SamplingParams {
        temperature: 1.0,
        seed: 3,
        max_tokens: 12,
        ..SamplingParams::default()
    };
    let out = best_of_n(
        &policy,
        &Device::Cpu,
        &tok,
        ChatTemplate::Native,
        &rm,
        &prompt,
        6,
        &sp,
    )
    .unwrap();
    assert_eq!(out.len(), 6);
    assert!(out.windows(2).all(|w| w[0].1 >= w[1].1));
    // Each score is the reward model's score of that reply.
    for (text, score, ended) in &out {
        let again = rm
            .score_responses(&prompt, &[(text.clone(), *ended)])
            .unwrap()[0];
        assert!((again - score).abs() <= 1e-5, "{again} vs {score}");
    }
    // n = 0 is an error, not an empty answer.
    assert!(best_of_n(
        &policy,
        &Device::Cpu,
        &tok,
        ChatTemplate::Native,
        &rm,
        &prompt,
        0,
        &sp
    )
    .is_err());
}
