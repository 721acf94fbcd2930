//! Python `re` syntax → Rust `regex` syntax, for the regex part of alias formats.
//!
//! st2 treats everything in a format that is not a `{{placeholder}}` as a
//! Python regular expression (`How do I feel?` makes the `I` optional, `.`
//! matches any character). To stay compatible we parse that text with
//! Python's grammar into a small tree ([`Node`]) and re-emit it in the syntax
//! of the `regex` crate. The tree is also what the rest of the crate inspects:
//! anchor search (st2's `search_regex_tokens`), the leading literal word used
//! by the matcher's index, and the prefixes used to report a missing parameter.
//!
//! Constructs the `regex` crate cannot run (look-around, back-references,
//! conditionals, atomic groups, possessive quantifiers, verbose mode) are
//! rejected with a reason instead of being approximated, so a pack author
//! learns about it when the index is built rather than from a silent mismatch.

/// One input unit: a character of format text, or a placeholder (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Ch(char),
    Ph(usize),
}

/// Zero-width assertions. Only the begin/end kinds count as anchors for st2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// `^`
    Begin,
    /// `\A`
    BeginString,
    /// `$`
    End,
    /// `\Z` (Python) = `\z` (Rust)
    EndString,
    /// `\b`
    WordBoundary,
    /// `\B`
    NotWordBoundary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupKind {
    Capture,
    NonCapture,
    Named(String),
    /// Scoped flags, already in Rust syntax, e.g. `i` or `i-s`.
    Flags(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Literal(char),
    /// An atom already in Rust syntax: `.`, `\d`, a character class.
    Raw(String),
    Anchor(Anchor),
    Group {
        kind: GroupKind,
        alts: Vec<Vec<Node>>,
    },
    Repeat {
        node: Box<Node>,
        quant: String,
    },
    /// Global inline flags, already in Rust syntax (`(?i)` → `i`).
    Flags(String),
    Placeholder(usize),
}

/// Alternatives of a (sub)pattern; a pattern without `|` has exactly one.
pub(crate) type Alternation = Vec<Vec<Node>>;

/// Deep nesting is never needed by a chat format; bounding it keeps the
/// recursive parser from exhausting the stack on hostile input.
const MAX_DEPTH: usize = 64;

/// Parses a tokenised format into its top-level alternatives.
pub(crate) fn parse(toks: &[Tok]) -> Result<Alternation, String> {
    let mut p = Parser { toks, pos: 0 };
    p.alternation(0)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.pos).copied()
    }

    fn peek_ch(&self) -> Option<char> {
        match self.peek() {
            Some(Tok::Ch(c)) => Some(c),
            _ => None,
        }
    }

    fn next_ch(&mut self) -> Option<char> {
        let c = self.peek_ch()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek_ch() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn alternation(&mut self, depth: usize) -> Result<Alternation, String> {
        if depth > MAX_DEPTH {
            return Err("groups are nested too deeply".into());
        }
        let in_group = depth > 0;
        let mut alts: Alternation = vec![Vec::new()];
        loop {
            let Some(tok) = self.peek() else {
                if in_group {
                    return Err("missing ), unterminated group".into());
                }
                break;
            };
            self.pos += 1;
            let c = match tok {
                Tok::Ph(i) => {
                    push(&mut alts, Node::Placeholder(i));
                    continue;
                }
                Tok::Ch(c) => c,
            };
            match c {
                ')' if in_group => break,
                ')' => return Err("unbalanced parenthesis".into()),
                '|' => alts.push(Vec::new()),
                '*' | '+' | '?' => self.quantify(&mut alts, c.to_string())?,
                '{' => match self.brace_quantifier()? {
                    Some(q) => self.quantify(&mut alts, q)?,
                    None => push(&mut alts, Node::Literal('{')),
                },
                '(' => {
                    if let Some(node) = self.group(depth)? {
                        push(&mut alts, node);
                    }
                }
                '[' => {
                    let class = self.class()?;
                    push(&mut alts, Node::Raw(class));
                }
                '\\' => {
                    let node = self.escape()?;
                    push(&mut alts, node);
                }
                '.' => push(&mut alts, Node::Raw(".".into())),
                '^' => push(&mut alts, Node::Anchor(Anchor::Begin)),
                '$' => push(&mut alts, Node::Anchor(Anchor::End)),
                other => push(&mut alts, Node::Literal(other)),
            }
        }
        Ok(alts)
    }

    /// Attaches a quantifier (plus an optional lazy `?`) to the previous node.
    fn quantify(&mut self, alts: &mut Alternation, mut quant: String) -> Result<(), String> {
        if self.eat('?') {
            quant.push('?');
        } else if self.peek_ch() == Some('+') {
            return Err("possessive quantifiers (e.g. `*+`) are not supported".into());
        }
        let seq = alts.last_mut().ok_or("nothing to repeat")?;
        let node = match seq.pop() {
            None | Some(Node::Anchor(_)) | Some(Node::Flags(_)) => {
                return Err("nothing to repeat".into());
            }
            Some(Node::Repeat { .. }) => return Err("multiple repeat".into()),
            Some(Node::Placeholder(_)) => {
                return Err("a quantifier cannot follow a {{placeholder}}".into());
            }
            Some(node) => node,
        };
        seq.push(Node::Repeat {
            node: Box::new(node),
            quant,
        });
        Ok(())
    }

    /// After `{`: Python treats `{m}`, `{m,}`, `{,n}`, `{m,n}` and `{,}` as
    /// quantifiers and any other `{` as a literal (so JSON-ish text is fine).
    fn brace_quantifier(&mut self) -> Result<Option<String>, String> {
        let start = self.pos;
        let mut lo = String::new();
        let mut hi = String::new();
        let mut comma = false;
        if self.peek_ch() == Some('}') {
            return Ok(None);
        }
        while let Some(c) = self.peek_ch().filter(char::is_ascii_digit) {
            lo.push(c);
            self.pos += 1;
        }
        if self.eat(',') {
            comma = true;
            while let Some(c) = self.peek_ch().filter(char::is_ascii_digit) {
                hi.push(c);
                self.pos += 1;
            }
        }
        if !self.eat('}') || (lo.is_empty() && !comma) {
            self.pos = start;
            return Ok(None);
        }
        let quant = match (lo.is_empty(), comma, hi.is_empty()) {
            (_, false, _) => format!("{{{lo}}}"),
            (true, true, true) => "*".to_string(),
            (true, true, false) => format!("{{0,{hi}}}"),
            (false, true, true) => format!("{{{lo},}}"),
            (false, true, false) => {
                let (l, h) = (lo.parse::<u64>(), hi.parse::<u64>());
                if let (Ok(l), Ok(h)) = (l, h)
                    && l > h
                {
                    return Err("min repeat greater than max repeat".into());
                }
                format!("{{{lo},{hi}}}")
            }
        };
        Ok(Some(quant))
    }

    /// After `(`. Returns `None` for constructs that produce no node
    /// (comments, flags that have no Rust equivalent such as `(?u)`).
    fn group(&mut self, depth: usize) -> Result<Option<Node>, String> {
        if !self.eat('?') {
            let alts = self.alternation(depth + 1)?;
            return Ok(Some(Node::Group {
                kind: GroupKind::Capture,
                alts,
            }));
        }
        let kind = match self.next_ch() {
            Some(':') => GroupKind::NonCapture,
            Some('P') => match self.next_ch() {
                Some('<') => GroupKind::Named(self.group_name()?),
                Some('=') => return Err("back-references (?P=name) are not supported".into()),
                _ => return Err("unknown extension (?P".into()),
            },
            Some('<') => match self.peek_ch() {
                Some('=') | Some('!') => {
                    return Err("look-behind assertions are not supported".into());
                }
                _ => GroupKind::Named(self.group_name()?),
            },
            Some('=') | Some('!') => return Err("look-ahead assertions are not supported".into()),
            Some('#') => {
                // Comment: skip to the closing parenthesis.
                loop {
                    match self.peek() {
                        None => return Err("missing ), unterminated comment".into()),
                        Some(Tok::Ch(')')) => {
                            self.pos += 1;
                            return Ok(None);
                        }
                        Some(_) => self.pos += 1,
                    }
                }
            }
            Some('(') => return Err("conditional groups are not supported".into()),
            Some('>') => return Err("atomic groups are not supported".into()),
            Some(c) if c == '-' || c.is_ascii_alphabetic() => {
                self.pos -= 1;
                let (flags, scoped) = self.flags()?;
                if !scoped {
                    return Ok((!flags.is_empty()).then_some(Node::Flags(flags)));
                }
                if flags.is_empty() {
                    GroupKind::NonCapture
                } else {
                    GroupKind::Flags(flags)
                }
            }
            _ => return Err("unknown extension after (?".into()),
        };
        let alts = self.alternation(depth + 1)?;
        Ok(Some(Node::Group { kind, alts }))
    }

    fn group_name(&mut self) -> Result<String, String> {
        let mut name = String::new();
        loop {
            match self.next_ch() {
                Some('>') => break,
                Some(c) => name.push(c),
                None => return Err("missing >, unterminated group name".into()),
            }
        }
        if !is_identifier(&name) {
            return Err(format!("bad character in group name '{name}'"));
        }
        if name.starts_with(crate::format::RESERVED_GROUP_PREFIX) {
            return Err(format!("group name '{name}' is reserved"));
        }
        Ok(name)
    }

    /// Parses `(?flags)` / `(?flags:` / `(?on-off:` after the `?`.
    /// Returns the Rust flag string and whether it opens a scoped group.
    fn flags(&mut self) -> Result<(String, bool), String> {
        let mut on = String::new();
        let mut off = String::new();
        let mut negate = false;
        loop {
            let c = self.next_ch().ok_or("missing ), unterminated flags")?;
            match c {
                ')' | ':' => {
                    let mut flags = on;
                    if !off.is_empty() {
                        flags.push('-');
                        flags.push_str(&off);
                    }
                    return Ok((flags, c == ':'));
                }
                '-' if !negate => negate = true,
                'i' | 'm' | 's' => {
                    if negate {
                        off.push(c)
                    } else {
                        on.push(c)
                    }
                }
                // Unicode matching is already the default in Rust.
                'u' => {}
                'x' => return Err("verbose (?x) formats are not supported".into()),
                'a' | 'L' => return Err(format!("the (?{c}) flag is not supported")),
                other => return Err(format!("unknown flag '{other}'")),
            }
        }
    }

    /// After `\` outside a character class.
    fn escape(&mut self) -> Result<Node, String> {
        let c = match self.peek() {
            None => return Err("the format ends with a lone backslash".into()),
            Some(Tok::Ph(_)) => return Err("a backslash cannot precede a {{placeholder}}".into()),
            Some(Tok::Ch(c)) => c,
        };
        self.pos += 1;
        Ok(match c {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => Node::Raw(format!("\\{c}")),
            'b' => Node::Anchor(Anchor::WordBoundary),
            'B' => Node::Anchor(Anchor::NotWordBoundary),
            'A' => Node::Anchor(Anchor::BeginString),
            'Z' => Node::Anchor(Anchor::EndString),
            '1'..='9' => {
                // Python reads three octal digits as an octal escape and
                // anything else as a back-reference, which Rust lacks.
                match self.octal_tail(c, 2, true) {
                    Some(ch) => Node::Literal(ch),
                    None => return Err("back-references (\\1) are not supported".into()),
                }
            }
            _ => Node::Literal(self.char_escape(c)?),
        })
    }

    /// Escapes that denote a single character (shared by classes).
    fn char_escape(&mut self, c: char) -> Result<char, String> {
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'f' => '\x0c',
            'v' => '\x0b',
            'a' => '\x07',
            '0' => self.octal_tail('0', 2, false).unwrap_or('\0'),
            'x' => self.hex_escape(2)?,
            'u' => self.hex_escape(4)?,
            'U' => self.hex_escape(8)?,
            'N' => return Err("named unicode escapes (\\N{...}) are not supported".into()),
            c if c.is_ascii_alphanumeric() => return Err(format!("bad escape \\{c}")),
            c => c,
        })
    }

    /// Reads up to `more` further octal digits after `first`. With `exact`,
    /// all of them must be present (Python's rule for `\1xx`).
    fn octal_tail(&mut self, first: char, more: usize, exact: bool) -> Option<char> {
        let start = self.pos;
        let mut digits = String::from(first);
        while digits.len() <= more {
            match self.peek_ch() {
                Some(d @ '0'..='7') => {
                    digits.push(d);
                    self.pos += 1;
                }
                _ => break,
            }
        }
        let ok = first <= '7' && (!exact || digits.len() == more + 1);
        match u32::from_str_radix(&digits, 8)
            .ok()
            .and_then(char::from_u32)
        {
            Some(ch) if ok => Some(ch),
            _ => {
                self.pos = start;
                None
            }
        }
    }

    fn hex_escape(&mut self, len: usize) -> Result<char, String> {
        let mut hex = String::new();
        for _ in 0..len {
            match self.next_ch() {
                Some(c) if c.is_ascii_hexdigit() => hex.push(c),
                _ => return Err(format!("incomplete escape, expected {len} hex digits")),
            }
        }
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("bad escape, invalid code point {hex}"))
    }

    /// After `[`: parses a Python character class and returns it in Rust syntax.
    fn class(&mut self) -> Result<String, String> {
        let mut out = String::from("[");
        if self.eat('^') {
            out.push('^');
        }
        let mut first = true;
        loop {
            let atom = match self.peek() {
                None => return Err("unterminated character set".into()),
                Some(Tok::Ph(_)) => {
                    return Err("a {{placeholder}} cannot appear inside a character set".into());
                }
                Some(Tok::Ch(']')) if !first => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Ch(_)) => self.class_atom()?,
            };
            first = false;
            // A range needs a following atom that is not the closing bracket.
            let is_range = self.peek_ch() == Some('-')
                && !matches!(self.toks.get(self.pos + 1), Some(Tok::Ch(']')) | None);
            match atom {
                ClassAtom::Char(lo) if is_range => {
                    self.pos += 1;
                    let ClassAtom::Char(hi) = self.class_atom()? else {
                        return Err("bad character range".into());
                    };
                    if lo > hi {
                        return Err(format!("bad character range {lo}-{hi}"));
                    }
                    push_class_char(&mut out, lo);
                    out.push('-');
                    push_class_char(&mut out, hi);
                }
                ClassAtom::Char(c) => push_class_char(&mut out, c),
                ClassAtom::Shorthand(_) if is_range => {
                    return Err("bad character range".into());
                }
                ClassAtom::Shorthand(s) => out.push_str(&s),
            }
        }
        out.push(']');
        Ok(out)
    }

    fn class_atom(&mut self) -> Result<ClassAtom, String> {
        let c = match self.peek() {
            Some(Tok::Ch(c)) => c,
            Some(Tok::Ph(_)) => {
                return Err("a {{placeholder}} cannot appear inside a character set".into());
            }
            None => return Err("unterminated character set".into()),
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(ClassAtom::Char(c));
        }
        let e = match self.peek() {
            Some(Tok::Ch(e)) => e,
            _ => return Err("unterminated character set".into()),
        };
        self.pos += 1;
        Ok(match e {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => ClassAtom::Shorthand(format!("\\{e}")),
            // Inside a class Python reads `\b` as backspace.
            'b' => ClassAtom::Char('\x08'),
            '1'..='7' => match self.octal_tail(e, 2, false) {
                Some(ch) => ClassAtom::Char(ch),
                None => return Err(format!("bad escape \\{e}")),
            },
            _ => ClassAtom::Char(self.char_escape(e)?),
        })
    }
}

