//! A keyword signal's words compiled once per table into one Aho-Corasick automaton, so a
//! prompt is scanned once however many keywords the signal lists.

use aho_corasick::AhoCorasick;

use crate::api::KeywordOperator;

/// The words of one keyword signal and the automaton that finds them on word boundaries
/// (so `sql` does not match `mysql`).
#[derive(Clone, Debug)]
pub struct KeywordSet {
    /// Distinct words, lower-cased unless the signal is case-sensitive.
    words: Vec<String>,
    /// Finds every word at once; `None` only when the automaton could not be built (a
    /// pathological set), and then each word is searched on its own.
    automaton: Option<AhoCorasick>,
    /// Some word is empty: it never matches, so `all` never holds.
    has_empty: bool,
}

impl PartialEq for KeywordSet {
    fn eq(&self, other: &Self) -> bool {
        self.words == other.words && self.has_empty == other.has_empty
    }
}

impl KeywordSet {
    /// Compiles `words` (already lower-cased for a case-insensitive signal).
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        let mut has_empty = false;
        let mut distinct: Vec<String> = Vec::new();
        for word in words {
            if word.is_empty() {
                has_empty = true;
            } else if !distinct.contains(&word) {
                distinct.push(word);
            }
        }
        let automaton = AhoCorasick::new(&distinct)
            .inspect_err(|e| tracing::warn!(error = %e, "keyword automaton not built; scanning word by word"))
            .ok();
        Self {
            words: distinct,
            automaton,
            has_empty,
        }
    }

    /// The distinct non-empty words.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Whether the words occur in `text` on word boundaries, combined by `operator`.
    pub fn holds(&self, text: &str, operator: KeywordOperator) -> bool {
        match operator {
            KeywordOperator::Any => self.any_in(text),
            KeywordOperator::All => !self.has_empty && self.all_in(text),
        }
    }

    fn any_in(&self, text: &str) -> bool {
        let Some(automaton) = &self.automaton else {
            return self.words.iter().any(|w| contains_word(text, w));
        };
        automaton
            .find_overlapping_iter(text)
            .any(|m| on_word_boundaries(text, m.start(), m.end()))
    }

    fn all_in(&self, text: &str) -> bool {
        let Some(automaton) = &self.automaton else {
            return self.words.iter().all(|w| contains_word(text, w));
        };
        let mut found = vec![false; self.words.len()];
        let mut missing = self.words.len();
        for m in automaton.find_overlapping_iter(text) {
            let seen = &mut found[m.pattern().as_usize()];
            if !*seen && on_word_boundaries(text, m.start(), m.end()) {
                *seen = true;
                missing -= 1;
                if missing == 0 {
                    return true;
                }
            }
        }
        missing == 0
    }
}

/// Whether `needle` occurs in `text` on word boundaries (so `sql` does not match `mysql`).
/// Every occurrence counts, overlapping ones too (`"  "` in `"é   "` is found after the `é`).
pub fn contains_word(text: &str, needle: &str) -> bool {
    let Some(step) = needle.chars().next().map(char::len_utf8) else {
        return false;
    };
    let mut from = 0;
    while let Some(at) = text.get(from..).and_then(|rest| rest.find(needle)) {
        let start = from + at;
        if on_word_boundaries(text, start, start + needle.len()) {
            return true;
        }
        from = start + step;
    }
    false
}

/// Whether `text[start..end]` has no word character right before or after it.
fn on_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let before = text.get(..start).and_then(|s| s.chars().next_back());
    let after = text.get(end..).and_then(|s| s.chars().next());
    !before.is_some_and(is_word) && !after.is_some_and(is_word)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(words: &[&str]) -> KeywordSet {
        KeywordSet::new(words.iter().map(|w| (*w).to_owned()))
    }

    #[test]
    fn any_and_all_match_whole_words_only() {
        let s = set(&["sql", "step by step", "sql"]);
        assert_eq!(s.words().len(), 2, "duplicates are dropped");
        assert!(s.holds("use sql here", KeywordOperator::Any));
        assert!(!s.holds("mysql server and sqlite", KeywordOperator::Any));
        assert!(s.holds("(sql) think step by step.", KeywordOperator::All));
        assert!(!s.holds("sql only", KeywordOperator::All));
    }

    #[test]
    fn an_overlapping_miss_does_not_hide_a_match() {
        // "ab" inside "xab" is no word, but the later "ab" is.
        let s = set(&["ab", "xab c"]);
        assert!(s.holds("xab ab", KeywordOperator::Any));
        assert!(s.holds("xab c ab", KeywordOperator::All));
    }

    #[test]
    fn overlapping_occurrences_are_all_tried() {
        assert!(contains_word("é   ", "  "));
        assert!(set(&["  "]).holds("é   ", KeywordOperator::All));
    }

    #[test]
    fn an_empty_word_never_matches() {
        let s = set(&["", "hello"]);
        assert!(s.holds("hello", KeywordOperator::Any));
        assert!(!s.holds("hello", KeywordOperator::All));
        assert!(!set(&[""]).holds("anything", KeywordOperator::Any));
    }

    proptest! {
        /// The automaton agrees with searching each word on its own, for any text and words.
        #[test]
        fn agrees_with_word_by_word_search(
            words in proptest::collection::vec("[ab ]{1,4}", 1..5),
            text in "[ab_ é]{0,24}",
        ) {
            let s = KeywordSet::new(words.clone());
            let any = words.iter().any(|w| contains_word(&text, w));
            let all = words.iter().all(|w| contains_word(&text, w));
            prop_assert_eq!(s.holds(&text, KeywordOperator::Any), any);
            prop_assert_eq!(s.holds(&text, KeywordOperator::All), all);
        }
    }
}
