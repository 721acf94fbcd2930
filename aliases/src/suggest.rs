//! "Did you mean …?" for commands that match nothing.
//!
//! Comparing a typo against every format with `strsim` would cost hundreds
//! of microseconds at 10,000 aliases, on every unrecognised message. Instead
//! the formats' leading words are indexed by their deletion neighbourhood
//! (the SymSpell idea): every string reachable by deleting up to two
//! characters. Two words within edit distance two share such a string, so a
//! lookup costs a few dozen hash probes whatever the number of aliases;
//! `strsim` then ranks only the few real candidates.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Words longer than this are not indexed or looked up: no command word is
/// that long, and it bounds the work an oversized message can cause.
const MAX_WORD_CHARS: usize = 40;
/// How many formats sharing the best word are ranked against the command.
const MAX_RANKED: usize = 32;

fn max_edits(chars: usize) -> usize {
    match chars {
        0 | 1 => 0,
        2..=4 => 1,
        _ => 2,
    }
}

/// The keys are already FNV hashes; hashing them again would be wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
pub(crate) struct Suggester {
    /// Lower-cased distinct leading words, with their length in chars.
    words: Vec<(String, usize)>,
    /// Format ids per word, in definition order.
    formats: Vec<Vec<u32>>,
    /// Hash of a deletion variant → range of `postings`.
    deletes: HashMap<u64, (u32, u32), BuildHasherDefault<PassThrough>>,
    /// (word id, characters deleted from the word to reach the variant).
    postings: Vec<(u32, u8)>,
}

impl Suggester {
    /// `entries` are (leading word, format id) in definition order.
    pub(crate) fn new<'a>(entries: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut ids = HashMap::new();
        let mut s = Suggester::default();
        let mut pairs: Vec<(u64, u32, u8)> = Vec::new();
        for (word, format) in entries {
            let word = word.to_lowercase();
            let chars: Vec<char> = word.chars().collect();
            if chars.is_empty() || chars.len() > MAX_WORD_CHARS {
                continue;
            }
            let id = *ids.entry(word.clone()).or_insert_with(|| {
                let id = s.words.len() as u32;
                for_each_deletion(&chars, max_edits(chars.len()), &mut |h, dels| {
                    pairs.push((h, id, dels))
                });
                s.words.push((word, chars.len()));
                s.formats.push(Vec::new());
                id
            });
            s.formats[id as usize].push(format);
        }
        // Keep one posting per (variant, word), with the fewest deletions.
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| (p.0, p.1));
        s.postings = pairs.iter().map(|&(_, id, dels)| (id, dels)).collect();
        let mut start = 0;
        for run in pairs.chunk_by(|a, b| a.0 == b.0) {
            let end = start + run.len();
            s.deletes.insert(run[0].0, (start as u32, end as u32));
            start = end;
        }
        s
    }

    /// Format ids sharing the leading word closest to `word`, best first by
    /// similarity of `command` to each format's display text.
    pub(crate) fn closest<'a>(
        &self,
        word: &str,
        command: &str,
        display: impl Fn(u32) -> &'a str,
    ) -> Option<u32> {
        let query = word.to_lowercase();
        let chars: Vec<char> = query.chars().collect();
        if chars.is_empty() || chars.len() > MAX_WORD_CHARS {
            return None;
        }
        let edits = max_edits(chars.len());
        // Any word within one edit shares a variant with at most one deletion
        // on each side, so that cheaper search is exact when it finds one;
        // only otherwise are two-deletion variants (many more) consulted.
        let best = match self.search(&query, &chars, edits.min(1)) {
            Some((d, id)) if d <= 1 => (d, id),
            _ if edits >= 2 => self.search(&query, &chars, 2)?,
            found => found?,
        };
        Self::rank(&self.formats[best.1 as usize], command, display)
    }

    /// The closest word (distance, id) among words sharing a variant with at
    /// most `dels` deletions on either side.
    fn search(&self, query: &str, chars: &[char], dels: usize) -> Option<(usize, u32)> {
        let mut candidates: Vec<u32> = Vec::new();
        for_each_deletion(chars, dels, &mut |h, _| {
            if let Some(&(start, end)) = self.deletes.get(&h) {
                candidates.extend(
                    self.postings[start as usize..end as usize]
                        .iter()
                        .filter(|&&(_, d)| usize::from(d) <= dels)
                        .map(|&(id, _)| id),
                );
            }
        });
        candidates.sort_unstable();
        candidates.dedup();
        // Hash collisions and one-sided deletions over-approximate; the real
        // distance decides (optimal string alignment: typos incl. swaps).
        candidates
            .into_iter()
            .filter_map(|id| {
                let (w, len) = &self.words[id as usize];
                let allowed = max_edits(chars.len().min(*len));
                if chars.len().abs_diff(*len) > allowed {
                    return None;
                }
                let d = strsim::osa_distance(query, w);
                (d <= allowed).then_some((d, id))
            })
            .min()
    }

    /// The format (among `ids`) whose display text reads most like `command`.
    pub(crate) fn rank<'a>(
        ids: &[u32],
        command: &str,
        display: impl Fn(u32) -> &'a str,
    ) -> Option<u32> {
        let command = command.to_lowercase();
        let mut best: Option<(f64, u32)> = None;
        for &id in ids.iter().take(MAX_RANKED) {
            let score = strsim::normalized_levenshtein(&command, &display(id).to_lowercase());
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, id));
            }
        }
        best.map(|(_, id)| id)
    }
}

/// Calls `f` with the hash of every string obtained by deleting up to
/// `edits` characters (including none), and the number deleted. Hashing the
/// characters in place avoids allocating each variant.
fn for_each_deletion(chars: &[char], edits: usize, f: &mut dyn FnMut(u64, u8)) {
    let n = chars.len();
    f(hash_skipping(chars, usize::MAX, usize::MAX), 0);
    if edits >= 1 {
        for i in 0..n {
            f(hash_skipping(chars, i, usize::MAX), 1);
        }
    }
    if edits >= 2 {
        for i in 0..n {
            for j in i + 1..n {
                f(hash_skipping(chars, i, j), 2);
            }
        }
    }
}

/// FNV-1a over the characters, skipping positions `a` and `b`.
fn hash_skipping(chars: &[char], a: usize, b: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, c) in chars.iter().enumerate() {
        if i == a || i == b {
            continue;
        }
        for byte in (*c as u32).to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_within_two_edits_find_the_word() {
        let displays = ["deploy {{app}}", "restart {{svc}}", "ls"];
        let s = Suggester::new([("deploy", 0), ("restart", 1), ("ls", 2)]);
        let d = |id: u32| displays[id as usize];
        assert_eq!(s.closest("deploi", "deploi web", d), Some(0));
        assert_eq!(s.closest("Deploy", "Deploy web", d), Some(0));
        assert_eq!(s.closest("rstart", "rstart x", d), Some(1));
        // Two edits away: found by the wider second search.
        assert_eq!(s.closest("dploi", "dploi web", d), Some(0));
        assert_eq!(s.closest("retsarts", "retsarts x", d), Some(1));
        assert_eq!(s.closest("la", "la", d), Some(2));
        assert_eq!(s.closest("frobnicate", "frobnicate", d), None);
    }
}
