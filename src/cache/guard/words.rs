//! The guard's word knowledge: numbers (digits and words), negations, contractions and
//! abbreviations, light stemming, synonyms, typos, and the stopword and filler lists.

/// A token's value when it is a number (digits, or a number word).
pub(super) fn number_of(token: &str) -> Option<f64> {
    if token.starts_with(|c: char| c.is_ascii_digit()) {
        return token.parse::<f64>().ok();
    }
    if token == "one" {
        // Mostly a pronoun ("which one", "the one who"); "1" is a number.
        return None;
    }
    number_word(token).or(match token {
        "first" => Some(1.0),
        "third" => Some(3.0),
        "fourth" => Some(4.0),
        "fifth" => Some(5.0),
        "sixth" => Some(6.0),
        "seventh" => Some(7.0),
        "eighth" => Some(8.0),
        "ninth" => Some(9.0),
        "tenth" => Some(10.0),
        "twice" | "double" => Some(2.0),
        "dozen" => Some(12.0),
        "half" => Some(0.5),
        "hundred" => Some(100.0),
        "thousand" => Some(1000.0),
        "million" => Some(1e6),
        "billion" => Some(1e9),
        _ => None,
    })
}

pub(super) fn number_word(token: &str) -> Option<f64> {
    const WORDS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(n) = WORDS.iter().position(|w| *w == token) {
        return Some(n as f64);
    }
    TENS.iter()
        .position(|w| *w == token)
        .map(|n| (n as f64 + 2.0) * 10.0)
}

pub(super) fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub(super) fn is_negation(token: &str) -> bool {
    token.ends_with("n't")
        || matches!(
            token,
            "not"
                | "no"
                | "never"
                | "none"
                | "nobody"
                | "nothing"
                | "neither"
                | "nor"
                | "without"
                | "cannot"
                | "dont"
                | "doesnt"
                | "didnt"
                | "isnt"
                | "arent"
                | "wasnt"
                | "werent"
                | "cant"
                | "wont"
                | "shouldnt"
                | "wouldnt"
                | "couldnt"
                | "havent"
                | "hasnt"
        )
}

/// A lowercase token as the words it stands for: contractions cut, abbreviations expanded.
pub(super) fn expand(lower: &str, all_caps: bool) -> Vec<&str> {
    let base = ["'s", "'re", "'ve", "'ll", "'d", "'m"]
        .iter()
        .find_map(|s| lower.strip_suffix(s))
        .unwrap_or(lower);
    if let Some((_, full)) = ABBREVIATIONS.iter().find(|(a, _)| *a == base) {
        return full.split(' ').collect();
    }
    if let Some((_, full)) = STATES.iter().find(|(a, _)| *a == base) {
        let ambiguous = AMBIGUOUS_STATES.contains(&base);
        if all_caps || !ambiguous {
            return full.split(' ').collect();
        }
    }
    if all_caps && let Some((_, full)) = CAPS_ONLY.iter().find(|(a, _)| *a == base) {
        return full.split(' ').collect();
    }
    vec![base]
}

/// Light stemming: plurals, `-ing`, `-ed` (doubled consonants undone, as Porter does).
pub(super) fn stem(word: &str) -> String {
    let n = word.len();
    if !word.is_ascii() {
        return word.to_owned();
    }
    let undouble = |s: &str| -> String {
        let b = s.as_bytes();
        let k = b.len();
        if k >= 2 && b[k - 1] == b[k - 2] && !matches!(b[k - 1], b'l' | b's' | b'z') {
            s[..k - 1].to_owned()
        } else {
            s.to_owned()
        }
    };
    if n > 4 && word.ends_with("ies") {
        return format!("{}y", &word[..n - 3]);
    }
    if word.ends_with("sses") {
        return word[..n - 2].to_owned();
    }
    if n > 3 && word.ends_with('s') && !["ss", "us", "is", "os"].iter().any(|s| word.ends_with(s)) {
        return word[..n - 1].to_owned();
    }
    if n > 5 && word.ends_with("ing") {
        return undouble(&word[..n - 3]);
    }
    if n > 5 && word.ends_with("ed") {
        return undouble(&word[..n - 2]);
    }
    word.to_owned()
}

