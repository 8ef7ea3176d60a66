//! Tokenizing text for the on-device full-text index.
//!
//! The relay cannot search ciphertext, so each device indexes what it decrypts. Text is
//! normalised with NFKC, lower-cased (full Unicode case folding by `char::to_lowercase`),
//! stripped of combining marks (so "café" matches "cafe"), and split into words by Unicode's
//! word boundaries (UAX #29). Scripts written without spaces (Han, Hiragana, Katakana, Thai…)
//! come out of UAX #29 as single characters or short runs; each such character is indexed on
//! its own, so a query of several such characters matches when all of them occur.
//!
//! A query matches a message when every query token occurs in it (AND).

use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_segmentation::UnicodeSegmentation;

/// Longest token indexed, in bytes; longer words are cut (they are rarely searched whole).
pub const MAX_TOKEN_BYTES: usize = 64;
/// Most distinct tokens indexed per message.
pub const MAX_TOKENS_PER_MESSAGE: usize = 2_000;

fn is_spaceless_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility
        | 0x20000..=0x2FFFF) // CJK extensions B–F
}

/// Cuts `word` to [`MAX_TOKEN_BYTES`] at a character boundary.
fn cut(word: &str) -> &str {
    let mut cut = word.len().min(MAX_TOKEN_BYTES);
    while !word.is_char_boundary(cut) {
        cut -= 1;
    }
    word.get(..cut).unwrap_or_default()
}

/// NFKC, lower case, combining marks removed, NFC.
fn normalise(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .nfc()
        .collect()
}

/// Tokens seen so far in one text. Most messages have a dozen words, which a short list
/// checks faster than hashing (and without seeding a hasher per message); past
/// [`Seen::FEW`] they move into a hash set, so a long text stays linear.
#[derive(Default)]
struct Seen<'a> {
    few: Vec<&'a str>,
    many: Option<crate::hashing::Set<&'a str>>,
}

impl<'a> Seen<'a> {
    const FEW: usize = 24;

    /// Whether `token` is new (and now seen).
    fn insert(&mut self, token: &'a str) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(token);
        }
        if self.few.contains(&token) {
            return false;
        }
        if self.few.len() < Self::FEW {
            self.few.push(token);
            return true;
        }
        let mut many = crate::hashing::set();
        many.extend(self.few.drain(..));
        many.insert(token);
        self.many = Some(many);
        true
    }

    fn len(&self) -> usize {
        self.many.as_ref().map_or(self.few.len(), |m| m.len())
    }
}

/// The distinct tokens of `text`, normalised.
pub fn tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for_each_token(text, |t| {
        out.insert(t.to_owned());
    });
    out
}

/// Calls `f` once for each distinct token of `text` (at most [`MAX_TOKENS_PER_MESSAGE`], the
/// first ones to appear), without allocating per token: indexing a catch-up of thousands of
/// messages mostly meets tokens it already has.
pub fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    // ASCII is its own NFKC/NFD/NFC form and has no combining marks, so lower-casing is the
    // whole normalisation: the common case skips four Unicode passes.
    let normalised = if text.is_ascii() { text.to_ascii_lowercase() } else { normalise(text) };
    let mut seen = Seen::default();
    let mut emit = |token| {
        let token = cut(token);
        if !token.is_empty() && seen.len() < MAX_TOKENS_PER_MESSAGE && seen.insert(token) {
            f(token);
        }
    };
    if normalised.is_ascii() {
        ascii_words(&normalised, emit);
        return;
    }
    for (start, word) in normalised.unicode_word_indices() {
        if !word.chars().any(is_spaceless_script) {
            emit(word);
            continue;
        }
        // Each spaceless-script character is a token; the runs between them are words.
        let mut run = start;
        for (i, c) in word.char_indices() {
            if is_spaceless_script(c) {
                let at = start + i;
                emit(normalised.get(run..at).unwrap_or_default());
                emit(normalised.get(at..at + c.len_utf8()).unwrap_or_default());
                run = at + c.len_utf8();
            }
        }
        emit(normalised.get(run..start + word.len()).unwrap_or_default());
    }
}

