//! Compiling one format representation into a matcher.
//!
//! This owns st2's `ActionAliasFormatParser` steps 2–3: finding `{{p}}` and
//! `{{p=default}}` placeholders (with st2's own snippet regexes, so odd
//! spacing and nested-brace defaults behave identically), turning the
//! format into one anchored regex, and deriving what the index needs: the
//! leading literal word and, lazily, the prefixes used to name a missing
//! parameter.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock};

use regex::{Captures, Regex};

use crate::pyregex::{self, AnchorSide, Node, Tok};

/// Capture groups generated for placeholders are named `__sq<k>_<j>`; user
/// groups with this prefix are rejected so the two can never collide.
pub(crate) const RESERVED_GROUP_PREFIX: &str = "__sq";

// st2's snippets, verbatim except for escaping the braces Rust needs escaped:
//   key      = \s*(\S+?)\s*
//   ext_value= ""|''|"(.+?)"|'(.+?)'|({.+?})|(.+?)
//   optional = {{ key \s*=\s*(?:ext_value)\s* }}
//   required = {{ key }}
// Each is preceded by `(\s*)` as in st2's `re.sub` calls: that whitespace
// belongs to the placeholder, so an omitted optional parameter also drops it.
static OPTIONAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?s)(\s*)\{\{\s*(\S+?)\s*\s*=\s*(?:""|''|"(.+?)"|'(.+?)'|(\{.+?\})|(.+?))\s*\}\}"#,
    )
    .expect("static regex")
});
static REQUIRED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)(\s*)\{\{\s*(\S+?)\s*\}\}").expect("static regex"));

/// A `{{name}}` or `{{name=default}}` in a format.
#[derive(Debug, Clone)]
pub(crate) struct Placeholder {
    pub name: String,
    /// `None` for a required parameter. st2 keeps defaults as strings; they
    /// are cast to the action's types later, like user input.
    pub default: Option<String>,
    /// Whitespace written before the placeholder in the format.
    pub ws: String,
    /// Capture-group indices of the six value alternatives (see `emit_value`).
    groups: [usize; 6],
}

/// How a command's first word selects this format in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lead {
    /// The first word of the command must equal this word.
    Exact(String),
    /// The first word of the command must start with this text.
    Prefix(String),
    /// Cannot be indexed (starts with a placeholder or regex, is anchored by
    /// its author, or has top-level alternatives): tried on every command.
    Wildcard,
}

/// A prefix of the format ending right before a required placeholder's
/// position: if the command matches it, that parameter is what's missing.
pub(crate) struct Truncation {
    pub regex: Regex,
    pub missing: usize,
}

/// Compiled regexes by pattern text. A compiled `Regex` costs tens of
/// kilobytes and, once used, as much again in caches; formats that differ
/// only in their leading word (see [`CompiledFormat::compile_in`]) share one,
/// which keeps a large index small and its hot path in CPU cache.
#[derive(Default)]
pub(crate) struct RegexCache(HashMap<String, Arc<Regex>>);

impl RegexCache {
    fn get(&mut self, pattern: String) -> Result<Arc<Regex>, String> {
        if let Some(regex) = self.0.get(&pattern) {
            return Ok(Arc::clone(regex));
        }
        let regex = Arc::new(Regex::new(&pattern).map_err(|e| regex_error(&e))?);
        self.0.insert(pattern, Arc::clone(&regex));
        Ok(regex)
    }
}

pub(crate) struct CompiledFormat {
    pub source: String,
    pub regex: Arc<Regex>,
    pub placeholders: Vec<Placeholder>,
    /// User-written named groups `(?P<name>...)`: (capture index, name).
    pub named_groups: Vec<(usize, String)>,
    pub lead: Lead,
    /// Characters of literal text outside placeholders, white space not
    /// counted: how specific the format is when several of one alias match.
    pub literal_len: usize,
    /// Top-level nodes, kept only when a missing-parameter check makes sense.
    top: Option<Vec<Node>>,
    truncations: OnceLock<Vec<Truncation>>,
}

