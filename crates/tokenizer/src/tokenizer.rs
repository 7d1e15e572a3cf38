//! The [`Tokenizer`]: a validated vocabulary (bytes, merges, special tokens, split pattern) with
//! encoding and decoding.
//!
//! Id layout (an invariant every constructor checks): ids `0..256` are the 256 single bytes,
//! in the order given by `byte_ids` (identity for trained tokenizers, GPT-2's own order for
//! imported ones); merge number `r` creates id `256 + r`; special tokens take the ids after the
//! last merge, without gaps. So `vocab_size() == 256 + merges + specials`.

use rayon::prelude::*;

use crate::bpe::{Merges, Scratch, TokenTable};
use crate::error::{Error, Result};
use crate::pretokenize::Splitter;
use crate::special::{Piece, Special, SpecialMatcher, SpecialToken};

/// Largest token (in bytes) a tokenizer may contain. Checked before any token is built, so a
/// hostile merge list (each merge doubling the previous token) cannot allocate without bound.
pub const MAX_TOKEN_BYTES: usize = 1 << 16;
/// Largest number of merges accepted.
pub const MAX_MERGES: usize = 1 << 22;
/// Largest number of special tokens accepted.
pub const MAX_SPECIALS: usize = 1 << 16;
/// Largest total size of all tokens' bytes.
pub const MAX_VOCAB_BYTES: usize = 1 << 28;

/// A byte-level BPE tokenizer. Immutable once built; `Send + Sync`, so one instance can encode
/// from many threads.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub(crate) splitter: Splitter,
    /// `byte_ids[b]` is the id of the single byte `b`.
    pub(crate) byte_ids: [u32; 256],
    /// Merges in rank order; merge `r` creates id `256 + r`.
    pub(crate) merges: Vec<(u32, u32)>,
    pub(crate) merge_table: Merges,
    /// Chunks that are one whole token, looked up before merging.
    pub(crate) whole_tokens: TokenTable,
    /// Bytes of every ordinary (non-special) token, indexed by id.
    pub(crate) tokens: Vec<Vec<u8>>,
    /// Special tokens in id order.
    pub(crate) specials: Vec<SpecialToken>,
    /// Id of each role, indexed by [`Special::index`].
    pub(crate) roles: [u32; Special::COUNT],
    pub(crate) special_matcher: SpecialMatcher,
}