pub(super) fn synonym(word: &str) -> String {
    SYNONYMS
        .iter()
        .find(|(w, _)| *w == word)
        .map_or(word, |(_, canonical)| canonical)
        .to_owned()
}

/// Two words of five letters or more, same first letter, one edit apart (an insertion, a
/// deletion, a substitution or two neighbours swapped).
pub(super) fn one_typo_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().min(b.len()) < 5 || a.first() != b.first() || a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let start = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[start..], &b[start..]);
    if ra.len() == rb.len() {
        // substitution, or transposition of neighbours
        ra.len() <= 1
            || ra[1..] == rb[1..]
            || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
    } else if ra.len() > rb.len() {
        ra[1..] == *rb
    } else {
        rb[1..] == *ra
    }
}

/// Words that carry no content of their own here.
pub(super) const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "this",
    "that",
    "these",
    "those",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "do",
    "does",
    "did",
    "doing",
    "have",
    "has",
    "had",
    "having",
    "i",
    "me",
    "my",
    "mine",
    "myself",
    "you",
    "your",
    "yours",
    "yourself",
    "u",
    "ur",
    "r",
    "we",
    "us",
    "our",
    "he",
    "him",
    "his",
    "she",
    "her",
    "it",
    "its",
    "they",
    "them",
    "their",
    "there",
    "here",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "as",
    "in",
    "on",
    "and",
    "or",
    "but",
    "if",
    "so",
    "then",
    "will",
    "would",
    "should",
    "could",
    "can",
    "may",
    "might",
    "must",
    "shall",
    "what",
    "whats",
    "how",
    "hows",
    "which",
    "wat",
    "im",
    "let",
    "lets",
    "any",
    "anything",
    "something",
    "some",
];

/// Politeness and paraphrase filler: words a reworded question adds or drops.
pub(super) const FILLER: &[&str] = &[
    "please",
    "pls",
    "plz",
    "thanks",
    "thank",
    "thx",
    "kindly",
    "hi",
    "hello",
    "hey",
    "tell",
    "know",
    "want",
    "wanted",
    "like",
    "help",
    "question",
    "quick",
    "quickly",
    "briefly",
    "actually",
    "exactly",
    "really",
    "just",
    "basically",
    "simply",
    "honestly",
    "way",
    "ways",
    "wondering",
    "wonder",
    "curious",
    "give",
    "show",
    "explain",
    "describe",
    "say",
    "mind",
    "possible",
    "answer",
    "ask",
    "idea",
    "someone",
    "anyone",
    "thing",
    "things",
    "ok",
    "okay",
    "well",
    "um",
    "uh",
    "also",
    "very",
    "too",
    "guys",
    "dear",
    "assistant",
    "city",
    "info",
    "information",
    "details",
    "meaning",
    "mean",
    "means",
    "definition",
    "define",
    "exact",
    "currently",
    "current",
    "tip",
    "tips",
    "steps",
    "step",
    "guide",
    "much",
    "one",
    "world",
    "word",
    "understand",
];

/// Markers whose next content word is kept with them ("from Boston", "than gold", "in euros").
pub(super) const DIRECTED: [&str; 5] = ["from", "to", "than", "into", "in"];

/// Question words that change the question.
pub(super) const STRONG_ASKS: [&str; 6] = ["when", "where", "who", "whom", "whose", "why"];