impl std::fmt::Debug for CompiledFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFormat")
            .field("source", &self.source)
            .field("regex", &self.regex.as_str())
            .field("lead", &self.lead)
            .finish_non_exhaustive()
    }
}

impl CompiledFormat {
    /// Compiles a format on its own; the error is a human-readable reason.
    pub(crate) fn compile(format: &str) -> Result<CompiledFormat, String> {
        Self::compile_in(format, &mut RegexCache::default(), false)
    }

    /// Compiles a format, reusing regexes from `cache`.
    ///
    /// With `lead_checked`, the caller promises to run the regex only on
    /// commands whose first word equals the format's [`Lead::Exact`] word
    /// (the index does). The word is then matched as `\S+`, which under that
    /// promise can only match the word itself (an exact lead is followed by
    /// whitespace or the end), so `deploy1 {{app}}` and `deploy2 {{app}}`
    /// compile to the same pattern and share one `Regex`.
    pub(crate) fn compile_in(
        format: &str,
        cache: &mut RegexCache,
        lead_checked: bool,
    ) -> Result<CompiledFormat, String> {
        let (toks, mut placeholders) = tokenize(format);
        let literal_len = toks
            .iter()
            .filter(|t| matches!(t, Tok::Ch(c) if !c.is_whitespace()))
            .count();
        let mut seen = std::collections::HashSet::new();
        for ph in &placeholders {
            if !pyregex::is_identifier(&ph.name) {
                return Err(format!(
                    "'{}' is not a valid parameter name (use letters, digits and _)",
                    ph.name
                ));
            }
            if !seen.insert(ph.name.clone()) {
                return Err(format!("parameter '{}' appears more than once", ph.name));
            }
        }
        let alts = pyregex::parse(&toks)?;

        // st2 adds `^\s*` / `\s*$` only when the author did not anchor the
        // format; an anchored format is searched anywhere in the command
        // (that is how match_multiple formats find several occurrences).
        let begin_anchored = pyregex::contains_anchor(&alts, AnchorSide::Beginning);
        let end_anchored = pyregex::contains_anchor(&alts, AnchorSide::End);
        let single = match alts.as_slice() {
            [seq] if !begin_anchored => Some(seq),
            _ => None,
        };
        let lead = single.map_or(Lead::Wildcard, |seq| {
            lead_of(seq, &placeholders, !end_anchored)
        });

        let pattern = pattern_for(
            &alts,
            &placeholders,
            &lead,
            (begin_anchored, end_anchored),
            lead_checked,
        );
        let regex = cache.get(pattern)?;

        let mut named_groups = Vec::new();
        for (index, name) in regex.capture_names().enumerate() {
            let Some(name) = name else { continue };
            match parse_generated_name(name) {
                Some((k, j)) => {
                    if let Some(ph) = placeholders.get_mut(k) {
                        ph.groups[j] = index;
                    }
                }
                None => {
                    if seen.contains(name) {
                        return Err(format!("parameter '{name}' appears more than once"));
                    }
                    named_groups.push((index, name.to_string()));
                }
            }
        }

        // A missing-parameter hint needs a literal lead to be meaningful and
        // a required placeholder at the top level to name.
        let top = single
            .filter(|seq| {
                lead != Lead::Wildcard
                    && seq.iter().any(
                        |n| matches!(n, Node::Placeholder(i) if placeholders[*i].default.is_none()),
                    )
            })
            .cloned();

        Ok(CompiledFormat {
            source: format.to_string(),
            regex,
            placeholders,
            named_groups,
            lead,
            literal_len,
            top,
            truncations: OnceLock::new(),
        })
    }

