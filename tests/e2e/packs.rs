//! `squall pack validate` as a user runs it.

use anyhow::{Context, Result};
use squall_engine::runners::RunnerRegistry;
use squall_tests::{Backend, repo_root, squall_binary};

use crate::server::TestServer;

/// The packs under `roots`, by directory name (a pack is a directory with a
/// pack.yaml): what a validation must count.
fn pack_dirs_in(roots: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for root in roots {
        for entry in std::fs::read_dir(root)? {
            let path = entry?.path();
            if path.join("pack.yaml").is_file() {
                names.push(
                    path.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    names.sort();
    Ok(names)
}

#[test]
fn shipped_packs_validate() -> Result<()> {
    let roots = [
        repo_root().join("packs"),
        repo_root().join("tests/fixtures/packs"),
    ];
    let out = std::process::Command::new(squall_binary()?)
        .arg("pack")
        .arg("validate")
        .args(&roots)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dirs = pack_dirs_in(&roots)?;
    assert!(dirs.len() >= 5, "the shipped packs are missing: {dirs:?}");
    let expected = format!("ok: {} pack(s)", dirs.len());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&expected),
        "expected {expected:?}: {stdout}"
    );
    // The very packs of those directories loaded, each under its own name.
    let runners = squall_engine::builtin_runners();
    let catalog =
        squall_engine::load_catalog(&roots, &runners).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut loaded: Vec<String> = catalog.packs.iter().map(|p| p.meta.name.clone()).collect();
    loaded.sort();
    assert_eq!(loaded, dirs);
    Ok(())
}

#[test]
fn pack_with_three_mistakes_reports_all_three_with_file_and_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pack = dir.path().join("broken");
    std::fs::create_dir_all(pack.join("actions"))?;
    std::fs::create_dir_all(pack.join("rules"))?;
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: broken\nname: broken\ndescription: three mistakes\nversion: 0.1.0\n",
    )?;
    std::fs::write(
        pack.join("actions/a.yaml"),
        "name: a\nrunner_type: local-shell-cmmd\nparameters: {}\n",
    )?;
    std::fs::write(
        pack.join("actions/b.yaml"),
        "name: b\nrunner_type: noop\nparameters:\n  count:\n    type: integr\n    default: 1\n",
    )?;
    std::fs::write(
        pack.join("rules/r.yaml"),
        "name: r\ntrigger:\n  type: core.st2.webhook\n  parameters: {url: x}\naction:\n  ref: broken.missing\n",
    )?;
    let out = std::process::Command::new(squall_binary()?)
        .args(["pack", "validate"])
        .arg(&pack)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.last(), Some(&"3 error(s)"), "{stderr}");
    assert!(
        lines.iter().any(|l| l.contains("actions/a.yaml")
            && l.contains("runner_type")
            && l.contains("local-shell-cmmd")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("actions/b.yaml") && l.contains("parameters.count.type")),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.contains("rules/r.yaml")
            && l.contains("action.ref")
            && l.contains("broken.missing")),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn cli_run_executes_a_script_action_from_relatively_named_packs() -> Result<()> {
    let data = tempfile::tempdir()?;
    let run = |args: &[&str]| {
        std::process::Command::new(squall_binary()?)
            .current_dir(repo_root())
            .env("SQUALL_PACKS", "[\"packs\"]")
            .env("SQUALL_DATA_DIR", data.path())
            .args(args)
            .output()
            .map_err(anyhow::Error::from)
    };
    let out = run(&[
        "run",
        "examples.greet",
        "name=ada",
        "shout=true",
        "times=2",
        "--json",
    ])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(view["stdout"], "HELLO, ADA\nHELLO, ADA\n");
    assert_eq!(view["context"]["source"], "cli");

    let bad = run(&["run", "examples.greet", "name=ada", "times=many"])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("parameter 'times': expected integer (got \"many\")")
    );

    let listed = run(&["execution", "list", "--json"])?;
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the refused run stored nothing"
    );
    Ok(())
}

