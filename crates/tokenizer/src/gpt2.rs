//! Importing OpenAI vocabularies: GPT-2's `encoder.json` + `vocab.bpe`, and tiktoken rank
//! files (`<base64 token> <rank>` per line, e.g. `r50k_base.tiktoken`, `cl100k_base.tiktoken`).
//!
//! Both map onto this crate's id layout without renumbering: in these vocabularies the 256
//! single bytes hold ids `0..256` (in GPT-2's own order, kept in `byte_ids`) and the token made by
//! merge `r` holds id `256 + r`; anything else is rejected with the line at fault. The ids of
//! ordinary tokens are therefore identical to OpenAI's.
//!
//! Special tokens: entries of `encoder.json` after the merges (GPT-2's `<|endoftext|>`, id
//! 50256) become special tokens, `<|endoftext|>` taking the [`Special::Eot`] role; every other
//! role is then appended with its canonical text (`<|bos|>`, ...), so a GPT-2 tokenizer here has
//! 50257 + 12 ids. Tiktoken files carry no special tokens; all roles are appended.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::io::read_capped;
use crate::special::{Special, SpecialToken};
use crate::tokenizer::{Tokenizer, MAX_MERGES, MAX_TOKEN_BYTES};
use crate::GPT2_PATTERN;

/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode` in
/// `encoder.py`): printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let code = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

fn vocab_err(line: usize, message: impl Into<String>) -> Error {
    Error::Vocab {
        line,
        message: message.into(),
    }
}

impl Tokenizer {
    /// Loads GPT-2's `encoder.json` and `vocab.bpe` (with [`GPT2_PATTERN`]).
    pub fn from_gpt2_files(
        encoder_json: impl AsRef<Path>,
        vocab_bpe: impl AsRef<Path>,
    ) -> Result<Tokenizer> {
        let (enc_path, bpe_path) = (encoder_json.as_ref(), vocab_bpe.as_ref());
        let encoder = read_capped(enc_path)?;
        let merges = read_capped(bpe_path)?;
        let encoder = parse_encoder(&encoder).map_err(|e| e.in_file(enc_path))?;
        gpt2_from_parsed(&encoder, &merges, GPT2_PATTERN).map_err(|e| match e {
            e @ Error::Vocab { .. } => e.in_file(bpe_path),
            e => e,
        })
    }

    /// [`Tokenizer::from_gpt2_files`] from the files' contents, with any split pattern.
    pub fn from_gpt2_str(encoder_json: &str, vocab_bpe: &str, pattern: &str) -> Result<Tokenizer> {
        gpt2_from_parsed(&parse_encoder(encoder_json)?, vocab_bpe, pattern)
    }

    /// Loads a tiktoken rank file (`<base64 bytes> <rank>` per line) with the given pattern.
    pub fn from_tiktoken_file(path: impl AsRef<Path>, pattern: &str) -> Result<Tokenizer> {
        let path = path.as_ref();
        let text = read_capped(path)?;
        Tokenizer::from_tiktoken_str(&text, pattern).map_err(|e| e.in_file(path))
    }

    /// [`Tokenizer::from_tiktoken_file`] from the file's contents.
    ///
    /// Ranks must be exactly `0..n`, the 256 single bytes must hold ranks `0..256`, and every
    /// other token must be the merge of two lower-ranked tokens. That merge is recovered the
    /// way tiktoken encodes: byte-pair merging the token's bytes using only lower ranks must
    /// end in exactly two parts.
    pub fn from_tiktoken_str(text: &str, pattern: &str) -> Result<Tokenizer> {
        let mut by_rank: Vec<Option<Vec<u8>>> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let (b64, rank) = line
                .split_once(' ')
                .ok_or_else(|| vocab_err(line_no, "expected `<base64> <rank>`"))?;
            let rank: usize = rank
                .trim()
                .parse()
                .map_err(|_| vocab_err(line_no, format!("bad rank {rank:?}")))?;
            if rank >= 256 + MAX_MERGES {
                return Err(vocab_err(line_no, format!("rank {rank} is too large")));
            }
            if b64.len() > MAX_TOKEN_BYTES * 2 {
                return Err(vocab_err(line_no, "token longer than MAX_TOKEN_BYTES"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| vocab_err(line_no, format!("bad base64: {e}")))?;
            if bytes.is_empty() {
                return Err(vocab_err(line_no, "empty token"));
            }
            // Ranks are bounded above, and each line holds at least one, so this grows with the
            // file, not with a number read from it (a rank far ahead is caught as a gap below).
            if rank >= by_rank.len() {
                if rank > by_rank.len() + text.len() {
                    return Err(vocab_err(line_no, format!("rank {rank} leaves a gap")));
                }
                by_rank.resize(rank + 1, None);
            }
            if by_rank[rank].replace(bytes).is_some() {
                return Err(vocab_err(line_no, format!("rank {rank} appears twice")));
            }
        }
        let tokens: Vec<Vec<u8>> = by_rank
            .into_iter()
            .enumerate()
            .map(|(r, t)| t.ok_or_else(|| vocab_err(0, format!("no token has rank {r}"))))
            .collect::<Result<_>>()?;
        if tokens.len() < 256 {
            return Err(vocab_err(
                0,
                format!("{} tokens, fewer than the 256 bytes", tokens.len()),
            ));
        }
        let mut byte_ids = [u32::MAX; 256];
        for (r, t) in tokens[..256].iter().enumerate() {
            if t.len() != 1 || byte_ids[t[0] as usize] != u32::MAX {
                return Err(vocab_err(
                    0,
                    format!("rank {r} must be a distinct single byte"),
                ));
            }
            byte_ids[t[0] as usize] = r as u32;
        }
        let rank_of: HashMap<&[u8], u32> = tokens
            .iter()
            .enumerate()
            .map(|(r, t)| (t.as_slice(), r as u32))
            .collect();
        if rank_of.len() != tokens.len() {
            return Err(vocab_err(0, "two ranks have the same bytes"));
        }
        let mut merges = Vec::with_capacity(tokens.len() - 256);
        for (r, t) in tokens.iter().enumerate().skip(256) {
            let parts = split_below_rank(t, r as u32, &rank_of);
            match parts.as_slice() {
                [a, b] => merges.push((rank_of[a], rank_of[b])),
                _ => {
                    return Err(vocab_err(
                        0,
                        format!("rank {r} is not the merge of two lower-ranked tokens"),
                    ))
                }
            }
        }
        let specials = crate::tokenizer::default_specials((256 + merges.len()) as u32);
        Tokenizer::from_parts(pattern, byte_ids, merges, specials)
    }
}

/// tiktoken's `byte_pair_merge` restricted to ranks below `max_rank`: the parts `token` is
/// encoded into before the token itself can be formed.
fn split_below_rank<'a>(
    token: &'a [u8],
    max_rank: u32,
    rank_of: &HashMap<&[u8], u32>,
) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = rank_of.get(&token[bounds[i]..bounds[i + 2]]) {
                if r < max_rank && best.is_none_or(|(br, _)| r < br) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    bounds.windows(2).map(|w| &token[w[0]..w[1]]).collect()
}

fn parse_encoder(text: &str) -> Result<HashMap<String, u32>> {
    serde_json::from_str(text).map_err(|e| vocab_err(e.line(), format!("encoder.json: {e}")))
}

fn gpt2_from_parsed(
    encoder: &HashMap<String, u32>,
    vocab_bpe: &str,
    pattern: &str,
) -> Result<Tokenizer> {
    let mut seen = vec![false; encoder.len()];
    for (key, &id) in encoder {
        let slot = seen.get_mut(id as usize).ok_or_else(|| {
            vocab_err(
                0,
                format!(
                    "id {id} of {key:?} is not below the number of entries, {}",
                    encoder.len()
                ),
            )
        })?;
        if std::mem::replace(slot, true) {
            return Err(vocab_err(0, format!("id {id} is used twice")));
        }
    }
    let to_char = bytes_to_unicode();
    let from_char: HashMap<char, u8> = to_char
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    let decode =
        |s: &str| -> Option<Vec<u8>> { s.chars().map(|c| from_char.get(&c).copied()).collect() };

    let mut byte_ids = [0u32; 256];
    for (b, c) in to_char.iter().enumerate() {
        byte_ids[b] = *encoder.get(c.to_string().as_str()).ok_or_else(|| {
            vocab_err(0, format!("encoder.json has no entry for byte {b} ({c:?})"))
        })?;
    }
    let mut merges = Vec::new();
    for (i, line) in vocab_bpe.lines().enumerate() {
        let line_no = i + 1;
        if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        if merges.len() >= MAX_MERGES {
            return Err(Error::TooMany {
                what: "merges",
                count: merges.len() + 1,
                max: MAX_MERGES,
            });
        }
        let (a, b) = line
            .split_once(' ')
            .filter(|(_, b)| !b.contains(' '))
            .ok_or_else(|| vocab_err(line_no, format!("expected two tokens, got {line:?}")))?;
        let id = |s: &str| {
            encoder
                .get(s)
                .copied()
                .ok_or_else(|| vocab_err(line_no, format!("token {s:?} is not in encoder.json")))
        };
        let (left, right) = (id(a)?, id(b)?);
        let product = id(&format!("{a}{b}"))?;
        let expected = 256 + merges.len() as u64;
        if u64::from(product) != expected {
            return Err(vocab_err(
                line_no,
                format!("merge {a:?} {b:?} makes id {product}, expected {expected} (256 + merge number)"),
            ));
        }
        merges.push((left, right));
    }
    let first_special = 256 + merges.len() as u64;
    let mut extra: Vec<(u32, &str)> = encoder
        .iter()
        .filter(|(_, &id)| u64::from(id) >= first_special)
        .map(|(s, &id)| (id, s.as_str()))
        .collect();
    extra.sort_unstable();
    let mut specials = Vec::with_capacity(extra.len() + Special::COUNT);
    for (id, key) in extra {
        let text = decode(key)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                vocab_err(
                    0,
                    format!("special token {key:?} does not decode to UTF-8 text"),
                )
            })?;
        let role = (text == "<|endoftext|>").then_some(Special::Eot);
        specials.push(SpecialToken { id, text, role });
    }
    for role in Special::ALL {
        if !specials.iter().any(|s| s.role == Some(role)) {
            let id = (first_special + specials.len() as u64) as u32;
            specials.push(SpecialToken {
                id,
                text: role.as_str().to_string(),
                role: Some(role),
            });
        }
    }
    // `from_parts` checks the rest: byte ids form a permutation, every merge refers to earlier
    // ids, special ids follow the merges without gaps.
    Tokenizer::from_parts(pattern, byte_ids, merges, specials)
}