    /// The matched value of each placeholder (`None` when an optional one was
    /// omitted, or a required one sat inside an unmatched optional group).
    pub(crate) fn placeholder_value<'h>(&self, caps: &Captures<'h>, k: usize) -> Option<&'h str> {
        self.placeholders[k]
            .groups
            .iter()
            .find_map(|&g| caps.get(g))
            .map(|m| m.as_str())
    }

    /// If the command stops where a required parameter should begin, returns
    /// that parameter's index. Only used on the error path, so the prefix
    /// regexes are compiled on first use rather than at build time.
    pub(crate) fn missing_parameter(&self, stream: &str) -> Option<usize> {
        let top = self.top.as_ref()?;
        let truncations = self
            .truncations
            .get_or_init(|| truncations(top, &self.placeholders));
        truncations
            .iter()
            .find(|t| t.regex.is_match(stream))
            .map(|t| t.missing)
    }
}

/// The Rust pattern for a format, as st2 builds it: `^\s*` unless the author
/// anchored the beginning, the format, `\s*$` unless they anchored the end.
/// With `lead_checked` an exact leading word becomes `\S+` (see
/// [`CompiledFormat::compile_in`]).
fn pattern_for(
    alts: &[Vec<Node>],
    placeholders: &[Placeholder],
    lead: &Lead,
    (begin_anchored, end_anchored): (bool, bool),
    lead_checked: bool,
) -> String {
    let mut pattern = String::from("(?s)");
    let mut emit_ph = |i: usize, out: &mut String| emit_placeholder(i, &placeholders[i], out);
    match (lead, alts) {
        // Only when the word is the very first thing in the format.
        (Lead::Exact(word), [seq])
            if lead_checked
                && !begin_anchored
                && matches!(seq.first(), Some(Node::Literal(c)) if !c.is_whitespace()) =>
        {
            pattern.push_str(r"^\s*\S+");
            pyregex::emit_seq(&seq[word.chars().count()..], &mut pattern, &mut emit_ph);
        }
        _ => {
            if !begin_anchored {
                pattern.push_str(r"^\s*");
            }
            pyregex::emit(alts, &mut pattern, &mut emit_ph);
        }
    }
    if !end_anchored {
        pattern.push_str(r"\s*$");
    }
    pattern
}

/// Splits a format into characters and placeholders, the way st2's two
/// `re.sub` passes see it: optional placeholders first, then required ones
/// in the text between them.
fn tokenize(format: &str) -> (Vec<Tok>, Vec<Placeholder>) {
    let mut toks = Vec::new();
    let mut placeholders = Vec::new();
    let mut last = 0;
    for caps in OPTIONAL.captures_iter(format) {
        let Some(whole) = caps.get(0) else { continue };
        tokenize_required(&format[last..whole.start()], &mut toks, &mut placeholders);
        // st2 joins the default's alternatives; at most one participates and
        // `""`/`''` leave all empty, giving an empty default.
        let default: String = (3..=6)
            .filter_map(|i| caps.get(i))
            .map(|m| m.as_str())
            .collect();
        placeholders.push(Placeholder {
            name: caps[2].to_string(),
            default: Some(default),
            ws: caps[1].to_string(),
            groups: [usize::MAX; 6],
        });
        toks.push(Tok::Ph(placeholders.len() - 1));
        last = whole.end();
    }
    tokenize_required(&format[last..], &mut toks, &mut placeholders);
    (toks, placeholders)
}

fn tokenize_required(text: &str, toks: &mut Vec<Tok>, placeholders: &mut Vec<Placeholder>) {
    let mut last = 0;
    for caps in REQUIRED.captures_iter(text) {
        let Some(whole) = caps.get(0) else { continue };
        toks.extend(text[last..whole.start()].chars().map(Tok::Ch));
        placeholders.push(Placeholder {
            name: caps[2].to_string(),
            default: None,
            ws: caps[1].to_string(),
            groups: [usize::MAX; 6],
        });
        toks.push(Tok::Ph(placeholders.len() - 1));
        last = whole.end();
    }
    toks.extend(text[last..].chars().map(Tok::Ch));
}

