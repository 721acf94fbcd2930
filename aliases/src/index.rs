//! The alias index: every format compiled once, and per-command matching.
//!
//! Matching must not run every alias's regex for every chat message, so
//! formats are bucketed by their leading literal word ([`Lead`]): a command
//! only tries the formats whose word equals (or, for `deploy{{x}}`-style
//! formats, prefixes) its first word. Formats that cannot be bucketed — they
//! start with a placeholder or regex, or are anchored by their author so
//! they may match anywhere — go into one [`RegexSet`] that finds the
//! relevant ones in a single pass. Only then are capture regexes run.
//!
//! Resolution follows st2's `get_matching_alias`: ordinary formats first; if
//! none match, `match_multiple` aliases. Where st2 counts matching *patterns*,
//! this index counts matching *aliases*: when several representations of one
//! alias match, the most specific (most literal text) wins, and a tie is
//! reported as ambiguous with the tied representations.

use std::collections::{BTreeMap, HashMap};

use regex::{Captures, RegexSet};
use serde_json::{Map, Value};

use crate::cast;
use crate::error::{AliasError, MatchError};
use crate::extract::{self, PreparedCommand, Source};
use crate::format::{CompiledFormat, Lead, RegexCache};
use crate::suggest::Suggester;
use crate::{AliasDef, AliasMatch, HelpEntry, ParamType};

struct AliasEntry {
    id: String,
    description: String,
    immutable: Map<String, Value>,
    multi: bool,
    param_types: BTreeMap<String, ParamType>,
    /// One help line per format, in definition order.
    help: Vec<String>,
}

struct FormatEntry {
    alias: usize,
    format_index: usize,
    /// What users see: the format's `display`, else the representation.
    display: String,
    compiled: CompiledFormat,
}

/// All aliases of a deployment, compiled for matching. Build it once (and
/// again when packs change); it is immutable and shareable across threads.
pub struct AliasIndex {
    aliases: Vec<AliasEntry>,
    formats: Vec<FormatEntry>,
    exact: HashMap<String, Vec<u32>>,
    prefix: HashMap<String, Vec<u32>>,
    /// Longest `prefix` key in bytes; bounds the lookups per command.
    prefix_max_len: usize,
    wildcard: Vec<u32>,
    /// `None` when there are no wildcard formats or the set was too large to
    /// compile (then each is tried in turn).
    wildcard_set: Option<RegexSet>,
    suggester: Suggester,
}

impl std::fmt::Debug for AliasIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasIndex")
            .field("aliases", &self.aliases.len())
            .field("formats", &self.formats.len())
            .field("wildcard_formats", &self.wildcard.len())
            .finish()
    }
}

impl AliasIndex {
    /// Compiles every representation of every alias. Fails with *all* the
    /// problems found (each naming the alias and the format), so a pack
    /// author can fix them in one go.
    pub fn build(defs: Vec<AliasDef>) -> Result<AliasIndex, Vec<AliasError>> {
        let (index, errors) = Self::build_lenient(defs);
        if errors.is_empty() {
            Ok(index)
        } else {
            Err(errors)
        }
    }

    /// Like [`build`](Self::build), but keeps everything that compiled and
    /// returns the problems alongside, for a bot that should keep serving the
    /// good aliases while reporting the bad ones. A duplicate alias id keeps
    /// the first definition.
    pub fn build_lenient(defs: Vec<AliasDef>) -> (AliasIndex, Vec<AliasError>) {
        let mut errors = Vec::new();
        let mut aliases = Vec::new();
        let mut formats = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cache = RegexCache::default();
        for def in defs {
            if !seen.insert(def.id.clone()) {
                errors.push(AliasError::DuplicateAlias { alias_id: def.id });
                continue;
            }
            let alias = aliases.len();
            let mut help = Vec::new();
            for (format_index, f) in def.formats.iter().enumerate() {
                let display = f
                    .display
                    .clone()
                    .or_else(|| f.representations.first().cloned());
                if let Some(d) = &display {
                    help.push(d.clone());
                }
                for rep in &f.representations {
                    // A display-only format (st2 allows one) is help text only.
                    if rep.trim().is_empty() {
                        continue;
                    }
                    // The index checks the leading word before running a
                    // format's regex, which lets formats share regexes.
                    match CompiledFormat::compile_in(rep, &mut cache, true) {
                        Ok(compiled) => formats.push(FormatEntry {
                            alias,
                            format_index,
                            display: display.clone().unwrap_or_else(|| rep.clone()),
                            compiled,
                        }),
                        Err(reason) => errors.push(AliasError::InvalidFormat {
                            alias_id: Some(def.id.clone()),
                            format: rep.clone(),
                            reason,
                        }),
                    }
                }
            }
            aliases.push(AliasEntry {
                id: def.id,
                description: def.description,
                immutable: def.immutable_parameters,
                multi: def.match_multiple,
                param_types: def.param_types,
                help,
            });
        }
        (Self::index(aliases, formats), errors)
    }