enum ClassAtom {
    Char(char),
    Shorthand(String),
}

fn push(alts: &mut Alternation, node: Node) {
    if let Some(seq) = alts.last_mut() {
        seq.push(node);
    }
}

/// Python group names must be identifiers.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn push_class_char(out: &mut String, c: char) {
    if matches!(c, '[' | ']' | '\\' | '-' | '^' | '&' | '~') {
        out.push('\\');
        out.push(c);
    } else if c.is_whitespace() || c.is_control() {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// Appends a literal character in Rust syntax.
pub(crate) fn push_literal(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    regex::escape(c.encode_utf8(&mut buf))
        .chars()
        .for_each(|e| out.push(e));
}

/// Emits alternatives in Rust syntax; placeholders are written by `ph`.
pub(crate) fn emit(alts: &[Vec<Node>], out: &mut String, ph: &mut dyn FnMut(usize, &mut String)) {
    for (i, seq) in alts.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        emit_seq(seq, out, ph);
    }
}

pub(crate) fn emit_seq(seq: &[Node], out: &mut String, ph: &mut dyn FnMut(usize, &mut String)) {
    for node in seq {
        emit_node(node, out, ph);
    }
}

fn emit_node(node: &Node, out: &mut String, ph: &mut dyn FnMut(usize, &mut String)) {
    match node {
        Node::Literal(c) => push_literal(out, *c),
        Node::Raw(s) => out.push_str(s),
        Node::Anchor(a) => out.push_str(match a {
            Anchor::Begin => "^",
            Anchor::BeginString => "\\A",
            Anchor::End => "$",
            Anchor::EndString => "\\z",
            Anchor::WordBoundary => "\\b",
            Anchor::NotWordBoundary => "\\B",
        }),
        Node::Group { kind, alts } => {
            match kind {
                GroupKind::Capture => out.push('('),
                GroupKind::NonCapture => out.push_str("(?:"),
                GroupKind::Named(n) => {
                    out.push_str("(?P<");
                    out.push_str(n);
                    out.push('>');
                }
                GroupKind::Flags(f) => {
                    out.push_str("(?");
                    out.push_str(f);
                    out.push(':');
                }
            }
            emit(alts, out, ph);
            out.push(')');
        }
        Node::Repeat { node, quant } => {
            emit_node(node, out, ph);
            out.push_str(quant);
        }
        Node::Flags(f) => {
            out.push_str("(?");
            out.push_str(f);
            out.push(')');
        }
        Node::Placeholder(i) => ph(*i, out),
    }
}