/// Writes a placeholder as st2's `param_match`:
///
/// ```text
/// \1["']?(?P<name>(?:(?<=').+?(?=')|(?<=").+?(?=")|{.+?}|.+?))["']?
/// ```
///
/// Rust has no look-around, so the optional opening quote is unrolled into
/// alternatives tried in the same order a backtracking engine tries them:
/// quoted value up to the matching quote, `{json}` after a quote, anything
/// after a quote, then `{json}`, then anything (the last three followed by an
/// optional quote). Each alternative captures into its own group.
/// Not reproduced: st2's look-behind also fires when the format itself (not
/// the user) put a quote right before the placeholder; the plain `.+?`
/// alternative then yields the same value in practice.
fn emit_placeholder(k: usize, ph: &Placeholder, out: &mut String) {
    let g = |j: usize| format!("{RESERVED_GROUP_PREFIX}{k}_{j}");
    out.push_str("(?:");
    out.push_str(&ph.ws);
    out.push_str(&format!(
        r#"(?:'(?P<{a}>.+?)'|"(?P<{b}>.+?)"|["'](?P<{c}>\{{.+?\}})["']?|["'](?P<{d}>.+?)["']?|(?P<{e}>\{{.+?\}})["']?|(?P<{f}>.+?)["']?)"#,
        a = g(0),
        b = g(1),
        c = g(2),
        d = g(3),
        e = g(4),
        f = g(5),
    ));
    out.push(')');
    if ph.default.is_some() {
        out.push('?');
    }
}

fn parse_generated_name(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix(RESERVED_GROUP_PREFIX)?;
    let (k, j) = rest.split_once('_')?;
    let j: usize = j.parse().ok()?;
    (j < 6).then_some(())?;
    Some((k.parse().ok()?, j))
}

fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            // The syntax error quotes the generated pattern, which would be
            // confusing; its last line carries the actual reason.
            let reason = s.lines().rev().find(|l| l.starts_with("error:"));
            format!(
                "invalid regular expression: {}",
                reason.map_or(s.as_str(), |r| r.trim_start_matches("error: "))
            )
        }
        regex::Error::CompiledTooBig(_) => "the format is too complex to compile".into(),
        other => format!("invalid regular expression: {other}"),
    }
}

/// The literal word a command must start with for this format to match.
fn lead_of(seq: &[Node], placeholders: &[Placeholder], end_appended: bool) -> Lead {
    let mut word = String::new();
    let mut i = 0;
    // Leading whitespace in the format is absorbed by `^\s*`.
    while let Some(Node::Literal(c)) = seq.get(i) {
        if !c.is_whitespace() {
            break;
        }
        i += 1;
    }
    while let Some(Node::Literal(c)) = seq.get(i) {
        if c.is_whitespace() {
            break;
        }
        word.push(*c);
        i += 1;
    }
    if word.is_empty() {
        Lead::Wildcard
    } else if boundary_at(seq, i, placeholders, end_appended) {
        Lead::Exact(word)
    } else {
        Lead::Prefix(word)
    }
}

/// Whether position `i` is guaranteed to be whitespace or the end of input.
fn boundary_at(seq: &[Node], i: usize, placeholders: &[Placeholder], end_appended: bool) -> bool {
    match seq.get(i) {
        None => end_appended,
        Some(Node::Literal(c)) => c.is_whitespace(),
        Some(Node::Placeholder(k)) => {
            let ph = &placeholders[*k];
            let spaced = ph.ws.chars().next().is_some_and(char::is_whitespace);
            match (&ph.default, spaced) {
                (_, false) => false,
                (None, true) => true,
                // An omitted optional parameter takes its whitespace with it,
                // so what follows decides.
                (Some(_), true) => boundary_at(seq, i + 1, placeholders, end_appended),
            }
        }
        Some(_) => false,
    }
}