    fn index(aliases: Vec<AliasEntry>, formats: Vec<FormatEntry>) -> AliasIndex {
        let mut exact: HashMap<String, Vec<u32>> = HashMap::new();
        let mut prefix: HashMap<String, Vec<u32>> = HashMap::new();
        let mut wildcard = Vec::new();
        for (id, f) in formats.iter().enumerate() {
            let id = id as u32;
            match &f.compiled.lead {
                Lead::Exact(w) => exact.entry(w.clone()).or_default().push(id),
                Lead::Prefix(w) => prefix.entry(w.clone()).or_default().push(id),
                Lead::Wildcard => wildcard.push(id),
            }
        }
        let wildcard_set = if wildcard.is_empty() {
            None
        } else {
            RegexSet::new(
                wildcard
                    .iter()
                    .map(|&id| formats[id as usize].compiled.regex.as_str()),
            )
            .ok()
        };
        let suggester =
            Suggester::new(formats.iter().enumerate().filter_map(
                |(id, f)| match &f.compiled.lead {
                    Lead::Exact(w) | Lead::Prefix(w) => Some((w.as_str(), id as u32)),
                    Lead::Wildcard => None,
                },
            ));
        AliasIndex {
            prefix_max_len: prefix.keys().map(String::len).max().unwrap_or(0),
            aliases,
            formats,
            exact,
            prefix,
            wildcard,
            wildcard_set,
            suggester,
        }
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    /// Whether the index holds no aliases.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// Number of compiled representations across all aliases.
    pub fn format_count(&self) -> usize {
        self.formats.len()
    }

    /// Matches a command (bot prefix already stripped, e.g.
    /// `"deploy web to prod"`) against all aliases. Exactly one alias must
    /// match; its parameters are extracted, checked against its immutable
    /// parameters, merged with them and cast to the action's types.
    ///
    /// Matching is case-sensitive, as in st2; a command that differs only
    /// in case gets the right format as its suggestion.
    pub fn match_command(&self, text: &str) -> Result<AliasMatch, MatchError> {
        let command = PreparedCommand::new(text);
        let candidates = self.candidates(&command);
        for multi in [false, true] {
            let mut hits: Vec<(u32, Captures<'_>)> = Vec::new();
            for &id in &candidates {
                let f = &self.formats[id as usize];
                if self.aliases[f.alias].multi != multi {
                    continue;
                }
                if let Some(caps) = f.compiled.regex.captures(&command.stream) {
                    hits.push((id, caps));
                }
            }
            let Some(first) = hits.first() else { continue };
            let first_alias = self.formats[first.0 as usize].alias;
            if hits
                .iter()
                .any(|(id, _)| self.formats[*id as usize].alias != first_alias)
            {
                return Err(self.ambiguous(&hits));
            }
            // Several representations of one alias: the most specific (the
            // most literal text) wins, so `show mysql processlist on {{hosts}}`
            // beats `show mysql processlist {{hosts=db}}` for "… on db2"; a
            // tie cannot be decided and is reported.
            let literal = |id: u32| self.formats[id as usize].compiled.literal_len;
            let most = hits.iter().map(|(id, _)| literal(*id)).max().unwrap_or(0);
            hits.retain(|(id, _)| literal(*id) == most);
            if hits.len() > 1 {
                return Err(self.tied(&hits));
            }
            let (id, caps) = hits.swap_remove(0);
            return self.resolve(id, &caps, &command);
        }
        Err(self.no_match(&command, &candidates))
    }

    /// Help lines: one per format of every alias, optionally only those whose
    /// display text, alias id or description contains `filter` (ignoring
    /// case). Permission filtering is the caller's job.
    pub fn help_entries(&self, filter: Option<&str>) -> Vec<HelpEntry> {
        let needle = filter
            .map(|f| f.trim().to_lowercase())
            .filter(|f| !f.is_empty());
        let mut out = Vec::new();
        for alias in &self.aliases {
            let alias_hit = needle.as_ref().is_none_or(|n| {
                alias.id.to_lowercase().contains(n) || alias.description.to_lowercase().contains(n)
            });
            for display in &alias.help {
                if alias_hit
                    || needle
                        .as_ref()
                        .is_some_and(|n| display.to_lowercase().contains(n))
                {
                    out.push(HelpEntry {
                        alias_id: alias.id.clone(),
                        display: display.clone(),
                        description: alias.description.clone(),
                    });
                }
            }
        }
        out
    }

    /// Formats worth running for this command, in definition order.
    fn candidates(&self, command: &PreparedCommand<'_>) -> Vec<u32> {
        let word = command.first_word();
        let mut out = Vec::new();
        if let Some(ids) = self.exact.get(word) {
            out.extend_from_slice(ids);
        }
        if !self.prefix.is_empty() {
            let ends = word
                .char_indices()
                .skip(1)
                .map(|(i, _)| i)
                .chain(std::iter::once(word.len()));
            for end in ends.take_while(|&e| e <= self.prefix_max_len) {
                if let Some(ids) = self.prefix.get(&word[..end]) {
                    out.extend_from_slice(ids);
                }
            }
        }
        match &self.wildcard_set {
            Some(set) => out.extend(
                set.matches(&command.stream)
                    .iter()
                    .map(|i| self.wildcard[i]),
            ),
            None => out.extend_from_slice(&self.wildcard),
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn ambiguous(&self, hits: &[(u32, Captures<'_>)]) -> MatchError {
        let mut seen = Vec::new();
        let mut candidates = Vec::new();
        for (id, _) in hits {
            let f = &self.formats[*id as usize];
            if !seen.contains(&f.alias) {
                seen.push(f.alias);
                candidates.push(format!("{}: {}", self.aliases[f.alias].id, f.display));
            }
        }
        MatchError::Ambiguous { candidates }
    }

    /// Representations of one alias that match equally specifically.
    fn tied(&self, hits: &[(u32, Captures<'_>)]) -> MatchError {
        let candidates = hits
            .iter()
            .map(|(id, _)| {
                let f = &self.formats[*id as usize];
                format!("{}: {}", self.aliases[f.alias].id, f.compiled.source)
            })
            .collect();
        MatchError::Ambiguous { candidates }
    }

    fn resolve(
        &self,
        id: u32,
        caps: &Captures<'_>,
        command: &PreparedCommand<'_>,
    ) -> Result<AliasMatch, MatchError> {
        let f = &self.formats[id as usize];
        let alias = &self.aliases[f.alias];
        let parameters = self.parameters(alias, f, caps, command)?;
        let mut additional_parameters = Vec::new();
        if alias.multi {
            // st2 runs one execution per occurrence (`finditer`); the first
            // occurrence is the match already resolved above.
            for more in f.compiled.regex.captures_iter(&command.stream).skip(1) {
                additional_parameters.push(self.parameters(alias, f, &more, command)?);
            }
        }
        Ok(AliasMatch {
            alias_id: alias.id.clone(),
            format_index: f.format_index,
            representation: f.compiled.source.clone(),
            display: f.display.clone(),
            parameters,
            additional_parameters,
        })
    }

    fn parameters(
        &self,
        alias: &AliasEntry,
        f: &FormatEntry,
        caps: &Captures<'_>,
        command: &PreparedCommand<'_>,
    ) -> Result<Map<String, Value>, MatchError> {
        let values = extract::collect(&f.compiled, caps, command)
            .map_err(|_| MatchError::NoMatch { suggestion: None })?;
        let mut params = Map::new();
        for (name, value, source) in values {
            if alias.immutable.contains_key(&name) {
                if source == Source::Default {
                    // The alias's own default yields to its fixed value.
                    continue;
                }
                return Err(MatchError::ImmutableParameter {
                    alias_id: alias.id.clone(),
                    parameter: name,
                });
            }
            params.insert(name, Value::String(value));
        }
        params.extend(alias.immutable.clone());
        cast::cast_all(params, &alias.param_types).map_err(|(parameter, reason)| {
            MatchError::BadValue {
                alias_id: alias.id.clone(),
                parameter,
                reason,
            }
        })
    }

    fn no_match(&self, command: &PreparedCommand<'_>, candidates: &[u32]) -> MatchError {
        // Formats selected by the first word: the user was heading for one
        // of them, so a missing parameter or a near miss is reported there.
        let led: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&id| self.formats[id as usize].compiled.lead != Lead::Wildcard)
            .collect();
        for &id in &led {
            let f = &self.formats[id as usize];
            if let Some(k) = f.compiled.missing_parameter(&command.stream) {
                return MatchError::MissingParameter {
                    alias_id: self.aliases[f.alias].id.clone(),
                    parameter: f.compiled.placeholders[k].name.clone(),
                    usage: f.display.clone(),
                };
            }
        }
        let display = |id: u32| self.formats[id as usize].display.as_str();
        let text = command.stripped.trim();
        let best = if led.is_empty() {
            self.suggester.closest(command.first_word(), text, display)
        } else {
            Suggester::rank(&led, text, display)
        };
        MatchError::NoMatch {
            suggestion: best.map(|id| display(id).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FormatDef;

    fn def(id: &str, formats: &[&str]) -> AliasDef {
        AliasDef {
            id: id.into(),
            formats: formats.iter().map(|f| FormatDef::plain(*f)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn unbucketed_formats_are_found_through_one_regex_set() {
        let idx = AliasIndex::build(vec![
            def("a.one", &["{{x}} cross the {{y}}", "{{x}} is on fire"]),
            def("a.two", &[r"(?:\b|^)fixes (?P<k>[A-Z]+-\d+)(?:\b|$)"]),
            def("a.three", &["deploy {{app}}"]),
        ])
        .unwrap();
        assert_eq!(idx.wildcard.len(), 3);
        assert!(idx.wildcard_set.is_some(), "the set must compile");
        let cmd = PreparedCommand::new("the server is on fire");
        assert_eq!(idx.candidates(&cmd), vec![1]);
        let cmd = PreparedCommand::new("deploy web");
        assert_eq!(idx.candidates(&cmd), vec![3]);
    }

    #[test]
    fn the_index_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AliasIndex>();
    }
}