impl Tokenizer {
    /// Builds and validates a tokenizer from its parts.
    ///
    /// `byte_ids` must be a permutation of `0..256`; each merge may only refer to ids that exist
    /// before it (`< 256 + rank`), must not repeat an earlier pair, and must not create a token
    /// longer than [`MAX_TOKEN_BYTES`]; special tokens must have ids `256 + merges.len() + i` in
    /// order, distinct non-empty texts, and together cover every [`Special`] role exactly once.
    pub fn from_parts(
        pattern: &str,
        byte_ids: [u32; 256],
        merges: Vec<(u32, u32)>,
        specials: Vec<SpecialToken>,
    ) -> Result<Tokenizer> {
        let splitter = Splitter::new(pattern)?;
        if merges.len() > MAX_MERGES {
            return Err(Error::TooMany {
                what: "merges",
                count: merges.len(),
                max: MAX_MERGES,
            });
        }
        if specials.len() > MAX_SPECIALS {
            return Err(Error::TooMany {
                what: "special tokens",
                count: specials.len(),
                max: MAX_SPECIALS,
            });
        }
        let mut tokens: Vec<Vec<u8>> = vec![Vec::new(); 256];
        for (b, &id) in byte_ids.iter().enumerate() {
            let slot = tokens.get_mut(id as usize).ok_or_else(|| Error::ByteIds {
                reason: format!("byte {b} has id {id}, not below 256"),
            })?;
            if !slot.is_empty() {
                return Err(Error::ByteIds {
                    reason: format!("id {id} is used by two bytes"),
                });
            }
            slot.push(b as u8);
        }
        let mut seen = crate::bpe::PairMap::default();
        let mut total_bytes = 256usize;
        tokens.reserve(merges.len());
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let bad = |reason: String| Error::BadMerge {
                rank,
                left,
                right,
                reason,
            };
            let limit = 256 + rank;
            if left as usize >= limit || right as usize >= limit {
                return Err(bad(format!(
                    "refers to an id not defined before it (must be < {limit})"
                )));
            }
            if let Some(first) = seen.insert(crate::bpe::pair_key(left, right), rank) {
                return Err(bad(format!("repeats merge {first}")));
            }
            let len = tokens[left as usize].len() + tokens[right as usize].len();
            if len > MAX_TOKEN_BYTES {
                return Err(Error::TokenTooLong {
                    rank,
                    len,
                    max: MAX_TOKEN_BYTES,
                });
            }
            total_bytes += len;
            if total_bytes > MAX_VOCAB_BYTES {
                return Err(Error::TooMany {
                    what: "bytes of vocabulary",
                    count: total_bytes,
                    max: MAX_VOCAB_BYTES,
                });
            }
            let mut bytes = Vec::with_capacity(len);
            bytes.extend_from_slice(&tokens[left as usize]);
            bytes.extend_from_slice(&tokens[right as usize]);
            tokens.push(bytes);
        }
        let roles = check_specials(&specials, tokens.len())?;
        let merge_table = Merges::new(&merges);
        let whole_tokens = TokenTable::build(&tokens, |id, bytes| {
            let mut scratch = Scratch::default();
            scratch
                .ids
                .extend(bytes.iter().map(|&b| byte_ids[b as usize]));
            let mut out = Vec::with_capacity(1);
            merge_table.encode_chunk(&mut scratch, &mut out);
            out == [id]
        });
        Ok(Tokenizer {
            splitter,
            byte_ids,
            merge_table,
            whole_tokens,
            merges,
            tokens,
            special_matcher: SpecialMatcher::new(&specials),
            specials,
            roles,
        })
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + self.specials.len()
    }

    /// Number of merges.
    pub fn num_merges(&self) -> usize {
        self.merges.len()
    }

    /// The merges in rank order; merge `r` creates id `256 + r`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// `byte_ids()[b]` is the id of the single byte `b`.
    pub fn byte_ids(&self) -> &[u32; 256] {
        &self.byte_ids
    }

    /// The pre-tokenization pattern.
    pub fn pattern(&self) -> &str {
        self.splitter.pattern()
    }

    /// The special tokens, in id order.
    pub fn specials(&self) -> &[SpecialToken] {
        &self.specials
    }

    /// The id of a role's control token.
    pub fn special(&self, role: Special) -> u32 {
        self.roles[role.index()]
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        (id as usize) >= self.tokens.len() && (id as usize) < self.vocab_size()
    }

    /// The bytes of an ordinary token, or `None` for special and unknown ids.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    /// Encodes text. Special-token text (e.g. a user typing `<|eot|>`) is encoded as ordinary
    /// text and never becomes a control id.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        self.encode_ordinary_into(text, &mut scratch, &mut out);
        out
    }

    /// Encodes text, turning every exact occurrence of a special token's text into its id
    /// (leftmost first, the longest on a tie). Use only for trusted text.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        self.special_matcher.split(text, |piece| match piece {
            Piece::Text(t) => self.encode_ordinary_into(t, &mut scratch, &mut out),
            Piece::Special(id) => out.push(id),
        });
        out
    }

    /// Encodes arbitrary bytes: valid UTF-8 stretches are encoded like [`Tokenizer::encode`];
    /// each invalid byte sequence (as `<[u8]>::utf8_chunks` delimits it) is one chunk of its
    /// own. `decode_bytes(&encode_bytes(b)) == b` for every `b`.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(bytes.len() / 3 + 1);
        let mut scratch = Scratch::default();
        for chunk in bytes.utf8_chunks() {
            self.encode_ordinary_into(chunk.valid(), &mut scratch, &mut out);
            if !chunk.invalid().is_empty() {
                self.encode_chunk(chunk.invalid(), &mut scratch, &mut out);
            }
        }
        out
    }

    /// Encodes many texts in parallel (rayon); the result is in input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    fn encode_ordinary_into(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
        self.splitter.for_each_chunk(text, |chunk| {
            self.encode_chunk(chunk.as_bytes(), scratch, out)
        });
    }

    #[inline]
    fn encode_chunk(&self, chunk: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        if let [b] = chunk {
            out.push(self.byte_ids[*b as usize]);
            return;
        }
        if let Some(id) = self.whole_tokens.get(&self.tokens, chunk) {
            out.push(id);
            return;
        }
        scratch.ids.clear();
        scratch
            .ids
            .extend(chunk.iter().map(|&b| self.byte_ids[b as usize]));
        self.merge_table.encode_chunk(scratch, out);
    }

    /// The bytes of a sequence of ids (special tokens decode to their text).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.id_bytes(id)?);
        }
        Ok(out)
    }

    /// Decodes ids to text; an error if an id is unknown or the bytes are not valid UTF-8
    /// (e.g. a sequence that ends inside a multi-byte character).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }

    /// The bytes of one id.
    pub fn id_bytes(&self, id: u32) -> Result<&[u8]> {
        let i = id as usize;
        if let Some(t) = self.tokens.get(i) {
            Ok(t)
        } else if let Some(s) = self.specials.get(i - self.tokens.len()) {
            Ok(s.text.as_bytes())
        } else {
            Err(Error::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            })
        }
    }
}

