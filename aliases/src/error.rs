//! Error types: [`AliasError`] for alias authors and the st2-compatible
//! primitives, [`MatchError`] for chat users (its `Display` is the reply).

use thiserror::Error;

/// A problem with an alias definition, or an st2-style extraction failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AliasError {
    /// A format could not be compiled.
    #[error("{}invalid format \"{format}\": {reason}", alias_prefix(.alias_id))]
    InvalidFormat {
        /// `pack.name` of the alias, when known.
        alias_id: Option<String>,
        format: String,
        reason: String,
    },
    /// Two definitions share one `pack.name`.
    #[error("alias {alias_id}: defined more than once")]
    DuplicateAlias { alias_id: String },
    /// The command does not match the format (st2's wording).
    #[error("Command \"{command}\" doesn't match format string \"{format}\"")]
    NoMatch { command: String, format: String },
    /// st2: the format matched but produced no value at all.
    #[error("No value supplied and no default value found.")]
    NoValue,
    /// A parameter fixed by the alias was also supplied (st2's wording).
    #[error("Immutable arguments cannot be overriden: {}", .parameters.join(","))]
    ImmutableOverride { parameters: Vec<String> },
}

fn alias_prefix(alias_id: &Option<String>) -> String {
    alias_id
        .as_ref()
        .map(|id| format!("alias {id}: "))
        .unwrap_or_default()
}

/// Why a chat command did not resolve to exactly one alias execution.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatchError {
    /// No alias format matches the command.
    #[error("{}", no_match_text(.suggestion))]
    NoMatch {
        /// The display form of the closest format, if any is close.
        suggestion: Option<String>,
    },
    /// More than one alias matches.
    #[error(
        "That command matches more than one action: {}. Please make it more specific.",
        .candidates.join("; ")
    )]
    Ambiguous {
        /// `"pack.alias: <format>"` for each matching alias.
        candidates: Vec<String>,
    },
    /// The command starts like an alias format but stops before a required
    /// parameter.
    #[error("Missing value for `{parameter}`. Usage: `{usage}`")]
    MissingParameter {
        alias_id: String,
        parameter: String,
        usage: String,
    },
    /// The user tried to set a parameter the alias fixes.
    #[error(
        "The parameter `{parameter}` is fixed by {alias_id} and cannot be set from chat; \
         leave it out and try again."
    )]
    ImmutableParameter { alias_id: String, parameter: String },
    /// A value could not be converted to the action parameter's type.
    #[error("Invalid value for `{parameter}`: {reason}.")]
    BadValue {
        alias_id: String,
        parameter: String,
        reason: String,
    },
}

fn no_match_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("I don't know that command. Did you mean `{s}`?"),
        None => "I don't know that command. Ask for help to see the commands I know.".into(),
    }
}
