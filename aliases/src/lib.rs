//! StackStorm action-alias formats, parsed and matched in Rust.
//!
//! An alias maps chat commands to an action through *formats* such as
//! `deploy {{app}} to {{env=staging}}`. This crate reproduces st2's grammar
//! and matching semantics (`ActionAliasFormatParser`, `match_command_to_alias`,
//! `get_matching_alias`), and adds what a chat bot needs on top: an index
//! that matches a message against thousands of aliases without running each
//! one's regex, typed parameters, and errors a chat user can act on.
//!
//! It is pure: no I/O, no async, no global state beyond compiled regexes.
//!
//! # Grammar (as in st2)
//! - `{{p}}` required, `{{p=default}}` optional (the default may be quoted,
//!   a `{json}` object, or even a `{{ template }}`, kept verbatim).
//! - Values may be `"double"` or `'single'` quoted, or a `{json}` object.
//! - Everything else in a format is a Python regular expression, anchored
//!   with `^\s*…\s*$` unless the author wrote anchors; named groups
//!   `(?P<name>…)` become parameters too.
//! - Trailing `key=value` pairs (quoted and JSON values allowed) set any
//!   parameter, and win over the format.
//! - Matching is case-sensitive, like st2.
//! - Only the placeholder (with the whitespace before it) is optional: in
//!   `deploy {{app}} to {{env=staging}}` the word `to` is still required.
//!
//! # Where this differs from st2, on purpose
//! - Ambiguity is counted per alias, not per pattern: of several
//!   representations of one alias matching the same command, the one with
//!   the most literal text wins (st2 takes the first listed); equally
//!   specific ones are an ambiguity error naming them.
//! - Trailing extras are cut from the end of the command only (st2's
//!   `str.replace` also deletes identical text elsewhere in it).
//! - Regex constructs the `regex` crate lacks (look-around, back-references,
//!   conditionals, atomic groups, possessive quantifiers, `(?x)`) are
//!   rejected when the index is built, naming the alias and format. `$`
//!   matches only at the very end (Python's also before a final newline).
//!   st2's search for author anchors only looks at the *second* branch of an
//!   alternation; that quirk is kept because it decides matching behaviour.
//! - A named regex group that did not take part in the match is left out
//!   rather than set to null.
//! - `immutable_parameters` are not rendered as Jinja templates (this crate
//!   is pure); the caller renders them if it supports templating. An
//!   immutable parameter that the format fills only from its own default is
//!   not an error: the fixed value wins. One the user types is refused.
//! - A format with only a `display` is help text and never matches.
//!
//! # Example
//! ```
//! use squall_aliases::{AliasDef, AliasIndex, FormatDef, MatchError, ParamType};
//!
//! let index = AliasIndex::build(vec![AliasDef {
//!     id: "ops.scale".into(),
//!     description: "Scale an app".into(),
//!     formats: vec![FormatDef::plain("scale {{app}} to {{count=2}}")],
//!     param_types: [("count".to_string(), ParamType::Integer)].into(),
//!     ..Default::default()
//! }])
//! .expect("formats compile");
//!
//! let m = index.match_command("scale web to 3 reason=\"peak load\"")?;
//! assert_eq!(m.alias_id, "ops.scale");
//! assert_eq!(m.parameters["count"], 3);
//! assert_eq!(m.parameters["reason"], "peak load");
//!
//! let err = index.match_command("scale").unwrap_err();
//! assert_eq!(err.to_string(), "Missing value for `app`. Usage: `scale {{app}} to {{count=2}}`");
//! # Ok::<(), MatchError>(())
//! ```
//!
//! # Modules
//! - `pyregex`: Python regex syntax → Rust regex syntax, anchor search.
//! - `format`: placeholder scanning and compilation of one representation.
//! - `extract`: extras, value collection, the st2-compatible primitives.
//! - `cast`: string → action parameter type conversion.
//! - `index`: [`AliasIndex`], the per-message matcher.
//! - `suggest`: "did you mean" lookup by leading word.
//! - `error`: [`AliasError`] and [`MatchError`].

mod cast;
mod error;
mod extract;
mod format;
mod index;
mod pyregex;
mod suggest;

use serde::Serialize;
use serde_json::{Map, Value};

pub use cast::ParamType;
pub use error::{AliasError, MatchError};
pub use extract::{extract_all_parameters, extract_parameters, inject_immutable_parameters};
pub use index::AliasIndex;
pub use pyregex::AnchorSide;

/// One entry of an alias's `formats`: a plain string is one representation
/// and no display; the mapping form has a `display` (help text) and one or
/// more `representation`s, each of which can match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormatDef {
    pub display: Option<String>,
    pub representations: Vec<String>,
}

impl FormatDef {
    /// A plain string format.
    pub fn plain(format: impl Into<String>) -> Self {
        FormatDef {
            display: None,
            representations: vec![format.into()],
        }
    }

    /// The `{display, representation: [...]}` form.
    pub fn with_display(
        display: impl Into<String>,
        representations: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        FormatDef {
            display: Some(display.into()),
            representations: representations.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&str> for FormatDef {
    fn from(format: &str) -> Self {
        FormatDef::plain(format)
    }
}

impl From<String> for FormatDef {
    fn from(format: String) -> Self {
        FormatDef::plain(format)
    }
}

/// An alias as the index needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AliasDef {
    /// `pack.name`.
    pub id: String,
    pub description: String,
    pub formats: Vec<FormatDef>,
    /// Parameters the alias fixes; a user may not set them. Values are
    /// injected verbatim (string values are cast like user input).
    pub immutable_parameters: Map<String, Value>,
    /// st2's `match_multiple`: every occurrence of an (author-anchored)
    /// format in one command yields its own parameter set. Such aliases are
    /// only considered when no ordinary alias matches.
    pub match_multiple: bool,
    /// Types of the action's parameters; undeclared ones stay strings.
    pub param_types: std::collections::BTreeMap<String, ParamType>,
}

/// A successful match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AliasMatch {
    /// `pack.name` of the matched alias.
    pub alias_id: String,
    /// Index into the alias's `formats`.
    pub format_index: usize,
    /// The representation that matched.
    pub representation: String,
    /// The format's display text (or the representation when it has none).
    pub display: String,
    /// Parameters for the action: extracted, immutable ones added, cast.
    pub parameters: Map<String, Value>,
    /// For `match_multiple` aliases, the parameter sets of the second and
    /// later occurrences (one execution each); empty otherwise.
    pub additional_parameters: Vec<Map<String, Value>>,
}

impl AliasMatch {
    /// All parameter sets, one per execution to start.
    pub fn parameter_sets(&self) -> impl Iterator<Item = &Map<String, Value>> {
        std::iter::once(&self.parameters).chain(&self.additional_parameters)
    }
}

/// One help line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelpEntry {
    pub alias_id: String,
    pub display: String,
    pub description: String,
}

/// st2's `search_regex_tokens` for beginning (`^`, `\A`) or end (`$`, `\Z`)
/// anchors in a Python-syntax regex: this decides whether a format gets
/// `^\s*`/`\s*$` added. Errors if the pattern is not valid.
pub fn search_regex_tokens(pattern: &str, side: AnchorSide) -> Result<bool, AliasError> {
    let toks: Vec<pyregex::Tok> = pattern.chars().map(pyregex::Tok::Ch).collect();
    let alts = pyregex::parse(&toks).map_err(|reason| AliasError::InvalidFormat {
        alias_id: None,
        format: pattern.to_string(),
        reason,
    })?;
    Ok(pyregex::contains_anchor(&alts, side))
}
