//! The packs built into the binary (`core` and `chatops`), so that a copied or
//! `cargo install`ed squall runs `core.local` without the repository.
//!
//! The loader reads packs from disk, and scripts run from their pack's
//! directory, so the built-in files are written once per content hash under
//! the user's cache directory and loaded from there, ahead of the configured
//! directories. A configured directory with a pack of the same name replaces
//! the built-in one: silently when its files are the same (the repository's
//! own `packs/`), with a warning otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::doc::Doc;
use super::loader::PackError;
use super::validate;

/// One file of a built-in pack, by its path inside the pack.
pub struct BuiltinFile {
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub executable: bool,
}

pub struct BuiltinPack {
    pub name: &'static str,
    pub files: &'static [BuiltinFile],
}

macro_rules! file {
    ($pack:literal, $path:literal) => {
        file!($pack, $path, false)
    };
    ($pack:literal, $path:literal, $executable:literal) => {
        BuiltinFile {
            path: $path,
            bytes: include_bytes!(concat!("../../../packs/", $pack, "/", $path)),
            executable: $executable,
        }
    };
}

/// Every file of `packs/core` and `packs/chatops` (a test checks that this
/// list and those directories agree).
pub const BUILTIN_PACKS: &[BuiltinPack] = &[
    BuiltinPack {
        name: "core",
        files: &[
            file!("core", "pack.yaml"),
            file!("core", "config.schema.yaml"),
            file!("core", "actions/ask.yaml"),
            file!("core", "actions/echo.yaml"),
            file!("core", "actions/http.yaml"),
            file!("core", "actions/announcement.yaml"),
            file!("core", "actions/inject_trigger.yaml"),
            file!("core", "actions/pause.yaml"),
            file!("core", "actions/sendmail.yaml"),
            file!("core", "actions/uuid.yaml"),
            file!("core", "actions/local.yaml"),
            file!("core", "actions/local_script.yaml"),
            file!("core", "actions/noop.yaml"),
            file!("core", "actions/scripts/run_script.sh", true),
        ],
    },
    BuiltinPack {
        name: "chatops",
        files: &[
            file!("chatops", "pack.yaml"),
            file!("chatops", "actions/post_message.yaml"),
        ],
    },
];

/// The pack directories to load ahead of `roots`: each built-in pack that no
/// pack under `roots` replaces.
pub fn builtin_pack_dirs(roots: &[PathBuf]) -> Result<Vec<PathBuf>, PackError> {
    let configured = configured_packs(roots);
    let kept: Vec<&BuiltinPack> = BUILTIN_PACKS
        .iter()
        .filter(|pack| match configured.get(pack.name) {
            None => true,
            Some(dir) => {
                if same_files(pack, dir) {
                    tracing::debug!(pack = pack.name, dir = %dir.display(), "a configured pack is the built-in one");
                } else {
                    tracing::warn!(
                        pack = pack.name,
                        dir = %dir.display(),
                        "a configured pack replaces the built-in pack of the same name"
                    );
                }
                false
            }
        })
        .collect();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let root = materialise(&cache_dir()?)?;
    Ok(kept.iter().map(|pack| root.join(pack.name)).collect())
}

/// Packs under `roots` by name (the first of a name wins; the loader reports
/// duplicates). Broken packs are left to the loader to report.
fn configured_packs(roots: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for root in roots {
        let dirs = if root.join("pack.yaml").is_file() {
            vec![root.clone()]
        } else {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("pack.yaml").is_file())
                .collect();
            dirs.sort();
            dirs
        };
        for dir in dirs {
            let (mut doc, map) = Doc::read(&dir.join("pack.yaml"));
            if let Some((meta, _)) = map.and_then(|m| validate::pack_meta(&mut doc, &m, &dir)) {
                found.entry(meta.name).or_insert(dir);
            }
        }
    }
    found
}

/// Whether `dir` holds exactly the built-in pack's files (hidden files aside).
fn same_files(pack: &BuiltinPack, dir: &Path) -> bool {
    let mut on_disk = BTreeMap::new();
    if collect_files(dir, dir, &mut on_disk).is_err() {
        return false;
    }
    let embedded: BTreeMap<String, &[u8]> = pack
        .files
        .iter()
        .map(|f| (f.path.to_string(), f.bytes))
        .collect();
    on_disk.len() == embedded.len()
        && on_disk
            .iter()
            .all(|(path, bytes)| embedded.get(path).is_some_and(|b| *b == bytes.as_slice()))
}

/// Files under `dir`, by their path relative to `base` with `/` separators.
pub(crate) fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            let rel = path.strip_prefix(base).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(rel, std::fs::read(&path)?);
        }
    }
    Ok(())
}

