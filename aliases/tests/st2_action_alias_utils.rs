//! Port of StackStorm's `st2common/tests/unit/test_action_alias_utils.py`:
//! one test per Python test, same inputs and expectations.
//! `ActionAliasFormatParser(f, s).get_extracted_param_value()` is
//! `extract_parameters(f, s)`; `search_regex_tokens(needles, parse(p))` is
//! `search_regex_tokens(p, side)`; `inject_immutable_parameters` keeps its name.

use serde_json::{Map, Value, json};
use squall_aliases::{
    AliasError, AnchorSide, extract_parameters, inject_immutable_parameters, search_regex_tokens,
};

fn extract(format: &str, stream: &str) -> Value {
    Value::Object(extract_parameters(format, stream).unwrap())
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("test data is an object"),
    }
}

// ---- TestActionAliasParser -------------------------------------------------

#[test]
fn test_empty_string() {
    assert_eq!(extract("", ""), json!({}));
}

#[test]
fn test_arbitrary_pairs() {
    // single-word param
    assert_eq!(extract("", "a=foobar1"), json!({"a": "foobar1"}));
    // multi-word double-quoted param
    assert_eq!(
        extract("foo", r#"foo a="foobar2 poonies bar""#),
        json!({"a": "foobar2 poonies bar"})
    );
    // multi-word single-quoted param
    assert_eq!(
        extract("foo", "foo a='foobar2 poonies bar'"),
        json!({"a": "foobar2 poonies bar"})
    );
    // JSON param
    assert_eq!(
        extract("foo", r#"foo a={"foobar2": "poonies"}"#),
        json!({"a": r#"{"foobar2": "poonies"}"#})
    );
    // Multiple mixed params
    assert_eq!(
        extract(
            "",
            r#"a=foobar1 b="boobar2 3 4" c='coobar3 4' d={"a": "b"}"#
        ),
        json!({"a": "foobar1", "b": "boobar2 3 4", "c": "coobar3 4", "d": r#"{"a": "b"}"#})
    );
    // Params along with a "normal" alias format
    assert_eq!(
        extract(
            "{{ captain }} is my captain",
            r#"Malcolm Reynolds is my captain weirdo="River Tam""#
        ),
        json!({"captain": "Malcolm Reynolds", "weirdo": "River Tam"})
    );
}

#[test]
fn test_simple_parsing() {
    assert_eq!(
        extract(
            "skip {{a}} more skip {{b}} and skip more.",
            "skip a1 more skip b1 and skip more."
        ),
        json!({"a": "a1", "b": "b1"})
    );
}

#[test]
fn test_end_string_parsing() {
    assert_eq!(
        extract("skip {{a}} more skip {{b}}", "skip a1 more skip b1"),
        json!({"a": "a1", "b": "b1"})
    );
}

#[test]
fn test_spaced_parsing() {
    assert_eq!(
        extract(
            "skip {{a}} more skip {{b}} and skip more.",
            r#"skip "a1 a2" more skip b1 and skip more."#
        ),
        json!({"a": "a1 a2", "b": "b1"})
    );
}

#[test]
fn test_default_values() {
    assert_eq!(
        extract("acl {{a}} {{b}} {{c}} {{d=1}}", r#"acl "a1 a2" "b1" "c1""#),
        json!({"a": "a1 a2", "b": "b1", "c": "c1", "d": "1"})
    );
}

#[test]
fn test_spacing() {
    assert_eq!(extract("acl {{a=test}}", "acl"), json!({"a": "test"}));
}

#[test]
fn test_json_parsing() {
    assert_eq!(
        extract(
            "skip {{a}} more skip.",
            r#"skip {"a": "b", "c": "d"} more skip."#
        ),
        json!({"a": r#"{"a": "b", "c": "d"}"#})
    );
}

#[test]
fn test_mixed_parsing() {
    assert_eq!(
        extract(
            "skip {{a}} more skip {{b}}.",
            r#"skip {"a": "b", "c": "d"} more skip x."#
        ),
        json!({"a": r#"{"a": "b", "c": "d"}"#, "b": "x"})
    );
}

#[test]
fn test_param_spaces() {
    assert_eq!(
        extract(
            "s {{a}} more {{ b }} more {{ c=99 }} more {{ d = 99 }}",
            "s one more two more three more"
        ),
        json!({"a": "one", "b": "two", "c": "three", "d": "99"})
    );
}

#[test]
fn test_enclosed_defaults() {
    assert_eq!(
        extract("skip {{ a = value }} more", "skip one more"),
        json!({"a": "one"})
    );
    assert_eq!(
        extract("skip {{ a = value }} more", "skip more"),
        json!({"a": "value"})
    );
}

#[test]
fn test_template_defaults() {
    assert_eq!(
        extract(
            "two by two hands of {{ color = {{ colors.default_color }} }}",
            "two by two hands of"
        ),
        json!({"color": "{{ colors.default_color }}"})
    );
}

#[test]
fn test_key_value_combinations() {
    // one-word value, single extra pair
    assert_eq!(
        extract("testing {{ a }}", "testing value b=value2"),
        json!({"a": "value", "b": "value2"})
    );
    // default value, single extra pair with quotes
    assert_eq!(
        extract("testing {{ a=new }}", r#"testing b="another value""#),
        json!({"a": "new", "b": "another value"})
    );
    // multiple values and multiple extra pairs
    assert_eq!(
        extract(
            "testing {{ b=abc }} {{ c=xyz }}",
            r#"testing newvalue d={"1": "2"} e="long value""#
        ),
        json!({"b": "newvalue", "c": "xyz", "d": r#"{"1": "2"}"#, "e": "long value"})
    );
}

#[test]
fn test_stream_is_none_with_all_default_values() {
    assert_eq!(
        extract("skip {{d=test1}} more skip {{e=test1}}.", "skip more skip"),
        json!({"d": "test1", "e": "test1"})
    );
}

#[test]
fn test_stream_is_not_none_some_default_values() {
    assert_eq!(
        extract(
            "skip {{d=test}} more skip {{e=test}}",
            "skip ponies more skip"
        ),
        json!({"d": "ponies", "e": "test"})
    );
}

#[test]
fn test_stream_is_none_no_default_values() {
    // Python passes None, which the parser turns into "".
    let err = extract_parameters("skip {{d}} more skip {{e}}.", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Command "" doesn't match format string "skip {{d}} more skip {{e}}.""#
    );
}

#[test]
fn test_all_the_things() {
    // this is the most insane example I could come up with
    let format = "{{ p0='http' }} g {{ p1=p }} a {{ url }} {{ p2={'a':'b'} }} {{ p3={{ e.i }} }}";
    let stream = "g a http://google.com {{ execution.id }} p4='testing' p5={'a':'c'}";
    assert_eq!(
        extract(format, stream),
        json!({
            "p0": "http", "p1": "p",
            "url": "http://google.com",
            "p2": "{{ execution.id }}",
            "p3": "{{ e.i }}",
            "p4": "testing", "p5": "{'a':'c'}"
        })
    );
}

#[test]
fn test_command_doesnt_match_format_string() {
    let err = extract_parameters("foo bar ponies", "foo lulz ponies").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Command "foo lulz ponies" doesn't match format string "foo bar ponies""#
    );
}

#[test]
fn test_ending_parameters_matching() {
    assert_eq!(
        extract("foo bar", "foo bar pony1=foo pony2=bar"),
        json!({"pony1": "foo", "pony2": "bar"})
    );
}

#[test]
fn test_regex_beginning_anchors() {
    assert_eq!(
        extract(
            r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)",
            "foo ASDF-1234"
        ),
        json!({"issue_key": "ASDF-1234"})
    );
}

#[test]
fn test_regex_beginning_anchors_dont_match() {
    let format = r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)";
    let err = extract_parameters(format, "bar foo ASDF-1234").unwrap_err();
    assert_eq!(
        err,
        AliasError::NoMatch {
            command: "bar foo ASDF-1234".into(),
            format: format.into()
        }
    );
}

#[test]
fn test_regex_ending_anchors() {
    assert_eq!(
        extract(
            r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$",
            "foo ASDF-1234"
        ),
        json!({"issue_key": "ASDF-1234"})
    );
}

#[test]
fn test_regex_ending_anchors_dont_match() {
    let format = r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$";
    let err = extract_parameters(format, "foo ASDF-1234 bar").unwrap_err();
    assert_eq!(
        err,
        AliasError::NoMatch {
            command: "foo ASDF-1234 bar".into(),
            format: format.into()
        }
    );
}

#[test]
fn test_regex_beginning_and_ending_anchors() {
    assert_eq!(
        extract(
            r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+) bar\s*$",
            "foo ASDF-1234 bar"
        ),
        json!({"issue_key": "ASDF-1234"})
    );
}

#[test]
fn test_regex_beginning_and_ending_anchors_dont_match() {
    let format = r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$";
    let err = extract_parameters(format, "bar ASDF-1234").unwrap_err();
    assert_eq!(
        err,
        AliasError::NoMatch {
            command: "bar ASDF-1234".into(),
            format: format.into()
        }
    );
}

// ---- TestSearchRegexTokens -------------------------------------------------

#[test]
fn test_beginning_tokens() {
    assert!(search_regex_tokens("^asdf", AnchorSide::Beginning).unwrap());
}

#[test]
fn test_no_ending_tokens() {
    assert!(!search_regex_tokens("^asdf", AnchorSide::End).unwrap());
}

#[test]
fn test_no_beginning_or_ending_tokens() {
    assert!(!search_regex_tokens("asdf", AnchorSide::Beginning).unwrap());
    assert!(!search_regex_tokens("asdf", AnchorSide::End).unwrap());
}

#[test]
fn test_backwards() {
    // The Python search direction only changes the order of the scan.
    assert!(search_regex_tokens("^asdf$", AnchorSide::End).unwrap());
}

#[test]
fn test_branches() {
    assert!(search_regex_tokens("^asdf|fdsa$", AnchorSide::End).unwrap());
}

#[test]
fn test_subpatterns() {
    assert!(search_regex_tokens("^(?:asdf|fdsa$)", AnchorSide::End).unwrap());
}

// ---- TestInjectImmutableParameters ------------------------------------------

#[test]
fn test_immutable_parameters_are_injected() {
    let immutable = map(json!({"env": "dev"}));
    let mut exec_params = vec![map(json!({"param1": "value1", "param2": "value2"}))];
    inject_immutable_parameters(&immutable, &mut exec_params).unwrap();
    assert_eq!(
        exec_params,
        vec![map(
            json!({"param1": "value1", "param2": "value2", "env": "dev"})
        )]
    );
}

#[test]
fn test_immutable_parameters_with_jinja() {
    // st2 renders `{{ "dev" + "1" }}` to "dev1" with Jinja. This crate is
    // pure and has no template engine: the value is injected verbatim and
    // rendering is left to the caller.
    let immutable = map(json!({"env": "{{ \"dev\" + \"1\" }}"}));
    let mut exec_params = vec![map(json!({"param1": "value1", "param2": "value2"}))];
    inject_immutable_parameters(&immutable, &mut exec_params).unwrap();
    assert_eq!(
        exec_params,
        vec![map(
            json!({"param1": "value1", "param2": "value2", "env": "{{ \"dev\" + \"1\" }}"})
        )]
    );
}

#[test]
fn test_override_raises_error() {
    let immutable = map(json!({"env": "dev"}));
    let mut exec_params = vec![map(json!({"param1": "value1", "env": "prod"}))];
    let err = inject_immutable_parameters(&immutable, &mut exec_params).unwrap_err();
    assert_eq!(
        err,
        AliasError::ImmutableOverride {
            parameters: vec!["env".into()]
        }
    );
}