/// Prefixes of the format cut at each word or placeholder boundary, longest
/// first, each paired with the first required placeholder after the cut.
fn truncations(top: &[Node], placeholders: &[Placeholder]) -> Vec<Truncation> {
    let mut out = Vec::new();
    for j in (1..top.len()).rev() {
        let cut = match &top[j] {
            Node::Placeholder(_) => true,
            Node::Literal(c) if c.is_whitespace() => {
                !matches!(&top[j - 1], Node::Literal(p) if p.is_whitespace())
            }
            _ => false,
        };
        if !cut {
            continue;
        }
        let missing = top[j..].iter().find_map(|n| match n {
            Node::Placeholder(k) if placeholders[*k].default.is_none() => Some(*k),
            _ => None,
        });
        let Some(missing) = missing else { continue };
        let mut pattern = String::from(r"(?s)^\s*");
        pyregex::emit_seq(&top[..j], &mut pattern, &mut |i, o| {
            emit_placeholder(i, &placeholders[i], o)
        });
        pattern.push_str(r"\s*$");
        // The full format compiled, so its prefixes do too; skip defensively.
        if let Ok(regex) = Regex::new(&pattern) {
            out.push(Truncation { regex, missing });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(format: &str) -> Lead {
        CompiledFormat::compile(format).unwrap().lead
    }

    #[test]
    fn leading_literal_word_is_indexed_exactly_when_followed_by_whitespace() {
        assert_eq!(lead("deploy {{app}}"), Lead::Exact("deploy".into()));
        assert_eq!(lead("  status"), Lead::Exact("status".into()));
        assert_eq!(lead("acl {{a=test}}"), Lead::Exact("acl".into()));
        assert_eq!(lead("deploy{{app}}"), Lead::Prefix("deploy".into()));
        assert_eq!(lead("deploy.x {{a}}"), Lead::Prefix("deploy".into()));
        assert_eq!(lead("deplo?y {{a}}"), Lead::Prefix("depl".into()));
        assert_eq!(lead("{{a}} cross the {{b}}"), Lead::Wildcard);
        assert_eq!(lead("(?i)deploy"), Lead::Wildcard);
        assert_eq!(lead("a x|b y"), Lead::Wildcard);
        assert_eq!(lead(r"^\s*foo (?P<k>\d+)"), Lead::Wildcard);
    }

    #[test]
    fn formats_differing_only_in_an_exact_leading_word_share_a_regex() {
        let mut cache = RegexCache::default();
        let a = CompiledFormat::compile_in("deploy1 {{app}}", &mut cache, true).unwrap();
        let b = CompiledFormat::compile_in("deploy2 {{svc}}", &mut cache, true).unwrap();
        let c = CompiledFormat::compile_in("deploy{{app}}", &mut cache, true).unwrap();
        assert!(Arc::ptr_eq(&a.regex, &b.regex));
        assert!(!Arc::ptr_eq(&a.regex, &c.regex));
        // Standalone compilation keeps the word in the pattern.
        let alone = CompiledFormat::compile("deploy1 {{app}}").unwrap();
        assert!(!alone.regex.is_match(" deploy2 x "));
    }

    #[test]
    fn placeholder_names_must_be_identifiers_and_unique() {
        assert!(CompiledFormat::compile("x {{a-b}}").is_err());
        assert!(CompiledFormat::compile("x {{a}} {{a}}").is_err());
        assert!(CompiledFormat::compile("x {{a}} (?P<a>y)").is_err());
        assert!(CompiledFormat::compile("x (?P<__sq0_0>y)").is_err());
    }

    #[test]
    fn missing_parameter_is_the_first_required_one_after_the_matched_prefix() {
        let f = CompiledFormat::compile("deploy {{app}} to {{env}} {{v=1}}").unwrap();
        let name = |s: &str| {
            f.missing_parameter(&format!(" {s} "))
                .map(|k| f.placeholders[k].name.clone())
        };
        assert_eq!(name("deploy").as_deref(), Some("app"));
        assert_eq!(name("deploy web").as_deref(), Some("env"));
        assert_eq!(name("deploy web to").as_deref(), Some("env"));
        assert_eq!(name("destroy"), None);
    }
}