/// `$XDG_CACHE_HOME/squall/builtin-packs`, else `$HOME/.cache/squall/builtin-packs`:
/// the user's own directory, never a shared one where another user could
/// plant a script that `core.local_script` would run.
/// Whether a pack was loaded from the built-in packs (not a configured
/// directory).
pub fn is_builtin(pack_dir: &Path) -> bool {
    cache_dir().is_ok_and(|dir| pack_dir.starts_with(dir))
}

fn cache_dir() -> Result<PathBuf, PackError> {
    Ok(squall_cache_dir()?.join("builtin-packs"))
}

/// `$XDG_CACHE_HOME/squall`, else `$HOME/.cache/squall`: the user's own
/// directory for what squall writes once and reuses (built-in packs, the
/// python compatibility layer, pack virtualenvs).
pub(crate) fn squall_cache_dir() -> Result<PathBuf, PackError> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })
        .ok_or_else(|| PackError {
            file: PathBuf::from("<built-in packs>"),
            field: String::new(),
            reason: "neither XDG_CACHE_HOME nor HOME is set: the built-in packs are written \
                     under one of them"
                .into(),
            line: None,
        })?;
    Ok(base.join("squall"))
}

/// The hash of every built-in file, so each build's packs get their own
/// directory and a directory, once complete, never changes.
fn content_hash() -> String {
    let mut hasher = Sha256::new();
    for pack in BUILTIN_PACKS {
        for file in pack.files {
            hasher.update(pack.name.as_bytes());
            hasher.update([0]);
            hasher.update(file.path.as_bytes());
            hasher.update([0, u8::from(file.executable)]);
            hasher.update((file.bytes.len() as u64).to_le_bytes());
            hasher.update(file.bytes);
        }
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Write the built-in packs under `cache` (once per content hash) and return
/// the directory holding them. A half-written copy is never used: the files
/// go to a private temporary directory that is renamed into place.
fn materialise(cache: &Path) -> Result<PathBuf, PackError> {
    let target = cache.join(content_hash());
    if target.is_dir() {
        return Ok(target);
    }
    let fail = |what: &Path, e: std::io::Error| PackError {
        file: what.to_path_buf(),
        field: String::new(),
        reason: format!("cannot write the built-in packs: {e}"),
        line: None,
    };
    std::fs::create_dir_all(cache).map_err(|e| fail(cache, e))?;
    let staging = cache.join(format!(
        ".staging-{}-{}",
        std::process::id(),
        crate::execution::new_id()
    ));
    for pack in BUILTIN_PACKS {
        for file in pack.files {
            let path = staging.join(pack.name).join(file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(parent, e))?;
            }
            std::fs::write(&path, file.bytes).map_err(|e| fail(&path, e))?;
            if file.executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| fail(&path, e))?;
            }
        }
    }
    if let Err(e) = std::fs::rename(&staging, &target) {
        // Another process put the same content in place first.
        let _ = std::fs::remove_dir_all(&staging);
        if !target.is_dir() {
            return Err(fail(&target, e));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_packs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs")
    }

    #[test]
    fn builtin_list_matches_the_repository_packs() {
        for pack in BUILTIN_PACKS {
            let dir = repo_packs().join(pack.name);
            let mut on_disk = BTreeMap::new();
            collect_files(&dir, &dir, &mut on_disk).unwrap();
            let listed: Vec<&str> = pack.files.iter().map(|f| f.path).collect();
            let found: Vec<&str> = on_disk.keys().map(String::as_str).collect();
            let mut listed_sorted = listed.clone();
            listed_sorted.sort_unstable();
            assert_eq!(
                listed_sorted, found,
                "BUILTIN_PACKS must list every file of packs/{}",
                pack.name
            );
            assert!(same_files(pack, &dir));
        }
    }

    #[test]
    fn builtin_packs_are_written_once_and_replaced_by_a_configured_pack() {
        let cache = tempfile::tempdir().unwrap();
        let first = materialise(cache.path()).unwrap();
        let again = materialise(cache.path()).unwrap();
        assert_eq!(first, again);
        let script = first.join("core/actions/scripts/run_script.sh");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&script).unwrap().permissions().mode() & 0o111,
            0o111
        );
        // Nothing but the finished copy is left in the cache.
        let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);

        // A configured `core` that differs replaces the built-in one.
        let user = tempfile::tempdir().unwrap();
        let mine = user.path().join("core");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(
            mine.join("pack.yaml"),
            "ref: core\nname: core\ndescription: mine\nversion: 1.0.0\n",
        )
        .unwrap();
        let configured = configured_packs(&[user.path().to_path_buf()]);
        assert_eq!(configured.get("core"), Some(&mine));
        assert!(!same_files(&BUILTIN_PACKS[0], &mine));
        assert!(same_files(&BUILTIN_PACKS[0], &first.join("core")));
    }
}
