//! Statistics for evaluation: win rates with a 95% Wilson interval, Bradley–Terry (Elo)
//! ratings, and Kendall's τ-b rank correlation.
//!
//! Sources: Wilson 1927 (score interval, as tabulated by Newcombe 1998); Hunter 2004, "MM
//! algorithms for generalized Bradley–Terry models" (the minorise–maximise update); Kendall
//! 1945 (τ-b, as `scipy.stats.kendalltau`).
//!
//! Deviations: a tie counts as half a win and half a loss, both in the win rate and in the
//! Bradley–Terry fit (chess-style; Hunter's tie models add a parameter we do not need). The
//! Wilson interval is then computed on the fractional win count as if it were binomial, which
//! slightly over-covers when there are ties (a tie varies less than a coin flip). The
//! Bradley–Terry fit adds a weak prior, one virtual draw of every model against a fixed
//! opponent rated 1000, so that unbeaten or winless models get finite ratings.

/// The z of a two-sided 95% normal interval.
pub const Z_95: f64 = 1.959964;

/// A win rate with its 95% Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WinRate {
    /// `(wins + ties/2) / n`.
    pub rate: f64,
    /// Lower end of the 95% Wilson interval.
    pub lo: f64,
    /// Upper end of the 95% Wilson interval.
    pub hi: f64,
    /// Games played: `wins + ties + losses`.
    pub n: usize,
}

/// Win rate of a model over `n = wins + ties + losses` games, ties counting half:
/// `p = (wins + ties/2) / n`, with the Wilson score interval (z = 1.959964)
/// `(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)`.
/// With no games the rate is 0.5 and the interval is `[0, 1]`.
pub fn win_rate(wins: usize, ties: usize, losses: usize) -> WinRate {
    let n = wins + ties + losses;
    if n == 0 {
        return WinRate {
            rate: 0.5,
            lo: 0.0,
            hi: 1.0,
            n,
        };
    }
    let nf = n as f64;
    let p = (wins as f64 + 0.5 * ties as f64) / nf;
    let z2 = Z_95 * Z_95;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = Z_95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    WinRate {
        rate: p,
        lo: (center - half).max(0.0),
        hi: (center + half).min(1.0),
        n,
    }
}

/// Elo rating of the Bradley–Terry strength 1 (and of the prior's virtual opponent), and the
/// mean of the returned ratings.
pub const ELO_MEAN: f64 = 1000.0;
/// Largest number of MM sweeps of [`bradley_terry`].
const BT_MAX_ITERS: usize = 100_000;
/// Convergence threshold on the largest change of `ln γ` in one sweep.
const BT_TOL: f64 = 1e-12;

/// Bradley–Terry ratings on the Elo scale from games `(i, j, s)`, `s` the score of model `i`
/// against model `j` (1 win, 0.5 tie, 0 loss; `j` scores `1 − s`).
///
/// Model: `P(i beats j) = γ_i / (γ_i + γ_j)`. Each model also plays one virtual draw against
/// a fixed opponent of strength 1 (the prior). The maximum-likelihood strengths are found by
/// Hunter's MM iteration `γ_i ← W_i / Σ_g 1/(γ_i + γ_opp(g))`, with `W_i` the total score of
/// `i` (prior draw included) and the sum over every game of `i` (prior game included), until
/// `ln γ` moves by less than 1e-12. Ratings are `400·log10 γ_i`, shifted so that their mean
/// is 1000; a rating difference `d` means `P(win) = 1 / (1 + 10^(−d/400))`.
///
/// # Panics
/// If a game names a model `≥ n_models`, pits a model against itself, or has a score
/// outside `[0, 1]` (caller bugs: the games come from the evaluation loop).
pub fn bradley_terry(n_models: usize, games: &[(usize, usize, f64)]) -> Vec<f64> {
    // Prior: one draw against the virtual opponent (strength 1).
    let mut wins = vec![0.5; n_models];
    // games[i][j]: games between i and j (symmetric).
    let mut played = vec![vec![0.0; n_models]; n_models];
    for &(i, j, s) in games {
        assert!(
            i < n_models && j < n_models && i != j,
            "bradley_terry: bad game ({i}, {j}) among {n_models} models"
        );
        assert!(
            (0.0..=1.0).contains(&s),
            "bradley_terry: score {s} is not in [0, 1]"
        );
        wins[i] += s;
        wins[j] += 1.0 - s;
        played[i][j] += 1.0;
        played[j][i] += 1.0;
    }
    let mut gamma = vec![1.0; n_models];
    for _ in 0..BT_MAX_ITERS {
        let mut largest_step: f64 = 0.0;
        // Gauss–Seidel sweep: each update uses the newest strengths (still an MM step).
        for i in 0..n_models {
            let mut denom = 1.0 / (gamma[i] + 1.0);
            for j in 0..n_models {
                if played[i][j] > 0.0 {
                    denom += played[i][j] / (gamma[i] + gamma[j]);
                }
            }
            let next = wins[i] / denom;
            largest_step = largest_step.max((next / gamma[i]).ln().abs());
            gamma[i] = next;
        }
        if largest_step < BT_TOL {
            break;
        }
    }
    let elo: Vec<f64> = gamma.iter().map(|g| 400.0 * g.log10()).collect();
    let mean = elo.iter().sum::<f64>() / n_models.max(1) as f64;
    elo.iter().map(|r| r - mean + ELO_MEAN).collect()
}

/// Kendall's τ-b between two paired samples, ties allowed:
/// `τ_b = (n_c − n_d) / sqrt((n_0 − n_1)(n_0 − n_2))` over the `n_0 = n(n−1)/2` pairs, with
/// `n_c`/`n_d` the concordant/discordant pairs, `n_1` the pairs tied in `a`, `n_2` the pairs
/// tied in `b` (a pair tied in both counts in both). +1 for the same order, −1 for the
/// reversed one. NaN (as scipy) when `a` or `b` is constant or has fewer than two values.
/// NaN values compare as ties. O(n²), meant for rankings of a few to a few thousand items.
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn kendall_tau_b(a: &[f64], b: &[f64]) -> f64 {
    use std::cmp::Ordering::Equal;
    assert_eq!(a.len(), b.len(), "kendall_tau_b: samples differ in length");
    let n = a.len();
    let (mut concordant, mut discordant, mut tied_a, mut tied_b) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in (i + 1)..n {
            let da = a[i].partial_cmp(&a[j]).unwrap_or(Equal);
            let db = b[i].partial_cmp(&b[j]).unwrap_or(Equal);
            if da == Equal {
                tied_a += 1;
            }
            if db == Equal {
                tied_b += 1;
            }
            if da != Equal && db != Equal {
                if da == db {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let pairs = (n * n.saturating_sub(1) / 2) as u64;
    let denom = ((pairs - tied_a) as f64 * (pairs - tied_b) as f64).sqrt();
    if denom == 0.0 {
        return f64::NAN;
    }
    (concordant as f64 - discordant as f64) / denom
}
