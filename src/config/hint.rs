//! "Did you mean" for misspelled keys and values: one edit distance, one bound.

/// Suggestions further than this many edits away would be guesses.
const MAX_EDITS: usize = 2;

/// The candidate nearest to `word` within [`MAX_EDITS`] (the first on a tie).
pub(super) fn closest<'a, T>(
    word: &str,
    candidates: impl IntoIterator<Item = T>,
    text: impl Fn(&T) -> &'a str,
) -> Option<T> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, text(&c)), c))
        .filter(|(d, _)| *d <= MAX_EDITS)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `; did you mean "x"?` for a bad value, or nothing when no name is close.
pub(super) fn did_you_mean<'a>(word: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, names, |n: &&str| *n)
        .map(|n| format!("; did you mean {n:?}?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