/// Checks the special tokens against the layout rules and returns the id of each role.
fn check_specials(specials: &[SpecialToken], first_id: usize) -> Result<[u32; Special::COUNT]> {
    let mut roles = [u32::MAX; Special::COUNT];
    let mut texts = std::collections::HashSet::new();
    for (i, s) in specials.iter().enumerate() {
        let expected = (first_id + i) as u64;
        if u64::from(s.id) != expected {
            return Err(Error::SpecialId {
                text: s.text.clone(),
                id: u64::from(s.id),
                expected,
            });
        }
        if s.text.is_empty() {
            return Err(Error::BadSpecial {
                text: String::new(),
                reason: "empty text".into(),
            });
        }
        if !texts.insert(s.text.as_str()) {
            return Err(Error::BadSpecial {
                text: s.text.clone(),
                reason: "defined twice".into(),
            });
        }
        if let Some(role) = s.role {
            if roles[role.index()] != u32::MAX {
                return Err(Error::BadSpecial {
                    text: s.text.clone(),
                    reason: format!("role {} is already taken", role.name()),
                });
            }
            roles[role.index()] = s.id;
        }
    }
    if let Some(missing) = Special::ALL.iter().find(|r| roles[r.index()] == u32::MAX) {
        return Err(Error::MissingRole {
            role: missing.name(),
        });
    }
    Ok(roles)
}

/// The special tokens a freshly built vocabulary gets: every role with its canonical text, in
/// [`Special::ALL`] order, starting at `first_id`.
pub fn default_specials(first_id: u32) -> Vec<SpecialToken> {
    Special::ALL
        .iter()
        .enumerate()
        .map(|(i, &role)| SpecialToken {
            id: first_id + i as u32,
            text: role.as_str().to_string(),
            role: Some(role),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::GPT4_PATTERN;

    /// The whole-token lookup must not take a token whose own bytes BPE-encode to something
    /// else: here `abc` (merge 2) exists, but "abc" merges `ab` first and stays `[ab, c]`.
    #[test]
    fn whole_token_lookup_keeps_bpe_semantics() {
        let identity: [u32; 256] = std::array::from_fn(|i| i as u32);
        // ab = 256, bc = 257, a(bc) = 258.
        let merges = vec![(97, 98), (98, 99), (97, 257)];
        let tok =
            Tokenizer::from_parts(GPT4_PATTERN, identity, merges, default_specials(259)).unwrap();
        assert_eq!(tok.token_bytes(258), Some(&b"abc"[..]));
        assert_eq!(tok.encode("abc"), [256, 99]);
        assert_eq!(tok.encode("ab"), [256]);
        assert_eq!(tok.encode("bc"), [257]);
        assert_eq!(tok.encode("xbc"), [120, 257]);
        assert_eq!(tok.encode("abc abc"), [256, 99, 32, 256, 99]);
    }
}
