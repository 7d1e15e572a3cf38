//! TESTING.md family 11, property tests (11,000 cases in all): round trips for arbitrary text
//! and bytes, special-token text never becoming a control token through `encode`, and the
//! stream decoder never splitting a character.

mod common;

use std::sync::OnceLock;

use chatforge_tokenizer::{Special, StreamDecoder, Tokenizer};
use proptest::prelude::*;

fn tok() -> &'static Tokenizer {
    static CELL: OnceLock<Tokenizer> = OnceLock::new();
    CELL.get_or_init(|| common::trained(1200))
}

/// Text built from pieces that are likely to interact with merges and special tokens.
fn texty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<String>(),
        "[a-z ]{0,12}",
        Just("<|eot|>".to_string()),
        Just("<|bos|>".to_string()),
        Just("<|user_start|>".to_string()),
        Just("<|".to_string()),
        Just("|>".to_string()),
        Just("😀👍🏽".to_string()),
        Just("日本語".to_string()),
        Just("\n\n  ".to_string()),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn decode_encode_is_identity(s in any::<String>()) {
        let ids = tok().encode(&s);
        prop_assert_eq!(tok().decode(&ids).unwrap(), s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let ids = tok().encode_bytes(&b);
        prop_assert!(ids.iter().all(|&id| !tok().is_special(id)));
        prop_assert_eq!(tok().decode_bytes(&ids).unwrap(), b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn special_text_is_plain_text_in_encode(s in texty()) {
        let tok = tok();
        let ids = tok.encode(&s);
        prop_assert!(ids.iter().all(|&id| !tok.is_special(id)), "control id in encode({:?})", s);
        prop_assert_eq!(tok.decode(&ids).unwrap(), s.clone());
        // With recognition on, the control ids appear exactly as often as their texts.
        let with = tok.encode_with_special(&s);
        prop_assert_eq!(tok.decode(&with).unwrap(), s.clone());
        let eot = tok.special(Special::Eot);
        prop_assert_eq!(with.iter().filter(|&&i| i == eot).count(), s.matches("<|eot|>").count());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn stream_decoder_matches_lossy_decode(
        b in proptest::collection::vec(any::<u8>(), 0..200),
        s in texty(),
    ) {
        let tok = tok();
        // Valid text: the pieces concatenate to the text, no replacement ever.
        let mut dec = StreamDecoder::new(tok);
        let mut out = String::new();
        for id in tok.encode_with_special(&s) {
            out.push_str(&dec.push(id).unwrap());
        }
        out.push_str(&dec.finish());
        prop_assert_eq!(&out, &s);
        prop_assert_eq!(dec.replacements(), 0);
        // Arbitrary bytes: the pieces concatenate to the lossy decoding.
        let mut dec = StreamDecoder::new(tok);
        let mut out = String::new();
        for id in tok.encode_bytes(&b) {
            out.push_str(&dec.push(id).unwrap());
            prop_assert!(dec.pending().len() <= 3);
        }
        out.push_str(&dec.finish());
        prop_assert_eq!(out, String::from_utf8_lossy(&b).into_owned());
    }
}

#[test]
fn stream_decoder_holds_a_split_emoji() {
    let tok = tok();
    // The vocabulary has merged tokens that end inside a character, so the property test above
    // exercises partial characters through real merges, not only single bytes.
    let partial = (0..tok.num_merges() as u32)
        .filter(|r| std::str::from_utf8(tok.token_bytes(256 + r).unwrap()).is_err())
        .count();
    assert!(partial > 0, "no merged token ends inside a character");
    // Feed "😀" (F0 9F 98 80) one byte token at a time.
    let ids: Vec<u32> = "😀".bytes().map(|b| tok.byte_ids()[b as usize]).collect();
    let mut dec = StreamDecoder::new(tok);
    assert_eq!(dec.push(ids[0]).unwrap(), "");
    assert_eq!(dec.push(ids[1]).unwrap(), "");
    assert_eq!(dec.push(ids[2]).unwrap(), "");
    assert_eq!(dec.pending().len(), 3);
    assert_eq!(dec.push(ids[3]).unwrap(), "😀");
    // An unfinished character at the end is flushed as U+FFFD.
    dec.push(ids[0]).unwrap();
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert_eq!(dec.replacements(), 1);
    // A started character followed by ASCII: U+FFFD, then the ASCII.
    dec.push(ids[0]).unwrap();
    assert_eq!(
        dec.push(tok.byte_ids()[b'a' as usize]).unwrap(),
        "\u{FFFD}a"
    );
    // An unknown id is an error and changes nothing.
    assert!(dec.push(u32::MAX).is_err());
    assert_eq!(dec.finish(), "");
}

#[test]
fn decode_errors_are_typed() {
    let tok = tok();
    let bad = tok.vocab_size() as u32;
    assert!(matches!(
        tok.decode(&[bad]),
        Err(chatforge_tokenizer::Error::UnknownId { id, .. }) if id == bad
    ));
    let half_emoji: Vec<u32> = "😀"
        .bytes()
        .take(2)
        .map(|b| tok.byte_ids()[b as usize])
        .collect();
    assert!(matches!(
        tok.decode(&half_emoji),
        Err(chatforge_tokenizer::Error::InvalidUtf8 { valid_up_to: 0 })
    ));
    assert_eq!(
        tok.decode_bytes(&half_emoji).unwrap(),
        &"😀".as_bytes()[..2]
    );
}

#[test]
fn encode_batch_equals_sequential() {
    let tok = tok();
    let docs = common::mixed_corpus(9, 64);
    let batch = tok.encode_batch(&docs);
    for (d, ids) in docs.iter().zip(&batch) {
        assert_eq!(&tok.encode(d), ids);
    }
}
