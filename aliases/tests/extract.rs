//! The st2-compatible primitives beyond the ported st2 vectors.

use serde_json::json;
use squall_aliases::{AliasError, extract_all_parameters, extract_parameters};

#[test]
fn an_author_anchored_format_yields_every_occurrence() {
    let format = r"(?:\b|^)fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\b|$)";
    let all = extract_all_parameters(
        format,
        "JKROWLING-4 fixes JRRTOLKIEN-24 which fixes DRSEUSS-12",
    )
    .unwrap();
    let keys: Vec<_> = all.iter().map(|m| m["issue_key"].clone()).collect();
    assert_eq!(keys, [json!("JRRTOLKIEN-24"), json!("DRSEUSS-12")]);
}

#[test]
fn an_unanchored_format_occurs_at_most_once() {
    let all = extract_all_parameters("fixes {{key}}", "fixes A-1 fixes B-2").unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["key"], json!("A-1 fixes B-2"));
}

#[test]
fn an_invalid_format_is_reported_with_its_reason() {
    let err = extract_parameters("run (?<=x){{a}}", "run y").unwrap_err();
    assert!(matches!(
        &err,
        AliasError::InvalidFormat { alias_id: None, format, reason }
            if format == "run (?<=x){{a}}" && reason.contains("look-behind")
    ));
    assert!(
        err.to_string()
            .starts_with("invalid format \"run (?<=x){{a}}\": look-behind")
    );
}

#[test]
fn format_text_is_a_python_regex() {
    // st2 compiles the whole format as a regex: `?` makes the `l` optional
    // (and is not a literal question mark), `.` matches any character.
    let f = "How do I feel? I feel... {{status}}!";
    assert_eq!(
        extract_parameters(f, "How do I feel I feel... alive!").unwrap()["status"],
        json!("alive")
    );
    assert_eq!(
        extract_parameters(f, "How do I fee I feel!!! ok!").unwrap()["status"],
        json!("ok")
    );
    assert!(extract_parameters(f, "How do I feel? I feel... alive!").is_err());
}

#[test]
fn an_empty_default_is_an_empty_string() {
    assert_eq!(
        extract_parameters(r#"say {{msg=""}}"#, "say").unwrap()["msg"],
        json!("")
    );
}

#[test]
fn a_format_that_captures_nothing_from_nothing_is_refused_like_st2() {
    assert_eq!(
        extract_parameters(r#"{{msg=""}}"#, ""),
        Err(AliasError::NoValue)
    );
}