#[test]
fn cli_checks_permissions_and_matches_aliases() -> Result<()> {
    let run = |args: &[&str]| {
        std::process::Command::new(squall_binary()?)
            .current_dir(repo_root())
            .env("SQUALL_PACKS", "[\"packs\"]")
            .args(args)
            .output()
            .map_err(anyhow::Error::from)
    };
    let allowed = run(&["rbac", "check", "console:local", "alias:examples.deploy"])?;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    let denied = run(&["rbac", "check", "console:stranger", "alias:examples.deploy"])?;
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).contains("`alias:examples.deploy`"));
    let matched = run(&["alias", "match", "!deploy web to production"])?;
    let view: serde_json::Value = serde_json::from_slice(&matched.stdout)?;
    assert_eq!(view["action"], "examples.deploy");
    assert_eq!(
        view["parameters"],
        serde_json::json!({"app": "web", "environment": "production"})
    );
    let unknown = run(&["alias", "match", "deplyo web"])?;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("Did you mean"));
    Ok(())
}

/// A squall binary copied out of the checkout, run where there is no
/// `packs/`: the built-in `core` pack runs (its script included), and a
/// `core` pack of the user's own replaces it with a warning.
#[test]
fn a_copied_binary_runs_the_built_in_packs_outside_the_checkout() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("squall");
    std::fs::copy(squall_binary()?, &bin)?;
    let home = dir.path().join("home");
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .current_dir(dir.path())
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("SQUALL_PACKS")
            .env_remove("SQUALL_DATA_DIR")
            .env_remove("SQUALL_DATABASE_URL")
            .args(args)
            .output()
            .map_err(anyhow::Error::from)
    };
    let shown = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = run(&[
        "run",
        "core.local",
        "cmd=echo from the built-in core",
        "--json",
    ])?;
    assert!(out.status.success(), "{}", shown(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(view["stdout"], "from the built-in core\n");
    // core.local_script runs through a script shipped in the pack.
    let script = dir.path().join("hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho scripted\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    let out = run(&[
        "run",
        "core.local_script",
        &format!("script={}", script.display()),
        "--json",
    ])?;
    let view: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(view["status"], "succeeded", "{}", shown(&out));
    assert_eq!(view["stdout"], "scripted\n");
    // Written under the user's cache, not beside the binary.
    assert!(home.join(".cache/squall/builtin-packs").is_dir());
    let validated = run(&["pack", "validate"])?;
    assert!(validated.status.success(), "{}", shown(&validated));
    assert!(
        String::from_utf8_lossy(&validated.stdout).starts_with("ok: 2 pack(s)"),
        "{}",
        shown(&validated)
    );
    assert!(!shown(&validated).contains("replaces the built-in"));

    // The user's own `core` replaces the built-in one, loudly.
    let mine = dir.path().join("packs/core/actions");
    std::fs::create_dir_all(&mine)?;
    std::fs::write(
        dir.path().join("packs/core/pack.yaml"),
        "ref: core\nname: core\ndescription: my core\nversion: 1.0.0\n",
    )?;
    std::fs::write(
        mine.join("hello.yaml"),
        "name: hello\nrunner_type: local-shell-cmd\nparameters:\n  cmd:\n    type: string\n    default: echo my own core\n",
    )?;
    let out = run(&["run", "core.hello", "--json"])?;
    assert!(out.status.success(), "{}", shown(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(view["stdout"], "my own core\n");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("a configured pack replaces the built-in pack of the same name"),
        "{}",
        shown(&out)
    );
    let gone = run(&["run", "core.local", "cmd=true"])?;
    assert!(
        !gone.status.success(),
        "the built-in core was replaced whole"
    );
    Ok(())
}

/// The repository's own `packs/core` is the built-in pack: no warning.
#[test]
fn the_checkout_packs_are_the_built_in_ones() -> Result<()> {
    let out = std::process::Command::new(squall_binary()?)
        .current_dir(repo_root())
        .args(["pack", "validate", "packs"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("replaces the built-in"), "{stderr}");
    Ok(())
}

/// Each pack loads or is refused on its own, as StackStorm registers them:
/// `serve` starts with the good ones and shows the refused ones with their
/// errors; StackStorm's loose spots (a default of the wrong type, `immutable`
/// without a default) load with a warning.
#[tokio::test]
async fn a_broken_pack_is_refused_alone_and_the_rest_serve() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let write = |path: &str, text: &str| -> Result<()> {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(path, text)?;
        Ok(())
    };
    write(
        "good/pack.yaml",
        "ref: good\nname: good\ndescription: loads\nversion: 1.0.0\n",
    )?;
    write(
        "good/actions/flag.yaml",
        "name: flag\nrunner_type: local-shell-cmd\nparameters:\n  loud:\n    type: boolean\n    default: 0\n  port:\n    type: string\n    default: 8080\n  mode:\n    type: string\n    immutable: true\n  cmd:\n    default: echo loud={{ loud }} port={{ port }}\n",
    )?;
    write(
        "broken/pack.yaml",
        "ref: broken\nname: broken\ndescription: refused\nversion: 0.1.0\n",
    )?;
    write(
        "broken/actions/a.yaml",
        "name: a\nrunner_type: local-shell-cmmd\nparameters: {}\n",
    )?;
    write(
        "leaning/pack.yaml",
        "ref: leaning\nname: leaning\ndescription: uses broken\nversion: 0.2.0\n",
    )?;
    write(
        "leaning/rules/r.yaml",
        "name: r\ntrigger:\n  type: core.st2.webhook\n  parameters: {url: lean}\naction:\n  ref: broken.a\n",
    )?;
    let roots = vec![dir.path().to_path_buf()];

    // The catalog: good loads (its defaults cast, with warnings), broken and
    // leaning (which needs broken) are refused with their reasons.
    let catalog = squall_engine::load_catalog_lenient(&roots, &squall_engine::builtin_runners());
    let loaded: Vec<&str> = catalog.packs.iter().map(|p| p.meta.name.as_str()).collect();
    assert!(
        loaded.contains(&"good") && loaded.contains(&"core"),
        "{loaded:?}"
    );
    let refused: Vec<(Option<&str>, Vec<String>)> = catalog
        .refused
        .iter()
        .map(|r| {
            (
                r.name.as_deref(),
                r.errors.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    let broken = &refused
        .iter()
        .find(|r| r.0 == Some("broken"))
        .context("broken")?
        .1;
    assert!(broken[0].contains("local-shell-cmmd"), "{broken:?}");
    let leaning = &refused
        .iter()
        .find(|r| r.0 == Some("leaning"))
        .context("leaning")?
        .1;
    assert!(
        leaning[0].contains("action 'broken.a' is in pack 'broken', which was refused"),
        "{leaning:?}"
    );
    let warnings: Vec<String> = catalog.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("parameters.loud.default") && w.contains("using false")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("parameters.port.default") && w.contains("\"8080\"")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("parameters.mode.immutable")),
        "{warnings:?}"
    );

    // `pack validate` still fails, naming every problem.
    let out = std::process::Command::new(squall_binary()?)
        .args(["pack", "validate"])
        .arg(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused: broken"), "{stderr}");
    assert!(stderr.contains("refused: leaning"), "{stderr}");
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(stderr.ends_with("2 error(s)\n"), "{stderr}");

    // The server starts with the good packs and shows the refused ones.
    let server = TestServer::start_with(Backend::Sqlite, |c| c.packs = roots.clone()).await?;
    let (status, packs) = server.get("/api/v1/packs").await?;
    assert_eq!(status, 200);
    let state_of = |name: &str| {
        packs
            .as_array()
            .and_then(|a| a.iter().find(|p| p["ref"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(state_of("good")["state"], "loaded");
    assert_eq!(state_of("broken")["state"], "refused");
    assert!(
        state_of("broken")["errors"][0]
            .as_str()
            .unwrap_or_default()
            .contains("local-shell-cmmd"),
        "{packs}"
    );
    assert_eq!(state_of("leaning")["state"], "refused");
    let (status, created) = server
        .post("/api/v1/executions", r#"{"action": "good.flag"}"#)
        .await?;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().context("id")?;
    let done = server
        .engine
        .wait_for(id, std::time::Duration::from_secs(60))
        .await?;
    assert_eq!(done.stdout.as_deref(), Some("loud=false port=8080\n"));
    server.stop().await
}