const ABBREVIATIONS: &[(&str, &str)] = &[
    ("nyc", "new york"),
    ("sf", "san francisco"),
    ("uk", "united kingdom"),
    ("usa", "united states"),
    ("js", "javascript"),
    ("ts", "typescript"),
    ("py", "python"),
    ("ml", "machine learning"),
    ("km", "kilometers"),
    ("kms", "kilometers"),
    ("kilometre", "kilometers"),
    ("kilometres", "kilometers"),
    ("kilometer", "kilometers"),
    ("kg", "kilograms"),
    ("kgs", "kilograms"),
    ("kilo", "kilograms"),
    ("kilos", "kilograms"),
    ("kilogram", "kilograms"),
    ("lb", "pounds"),
    ("lbs", "pounds"),
    ("ft", "feet"),
    ("foot", "feet"),
    ("cm", "centimeters"),
    ("centimetre", "centimeters"),
    ("centimetres", "centimeters"),
    ("mm", "millimeters"),
    ("hr", "hours"),
    ("hrs", "hours"),
    ("mins", "minutes"),
    ("sec", "seconds"),
    ("secs", "seconds"),
    ("°c", "celsius"),
    ("centigrade", "celsius"),
    ("°f", "fahrenheit"),
    ("$", "dollars"),
    ("usd", "dollars"),
    ("€", "euros"),
    ("eur", "euros"),
    ("£", "pounds"),
    ("gbp", "pounds"),
    ("%", "percent"),
    ("pct", "percent"),
    ("tv", "television"),
    ("pic", "photo"),
    ("pics", "photos"),
    ("picture", "photo"),
    ("pictures", "photos"),
    ("kid", "child"),
    ("kids", "children"),
    ("wifi", "wi fi"),
];

/// Two-letter abbreviations expanded only when written in capitals.
const CAPS_ONLY: &[(&str, &str)] = &[
    ("us", "united states"),
    ("la", "los angeles"),
    ("ai", "artificial intelligence"),
];

/// US states by postal code, expanded when written in capitals, or in lowercase when the
/// code is no English word.
const STATES: &[(&str, &str)] = &[
    ("al", "alabama"),
    ("ak", "alaska"),
    ("az", "arizona"),
    ("ar", "arkansas"),
    ("ca", "california"),
    ("co", "colorado"),
    ("ct", "connecticut"),
    ("de", "delaware"),
    ("fl", "florida"),
    ("ga", "georgia"),
    ("hi", "hawaii"),
    ("id", "idaho"),
    ("il", "illinois"),
    ("in", "indiana"),
    ("ia", "iowa"),
    ("ks", "kansas"),
    ("ky", "kentucky"),
    ("me", "maine"),
    ("md", "maryland"),
    ("ma", "massachusetts"),
    ("mi", "michigan"),
    ("mn", "minnesota"),
    ("ms", "mississippi"),
    ("mo", "missouri"),
    ("mt", "montana"),
    ("ne", "nebraska"),
    ("nv", "nevada"),
    ("nh", "new hampshire"),
    ("nj", "new jersey"),
    ("nm", "new mexico"),
    ("ny", "new york"),
    ("nc", "north carolina"),
    ("nd", "north dakota"),
    ("oh", "ohio"),
    ("ok", "oklahoma"),
    ("or", "oregon"),
    ("pa", "pennsylvania"),
    ("ri", "rhode island"),
    ("sc", "south carolina"),
    ("sd", "south dakota"),
    ("tn", "tennessee"),
    ("tx", "texas"),
    ("ut", "utah"),
    ("vt", "vermont"),
    ("va", "virginia"),
    ("wa", "washington"),
    ("wv", "west virginia"),
    ("wi", "wisconsin"),
    ("wy", "wyoming"),
];

/// State codes that are also words or common abbreviations: expanded only in capitals.
const AMBIGUOUS_STATES: &[&str] = &[
    "al", "ar", "ca", "co", "de", "hi", "id", "in", "me", "ma", "mi", "ms", "mo", "mt", "ne", "oh",
    "ok", "or", "pa", "ut",
];

/// Words with the same meaning here, to one spelling.
const SYNONYMS: &[(&str, &str)] = &[
    ("price", "cost"),
    ("purchase", "buy"),
    ("film", "movie"),
    ("repair", "fix"),
    ("begin", "start"),
    ("big", "large"),
    ("automobile", "car"),
    ("create", "make"),
    ("children", "child"),
    ("kilometer", "kilometers"),
    ("mile", "miles"),
    ("kilogram", "kilograms"),
    ("pound", "pounds"),
    ("dollar", "dollars"),
    ("euro", "euros"),
    ("hour", "hours"),
    ("minute", "minutes"),
    ("centimeter", "centimeters"),
    ("millimeter", "millimeters"),
];
