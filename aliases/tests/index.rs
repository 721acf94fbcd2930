//! Behaviour of `AliasIndex`: matching, resolution, errors and help.
//! Where a case comes from st2's own tests (actionalias matching, alias
//! execution fixtures) the comment says so.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use squall_aliases::{AliasDef, AliasError, AliasIndex, FormatDef, MatchError, ParamType};

fn alias(id: &str, formats: &[&str]) -> AliasDef {
    AliasDef {
        id: id.into(),
        description: format!("{id} description"),
        formats: formats.iter().map(|f| FormatDef::plain(*f)).collect(),
        ..Default::default()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("test data is an object"),
    }
}

fn types(pairs: &[(&str, ParamType)]) -> BTreeMap<String, ParamType> {
    pairs.iter().map(|(k, t)| (k.to_string(), *t)).collect()
}

fn index(defs: Vec<AliasDef>) -> AliasIndex {
    AliasIndex::build(defs).unwrap()
}

fn deploy_index() -> AliasIndex {
    index(vec![
        alias("ops.deploy", &["deploy {{app}} to {{env=staging}}"]),
        alias("ops.restart", &["restart service {{name}} on {{host}}"]),
    ])
}

#[test]
fn required_and_optional_parameters_are_extracted() {
    let m = deploy_index().match_command("deploy web to prod").unwrap();
    assert_eq!(m.alias_id, "ops.deploy");
    assert_eq!(m.format_index, 0);
    assert_eq!(m.parameters, obj(json!({"app": "web", "env": "prod"})));
    assert!(m.additional_parameters.is_empty());
}

#[test]
fn optional_parameter_can_be_omitted() {
    let idx = deploy_index();
    // Only the placeholder (and the whitespace before it) is optional; the
    // literal words around it are not, exactly as in st2.
    let m = idx.match_command("deploy web to").unwrap();
    assert_eq!(m.parameters, obj(json!({"app": "web", "env": "staging"})));
    assert!(idx.match_command("deploy web").is_err());
    let idx = index(vec![alias(
        "ops.deploy",
        &["deploy {{app}} {{env=staging}}"],
    )]);
    let m = idx.match_command("deploy web").unwrap();
    assert_eq!(m.parameters, obj(json!({"app": "web", "env": "staging"})));
}