/// The words of ASCII text exactly as UAX #29 (`unicode_word_indices`) finds them, without its
/// general machinery: most chat text is ASCII, and `unicode-segmentation` took about half the
/// time of tokenizing an ASCII message (`benches/tokens.rs`). For ASCII the rules come down to
/// these: letters, digits and `_` join (WB5, WB8 to WB10, WB13a/b); one `:`, `.` or `'` joins
/// two letters (WB6/7); one `,`, `;`, `.` or `'` joins two digits (WB11/12); everything else
/// breaks; and like `unicode_word_indices`, only segments holding a letter or digit count as
/// words. A property test holds this to `unicode-segmentation` on ASCII input.
fn ascii_words<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let joins = |before: u8, mid: u8, after: u8| {
        (before.is_ascii_alphabetic()
            && after.is_ascii_alphabetic()
            && matches!(mid, b':' | b'.' | b'\''))
            || (before.is_ascii_digit()
                && after.is_ascii_digit()
                && matches!(mid, b',' | b';' | b'.' | b'\''))
    };
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if !word(c) {
            i += 1;
            continue;
        }
        let start = i;
        let mut alphanumeric = false;
        loop {
            while let Some(&c) = b.get(i).filter(|c| word(**c)) {
                alphanumeric |= c != b'_';
                i += 1;
            }
            match (b.get(i.wrapping_sub(1)), b.get(i), b.get(i + 1)) {
                (Some(&before), Some(&mid), Some(&after)) if joins(before, mid, after) => i += 1,
                _ => break,
            }
        }
        if alphanumeric && let Some(w) = text.get(start..i) {
            f(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Vec<String> {
        tokens(s).into_iter().collect()
    }

    /// The tokens `for_each_token` visits, in order, with repeats (there should be none).
    fn visited(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_token(s, |t| out.push(t.to_owned()));
        out
    }

    #[test]
    fn words_case_and_accents() {
        assert_eq!(t("Hello, WORLD! hello"), ["hello", "world"]);
        assert_eq!(t("Café crème"), ["cafe", "creme"]);
        assert_eq!(t("Straße"), ["straße"]);
        assert_eq!(t("Привет, мир"), ["мир", "привет"]);
        assert_eq!(t("ﬁve ＦＵＬＬ"), ["five", "full"]);
        assert_eq!(t("don't stop"), ["don't", "stop"]);
        assert_eq!(t("🙂 ..."), Vec::<String>::new());
    }

    #[test]
    fn spaceless_scripts_index_each_character() {
        assert_eq!(
            t("東京タワー"),
            ["タ", "ワ", "ー", "京", "東"]
                .map(String::from)
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(tokens("我在东京").contains("东"));
    }

    #[test]
    fn at_most_the_first_tokens_of_a_long_text() {
        let text: String = (0..3000).map(|i| format!("w{i} w{i} ")).collect();
        let v = visited(&text);
        assert_eq!(v.len(), MAX_TOKENS_PER_MESSAGE);
        assert!(v.iter().enumerate().all(|(i, t)| *t == format!("w{i}")));
    }

    fn uax29(s: &str) -> Vec<&str> {
        s.unicode_word_indices().map(|(_, w)| w).collect()
    }

    fn ascii(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        ascii_words(s, |w| out.push(w));
        out
    }

    #[test]
    fn ascii_words_follow_uax29() {
        for s in [
            "can't stop",
            "e.g. 3.14 1,000;2 a:b 1:2 a,b x_y __ _a 9.a a.9",
            "a..b 1..2 'a' a' .5",
            "ab1.c2 a1b.c \"q\" - tab\there\r\nnext",
            "",
        ] {
            assert_eq!(ascii(s), uax29(s), "{s:?}");
        }
        assert_eq!(ascii("can't e.g. 3.14 1,000 x_y __"), ["can't", "e.g", "3.14", "1,000", "x_y"]);
    }

    proptest! {
        #[test]
        fn ascii_words_match_unicode_segmentation(s in "[ -~\t\n\r]{0,200}") {
            prop_assert_eq!(ascii(&s), uax29(&s));
        }

        /// Dense in the characters whose rules differ: letters, digits, `_` and the joiners.
        #[test]
        fn ascii_words_match_unicode_segmentation_at_joiners(s in "[ab01_:.',;\" -]{0,80}") {
            prop_assert_eq!(ascii(&s), uax29(&s));
        }

        #[test]
        fn ascii_fast_path_matches_full_normalisation(s in "[ -~\t\n]{0,200}") {
            prop_assert_eq!(s.to_ascii_lowercase(), normalise(&s));
        }

        #[test]
        fn visiting_matches_collecting(s in "\\PC{0,300}") {
            let v = visited(&s);
            let set: BTreeSet<String> = v.iter().cloned().collect();
            prop_assert_eq!(set.len(), v.len(), "each token once");
            prop_assert_eq!(set, tokens(&s));
        }

        /// Many short words from a small alphabet: repeats on both sides of the switch from
        /// the short list to the hash set.
        #[test]
        fn each_token_once_past_the_short_list(s in "([a-d]{1,3} ){0,400}") {
            let v = visited(&s);
            let set: BTreeSet<String> = v.iter().cloned().collect();
            prop_assert_eq!(set.len(), v.len(), "each token once");
            prop_assert_eq!(set, s.split_whitespace().map(str::to_owned).collect::<BTreeSet<_>>());
        }

        #[test]
        fn never_panics_and_bounds_hold(s in "\\PC{0,300}") {
            let toks = tokens(&s);
            prop_assert!(toks.len() <= MAX_TOKENS_PER_MESSAGE);
            prop_assert!(toks.iter().all(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES));
        }
    }
}