/// Which anchors to look for, as in st2's `search_regex_tokens` needles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorSide {
    /// `^` or `\A`
    Beginning,
    /// `$` or `\Z`
    End,
}

/// st2's `search_regex_tokens` over Python's parse tree: anchors count at the
/// top level and inside plain (unquantified) groups, and for an alternation
/// only its *second* branch is searched — a quirk of st2 (`rtoken[1][1]`)
/// that decides whether `^\s*`/`\s*$` get added, so it is kept on purpose.
pub(crate) fn contains_anchor(alts: &[Vec<Node>], side: AnchorSide) -> bool {
    let seq = match alts {
        [only] => only,
        [_, second, ..] => second,
        [] => return false,
    };
    seq.iter().any(|node| match node {
        Node::Anchor(a) => match side {
            AnchorSide::Beginning => matches!(a, Anchor::Begin | Anchor::BeginString),
            AnchorSide::End => matches!(a, Anchor::End | Anchor::EndString),
        },
        Node::Group { alts, .. } => contains_anchor(alts, side),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(pattern: &str) -> Result<String, String> {
        let toks: Vec<Tok> = pattern.chars().map(Tok::Ch).collect();
        let alts = parse(&toks)?;
        let mut out = String::new();
        emit(&alts, &mut out, &mut |_, _| {});
        Ok(out)
    }

    #[test]
    fn python_only_syntax_is_translated() {
        assert_eq!(rust(r"a\Z").unwrap(), r"a\z");
        assert_eq!(rust(r"a{,3}").unwrap(), "a{0,3}");
        assert_eq!(rust(r"{json}").unwrap(), r"\{json\}");
        assert_eq!(rust(r"x{}").unwrap(), r"x\{\}");
        assert_eq!(rust(r"[[a]").unwrap(), r"[\[a]");
        assert_eq!(rust(r"[]a]").unwrap(), r"[\]a]");
        assert_eq!(rust(r"a(?#comment)b").unwrap(), "ab");
        assert_eq!(rust(r"\'\<").unwrap(), "'<");
        assert_eq!(rust(r"(?u)a").unwrap(), "a");
        assert_eq!(rust(r"(?i-s:a)").unwrap(), "(?i-s:a)");
        assert_eq!(rust(r"\101").unwrap(), "A");
    }

    #[test]
    fn constructs_rust_cannot_run_are_rejected_with_a_reason() {
        for (pattern, reason) in [
            ("(?=a)", "look-ahead"),
            ("(?<=a)b", "look-behind"),
            (r"(a)\1", "back-references"),
            ("(?P=x)", "back-references"),
            ("a*+", "possessive"),
            ("(?x)a b", "verbose"),
            ("(a", "unterminated"),
            ("a)", "unbalanced"),
            ("*a", "nothing to repeat"),
            ("a**", "multiple repeat"),
            (r"\q", "bad escape"),
            ("[a", "unterminated"),
        ] {
            let err = rust(pattern).unwrap_err();
            assert!(err.contains(reason), "{pattern}: {err}");
        }
    }

    #[test]
    fn only_the_second_branch_of_an_alternation_is_searched_like_st2() {
        let find = |p: &str, side| {
            let toks: Vec<Tok> = p.chars().map(Tok::Ch).collect();
            contains_anchor(&parse(&toks).unwrap(), side)
        };
        assert!(find(r"(?:\b|^)x", AnchorSide::Beginning));
        assert!(!find(r"(?:^|\b)x", AnchorSide::Beginning));
        assert!(!find(r"(?:^x)?", AnchorSide::Beginning));
        assert!(find(r"\Ax", AnchorSide::Beginning));
        assert!(find(r"x\Z", AnchorSide::End));
    }
}