#[test]
fn quoted_and_json_values_are_single_parameters() {
    let idx = deploy_index();
    let m = idx
        .match_command(r#"deploy "my app" to 'eu west'"#)
        .unwrap();
    assert_eq!(
        m.parameters,
        obj(json!({"app": "my app", "env": "eu west"}))
    );
    let m = idx
        .match_command(r#"deploy {"a": 1, "b": 2} to prod"#)
        .unwrap();
    assert_eq!(m.parameters["app"], json!(r#"{"a": 1, "b": 2}"#));
}

#[test]
fn trailing_extras_set_any_parameter_and_win_over_the_format() {
    let m = deploy_index()
        .match_command(r#"restart service nginx on web1 timeout=30 note="be careful" host=web2"#)
        .unwrap();
    assert_eq!(
        m.parameters,
        obj(json!({"name": "nginx", "host": "web2", "timeout": "30", "note": "be careful"}))
    );
}

#[test]
fn matching_is_case_sensitive_like_st2_and_suggests_the_right_format() {
    let err = deploy_index().match_command("Deploy web").unwrap_err();
    assert_eq!(
        err,
        MatchError::NoMatch {
            suggestion: Some("deploy {{app}} to {{env=staging}}".into())
        }
    );
}

#[test]
fn a_typo_in_the_leading_word_gets_the_closest_display_as_suggestion() {
    let idx = index(vec![AliasDef {
        formats: vec![FormatDef::with_display(
            "restart <service> on <host>",
            ["restart service {{name}} on {{host}}"],
        )],
        ..alias("ops.restart", &[])
    }]);
    let err = idx
        .match_command("restrat service nginx on web1")
        .unwrap_err();
    assert_eq!(
        err,
        MatchError::NoMatch {
            suggestion: Some("restart <service> on <host>".into())
        }
    );
    assert!(
        err.to_string()
            .contains("Did you mean `restart <service> on <host>`?")
    );
}

#[test]
fn an_unrelated_command_gets_no_suggestion() {
    let err = deploy_index()
        .match_command("frobnicate the widget")
        .unwrap_err();
    assert_eq!(err, MatchError::NoMatch { suggestion: None });
}

#[test]
fn a_command_stopping_before_a_required_parameter_reports_usage() {
    let idx = deploy_index();
    let err = idx.match_command("deploy").unwrap_err();
    assert_eq!(
        err,
        MatchError::MissingParameter {
            alias_id: "ops.deploy".into(),
            parameter: "app".into(),
            usage: "deploy {{app}} to {{env=staging}}".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "Missing value for `app`. Usage: `deploy {{app}} to {{env=staging}}`"
    );
    let err = idx.match_command("restart service nginx").unwrap_err();
    assert!(
        matches!(err, MatchError::MissingParameter { ref parameter, .. } if parameter == "host")
    );
    // Leading words that differ from every format are not a missing parameter.
    let err = idx.match_command("restart nginx").unwrap_err();
    assert!(matches!(err, MatchError::NoMatch { .. }), "{err:?}");
}

#[test]
fn every_format_and_representation_of_an_alias_can_match() {
    let idx = index(vec![AliasDef {
        formats: vec![
            FormatDef::plain("scale {{app}} to {{count}}"),
            FormatDef::with_display(
                "grow <app> by <count>",
                ["grow {{app}} by {{count}}", "grow {{app}} +{{count}}"],
            ),
        ],
        param_types: types(&[("count", ParamType::Integer)]),
        ..alias("ops.scale", &[])
    }]);
    let m = idx.match_command("scale web to 3").unwrap();
    assert_eq!(
        (m.format_index, m.parameters["count"].clone()),
        (0, json!(3))
    );
    let m = idx.match_command("grow web +2").unwrap();
    assert_eq!(m.format_index, 1);
    assert_eq!(m.representation, "grow {{app}} +{{count}}");
    assert_eq!(m.display, "grow <app> by <count>");
    assert_eq!(m.parameters, obj(json!({"app": "web", "count": 2})));
}

#[test]
fn two_formats_of_one_alias_matching_is_not_ambiguous_and_the_first_wins() {
    // hubot-stackstorm's fixture: both formats match "alias4 fmt1 a word b".
    let idx = index(vec![alias(
        "p.alias4",
        &[
            "alias4 fmt1 {{param1}} word {{param2}}",
            "alias4 fmt1 {{param1}}",
        ],
    )]);
    let m = idx.match_command("alias4 fmt1 a word b").unwrap();
    assert_eq!(m.format_index, 0);
    assert_eq!(m.parameters, obj(json!({"param1": "a", "param2": "b"})));
}

#[test]
fn two_aliases_matching_is_ambiguous_and_names_both() {
    // st2 test_match_and_execute_matches_many with fixtures alias1/alias2.
    let idx = index(vec![
        alias(
            "aliases.alias1",
            &["Lorem ipsum {{param1}} dolor sit {{param2}} amet."],
        ),
        AliasDef {
            formats: vec![FormatDef::with_display(
                "Help entry doesn't matter.",
                ["Lorem ipsum {{param1}} dolor sit {{param3}} amet."],
            )],
            ..alias("aliases.alias2", &[])
        },
    ]);
    let err = idx
        .match_command("Lorem ipsum banana dolor sit pineapple amet.")
        .unwrap_err();
    assert_eq!(
        err,
        MatchError::Ambiguous {
            candidates: vec![
                "aliases.alias1: Lorem ipsum {{param1}} dolor sit {{param2}} amet.".into(),
                "aliases.alias2: Help entry doesn't matter.".into(),
            ]
        }
    );
    assert!(
        err.to_string()
            .starts_with("That command matches more than one action")
    );
}

#[test]
fn array_parameters_are_split_on_commas() {
    // st2 test_execution_with_array_type_{single,multi}_value.
    let idx = index(vec![AliasDef {
        param_types: types(&[("param3", ParamType::Array)]),
        ..alias(
            "aliases.alias2",
            &["Lorem ipsum {{param1}} dolor sit {{param3}} amet."],
        )
    }]);
    let m = idx
        .match_command("Lorem ipsum value1 dolor sit value2 amet.")
        .unwrap();
    assert_eq!(
        m.parameters,
        obj(json!({"param1": "value1", "param3": ["value2"]}))
    );
    let m = idx
        .match_command(r#"Lorem ipsum value1 dolor sit "value2, value3" amet."#)
        .unwrap();
    assert_eq!(m.parameters["param3"], json!(["value2", "value3"]));
}

#[test]
fn values_are_cast_to_action_types() {
    let idx = index(vec![AliasDef {
        param_types: types(&[
            ("n", ParamType::Integer),
            ("ratio", ParamType::Number),
            ("force", ParamType::Boolean),
            ("meta", ParamType::Object),
        ]),
        ..alias("p.run", &["run {{n}} {{ratio}} {{force=no}}"])
    }]);
    let m = idx
        .match_command(r#"run 3 0.5 YES meta={"a": [1]}"#)
        .unwrap();
    assert_eq!(
        m.parameters,
        obj(json!({"n": 3, "ratio": 0.5, "force": true, "meta": {"a": [1]}}))
    );
    let m = idx.match_command("run 3 1").unwrap();
    assert_eq!(m.parameters["force"], json!(false));
}

#[test]
fn a_bad_value_names_the_parameter_and_expected_type() {
    let idx = index(vec![AliasDef {
        param_types: types(&[("count", ParamType::Integer)]),
        ..alias("ops.scale", &["scale {{app}} to {{count}}"])
    }]);
    let err = idx.match_command("scale web to lots").unwrap_err();
    let MatchError::BadValue {
        ref parameter,
        ref reason,
        ..
    } = err
    else {
        panic!("expected BadValue, got {err:?}");
    };
    assert_eq!(parameter, "count");
    assert!(
        reason.contains("whole number") && reason.contains("lots"),
        "{reason}"
    );
    assert!(
        err.to_string()
            .starts_with("Invalid value for `count`: expected a whole number")
    );
}

#[test]
fn immutable_parameters_are_added_and_cast() {
    // st2 test_basic_execution_with_immutable_parameters and
    // test_match_and_execute_list_action_param_str_cast_to_list.
    let idx = index(vec![
        AliasDef {
            immutable_parameters: obj(json!({"param1": "value1", "param2": "value2"})),
            ..alias("aliases.alias5", &["lorem ipsum"])
        },
        AliasDef {
            immutable_parameters: obj(json!({"array_param": "one,two,three,four,give"})),
            param_types: types(&[("array_param", ParamType::Array)]),
            ..alias("aliases.cast", &["test alias list param str cast"])
        },
    ]);
    let m = idx.match_command("lorem ipsum").unwrap();
    assert_eq!(
        m.parameters,
        obj(json!({"param1": "value1", "param2": "value2"}))
    );
    let m = idx.match_command("test alias list param str cast").unwrap();
    assert_eq!(
        m.parameters["array_param"],
        json!(["one", "two", "three", "four", "give"])
    );
}

#[test]
fn setting_an_immutable_parameter_is_refused_by_name() {
    let idx = index(vec![AliasDef {
        immutable_parameters: obj(json!({"env": "prod"})),
        ..alias("ops.ship", &["ship {{app}} {{env=staging}}"])
    }]);
    // Through an extra.
    let err = idx.match_command("ship web env=dev").unwrap_err();
    assert_eq!(
        err,
        MatchError::ImmutableParameter {
            alias_id: "ops.ship".into(),
            parameter: "env".into()
        }
    );
    assert!(err.to_string().contains("`env` is fixed by ops.ship"));
    // Through the format.
    let err = idx.match_command("ship web dev").unwrap_err();
    assert!(
        matches!(err, MatchError::ImmutableParameter { ref parameter, .. } if parameter == "env")
    );
    // The alias's own default does not count as the user setting it.
    let m = idx.match_command("ship web").unwrap();
    assert_eq!(m.parameters, obj(json!({"app": "web", "env": "prod"})));
}

#[test]
fn match_multiple_yields_one_parameter_set_per_occurrence() {
    // st2 test_match_and_execute_matches_one_multiple_match.
    let idx = index(vec![
        alias(
            "aliases.alias1",
            &["Lorem ipsum {{param1}} dolor sit {{param2}} amet."],
        ),
        AliasDef {
            formats: vec![FormatDef::with_display(
                "duplicate of <issue_key>",
                [r"(?:\b|^)duplicate of (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\b|$)"],
            )],
            match_multiple: true,
            ..alias("aliases.alias_match_multiple", &[])
        },
    ]);
    let m = idx
        .match_command(
            "JKROWLING-4 is a duplicate of JRRTOLKIEN-24 which is a duplicate of DRSEUSS-12",
        )
        .unwrap();
    assert_eq!(m.alias_id, "aliases.alias_match_multiple");
    let sets: Vec<_> = m.parameter_sets().cloned().collect();
    assert_eq!(
        sets,
        vec![
            obj(json!({"issue_key": "JRRTOLKIEN-24"})),
            obj(json!({"issue_key": "DRSEUSS-12"}))
        ]
    );
}

#[test]
fn match_multiple_aliases_are_ambiguous_among_themselves() {
    // st2 test_match_and_execute_matches_many_multiple_match.
    let fixes = |id: &str| AliasDef {
        formats: vec![FormatDef::with_display(
            "fixes <issue_key>",
            [r"(?:\b|^)fixes (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)(?:\b|$)"],
        )],
        match_multiple: true,
        ..alias(id, &[])
    };
    let idx = index(vec![fixes("aliases.fixes1"), fixes("aliases.fixes2")]);
    let err = idx
        .match_command("JKROWLING-4 fixes JRRTOLKIEN-24 which fixes DRSEUSS-12")
        .unwrap_err();
    assert!(matches!(err, MatchError::Ambiguous { ref candidates } if candidates.len() == 2));
}

#[test]
fn match_multiple_aliases_are_only_tried_when_nothing_else_matches() {
    let idx = index(vec![
        alias("p.plain", &["fixes {{what}}"]),
        AliasDef {
            formats: vec![FormatDef::plain(
                r"(?:\b|^)fixes (?P<key>[A-Z]+-\d+)(?:\b|$)",
            )],
            match_multiple: true,
            ..alias("p.multi", &[])
        },
    ]);
    assert_eq!(
        idx.match_command("fixes ABC-1").unwrap().alias_id,
        "p.plain"
    );
    assert_eq!(
        idx.match_command("this fixes ABC-1").unwrap().alias_id,
        "p.multi"
    );
}

#[test]
fn formats_starting_with_a_parameter_are_still_matched() {
    // st2 test_matching (actionalias_matching).
    let idx = index(vec![
        alias("ghostbusters.1", &["{{choice}} cross the {{target}}"]),
        alias("ops.deploy", &["deploy {{app}}"]),
    ]);
    let m = idx.match_command("Don't cross the streams").unwrap();
    assert_eq!(m.alias_id, "ghostbusters.1");
    assert_eq!(m.representation, "{{choice}} cross the {{target}}");
    assert_eq!(
        m.parameters,
        obj(json!({"choice": "Don't", "target": "streams"}))
    );
}

#[test]
fn formats_differing_only_in_their_leading_word_stay_distinct() {
    // Such formats share one compiled regex internally; the leading word is
    // still what selects the alias.
    let idx = index(vec![
        alias("p.one", &["deploy1 {{app}} to {{env=dev}}"]),
        alias("p.two", &["deploy2 {{app}} to {{env=dev}}"]),
        alias("p.other", &["ship {{app}} to {{env=dev}}"]),
    ]);
    let m = idx.match_command("deploy2 web to prod").unwrap();
    assert_eq!(
        (m.alias_id.as_str(), m.parameters["app"].clone()),
        ("p.two", json!("web"))
    );
    assert_eq!(
        idx.match_command("ship web to").unwrap().alias_id,
        "p.other"
    );
    assert!(matches!(
        idx.match_command("deploy3 web to prod"),
        Err(MatchError::NoMatch { .. })
    ));
}

#[test]
fn formats_glued_to_a_parameter_match_by_prefix() {
    let idx = index(vec![alias("p.ticket", &["ticket#{{id}}"])]);
    let m = idx.match_command("ticket#42").unwrap();
    assert_eq!(m.parameters, obj(json!({"id": "42"})));
}

#[test]
fn build_reports_every_bad_format_with_alias_and_reason() {
    let errors = AliasIndex::build(vec![
        alias("p.good", &["ok {{a}}"]),
        alias(
            "p.bad",
            &["look (?=ahead) {{a}}", "fine {{b}}", "dup {{x}} {{x}}"],
        ),
        alias("p.good", &["again"]),
    ])
    .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(matches!(
        &errors[0],
        AliasError::InvalidFormat { alias_id: Some(id), format, reason }
            if id == "p.bad" && format == "look (?=ahead) {{a}}" && reason.contains("look-ahead")
    ));
    assert!(
        errors[1]
            .to_string()
            .starts_with("alias p.bad: invalid format \"dup {{x}} {{x}}\"")
    );
    assert_eq!(
        errors[2],
        AliasError::DuplicateAlias {
            alias_id: "p.good".into()
        }
    );
}

#[test]
fn lenient_build_keeps_the_good_formats() {
    let (idx, errors) = AliasIndex::build_lenient(vec![alias("p.mixed", &["bad (", "good {{a}}"])]);
    assert_eq!(errors.len(), 1);
    assert_eq!((idx.len(), idx.format_count()), (1, 1));
    assert_eq!(idx.match_command("good x").unwrap().alias_id, "p.mixed");
}

#[test]
fn help_lists_every_format_and_filters_by_substring() {
    let idx = index(vec![
        AliasDef {
            formats: vec![
                FormatDef::with_display("deploy <app>", ["deploy {{app}}"]),
                FormatDef {
                    display: Some("rollback (help only)".into()),
                    representations: vec![],
                },
            ],
            ..alias("ops.deploy", &[])
        },
        alias("ops.restart", &["restart {{svc}}"]),
    ]);
    let all = idx.help_entries(None);
    let displays: Vec<_> = all.iter().map(|e| e.display.as_str()).collect();
    assert_eq!(
        displays,
        ["deploy <app>", "rollback (help only)", "restart {{svc}}"]
    );
    assert_eq!(all[0].description, "ops.deploy description");
    let filtered = idx.help_entries(Some("ROLLBACK"));
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].alias_id, "ops.deploy");
    // The alias id or description matches every format of that alias.
    assert_eq!(idx.help_entries(Some("ops.restart")).len(), 1);
    assert_eq!(idx.help_entries(Some("")).len(), 3);
}

#[test]
fn the_most_specific_representation_of_one_alias_wins() {
    // Listed with the looser representation first, as packs often are.
    let idx = index(vec![alias(
        "mysql.processlist",
        &[
            "show mysql processlist {{ hosts=db }}",
            "show mysql processlist on {{ hosts }}",
        ],
    )]);
    let m = idx.match_command("show mysql processlist on db2").unwrap();
    assert_eq!(m.parameters, obj(json!({"hosts": "db2"})));
    assert_eq!(m.representation, "show mysql processlist on {{ hosts }}");
    let m = idx.match_command("show mysql processlist").unwrap();
    assert_eq!(m.parameters, obj(json!({"hosts": "db"})));
    let m = idx.match_command("show mysql processlist db3").unwrap();
    assert_eq!(m.parameters, obj(json!({"hosts": "db3"})));
}

#[test]
fn equally_specific_representations_of_one_alias_are_an_ambiguity() {
    let idx = index(vec![alias(
        "ops.run",
        &["run {{ a }} now", "run now {{ a }}"],
    )]);
    match idx.match_command("run now now") {
        Err(MatchError::Ambiguous { candidates }) => assert_eq!(
            candidates,
            ["ops.run: run {{ a }} now", "ops.run: run now {{ a }}"]
        ),
        other => panic!("expected an ambiguity, got {other:?}"),
    }
    // Where only one matches there is nothing to decide.
    let m = idx.match_command("run later now").unwrap();
    assert_eq!(m.parameters, obj(json!({"a": "later"})));
}

#[test]
fn hostile_input_gets_a_plain_answer() {
    let idx = deploy_index();
    let long_app = "a".repeat(100_000);
    // Text that is not a command of the index: a plain "no match".
    for text in [
        "".to_owned(),
        "   ".to_owned(),
        "=".to_owned(),
        "a=".to_owned(),
        "deploy \"".to_owned(),
        "deploy '".to_owned(),
        "deploy {".to_owned(),
        "x=\"unterminated".to_owned(),
        "deploy ".repeat(2000),
        long_app.clone(),
        "k=v ".repeat(5_000),
        "déploy wéb to prød".to_owned(),
        "deploy\u{0}web".to_owned(),
    ] {
        match idx.match_command(&text) {
            Err(MatchError::NoMatch { .. }) => {}
            other => panic!(
                "{:?}: expected no match, got {other:?}",
                &text[..text.len().min(40)]
            ),
        }
    }
    // Text that is a command, however odd its values.
    let m = idx
        .match_command(&format!("deploy {long_app} to prod"))
        .expect("a long value is still a value");
    assert_eq!(m.parameters["app"], long_app.as_str());
    assert_eq!(m.parameters["env"], "prod");
    let m = idx
        .match_command("deploy wéb to prød")
        .expect("non-ASCII values");
    assert_eq!(m.parameters, obj(json!({"app": "wéb", "env": "prød"})));
    let m = idx
        .match_command("deploy \"web app\" to prod")
        .expect("a quoted value");
    assert_eq!(m.parameters["app"], "web app");
    // A NUL byte is just a character: it does not end the text.
    let m = idx
        .match_command("deploy w\u{0}b to prod")
        .expect("NUL inside a value");
    assert_eq!(m.parameters["app"], "w\u{0}b");
}
