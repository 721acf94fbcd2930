//! The key-value datastore (`st2kv`): JSON values under a scope (`system`, or
//! `user:<name>` for one person), optionally with a time to live, optionally
//! secret.
//!
//! A secret is sealed with AES-256-GCM before it reaches the database: the
//! row holds only the nonce and ciphertext, bound to its scope and name, and
//! the id of the key that sealed it. The key lives in a file (created at first
//! start, mode 0600) or is given inline. [`Datastore::rotate`] re-seals every
//! secret under a new key one row at a time; until it finishes, both keys are
//! on disk (`<key>.new` beside the key file), so stopping it at any point
//! leaves every row readable, and running it again carries on.
//!
//! Templates read pairs as `st2kv.system.<name>` and `st2kv.user.<name>` from
//! an in-memory snapshot ([`KvSnapshot`]), refreshed on every write through
//! this process and checked against the database every second. Only action
//! parameters see the snapshot (decrypted), and the secret values a
//! parameter took join that execution's secret set, so every view of it masks
//! them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::execution::now_ms;
use crate::params::MASK;
use crate::secrets::Secrets;
use crate::store::{KvVersion, KvWrite, Store, StoreError, kv_pair};

/// The system scope.
pub const SYSTEM: &str = "system";

/// Longest name and value accepted.
const MAX_NAME: usize = 255;
/// The longest time to live a pair may have (100 years).
pub const MAX_TTL_SECONDS: u64 = 3_155_760_000;
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Errors of the datastore, phrased for the caller.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("{0}")]
    Invalid(String),
    #[error("no key {name:?} in scope {scope}")]
    NotFound { scope: String, name: String },
    #[error("datastore key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the encryption key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A file holding the key as 64 hex digits; created (0600) if missing.
    File(PathBuf),
    /// The key itself, 64 hex digits (from config or the environment).
    Inline(String),
}

/// A scope, checked: `system` or `user:<name>`.
pub fn parse_scope(scope: &str) -> Result<String, KvError> {
    if scope == SYSTEM {
        return Ok(SYSTEM.into());
    }
    match scope.strip_prefix("user:") {
        Some(user) if !user.is_empty() && user.len() <= MAX_NAME => Ok(scope.to_owned()),
        _ => Err(KvError::Invalid(format!(
            "scope {scope:?} is not valid: use `system` or `user:<name>`"
        ))),
    }
}

/// A key name, checked: letters, digits and `_ . : -`, so that templates can
/// name it as a path (`st2kv.system.<name>`).
pub fn check_name(name: &str) -> Result<(), KvError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(KvError::Invalid(format!(
            "key name {name:?} is not valid: use 1 to {MAX_NAME} letters, digits, `_`, `-`, `:` and `.` (not leading, trailing or doubled)"
        )))
    }
}

/// One AES-256 key and its id (the first 16 hex digits of its SHA-256).
#[derive(Clone)]
struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

impl DataKey {
    fn from_hex(text: &str, origin: &str) -> Result<DataKey, KvError> {
        let bytes = hex::decode(text.trim()).map_err(|_| {
            KvError::Key(format!(
                "{origin} does not hold 64 hex digits (a 256-bit key)"
            ))
        })?;
        if bytes.len() != 32 {
            return Err(KvError::Key(format!(
                "{origin} holds {} bytes; the key is 32 bytes (64 hex digits)",
                bytes.len()
            )));
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..8]);
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| KvError::Key(format!("{origin}: not an AES-256 key")))?;
        Ok(DataKey { id, cipher })
    }

    fn seal(&self, scope: &str, name: &str, plaintext: &str) -> Result<String, KvError> {
        let nonce: [u8; 12] = rand::random();
        let aad = format!("{scope}\0{name}");
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KvError::Key("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(hex::encode(out))
    }

    fn open(&self, scope: &str, name: &str, stored: &str) -> Result<String, KvError> {
        let bytes = hex::decode(stored)
            .ok()
            .filter(|b| b.len() > 12)
            .ok_or_else(|| {
                KvError::Key(format!(
                    "the stored secret {scope}/{name} is not ciphertext"
                ))
            })?;
        let aad = format!("{scope}\0{name}");
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[..12]);
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &bytes[12..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                KvError::Key(format!(
                    "the secret {scope}/{name} does not open with key {}: it was altered or sealed for another row",
                    self.id
                ))
            })?;
        String::from_utf8(plain)
            .map_err(|_| KvError::Key(format!("the secret {scope}/{name} is not UTF-8")))
    }
}

/// The keys a datastore can open with, and the one it seals with.
struct Keyring {
    primary: DataKey,
    /// Every key on hand by id (primary, a pending rotation's, the previous).
    all: HashMap<String, DataKey>,
    /// The pending rotation's key, if a rotation has begun.
    pending: Option<DataKey>,
}

fn pending_path(file: &Path) -> PathBuf {
    with_suffix(file, ".new")
}

fn previous_path(file: &Path) -> PathBuf {
    with_suffix(file, ".previous")
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Write `bytes` to `path` with mode 0600, durably, through a staging file
/// and a rename, so that no partial file ever has that name.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KvError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io =
        |e: std::io::Error, what: &str| KvError::Key(format!("{what} {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(e, "creating the directory of"))?;
    }
    let staging = with_suffix(path, &format!(".tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .map_err(|e| io(e, "writing"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io(e, "writing"))?;
    std::fs::rename(&staging, path).map_err(|e| io(e, "writing"))?;
    sync_dir(path);
    Ok(())
}

/// Write a new random key to `path`.
fn write_new_key(path: &Path) -> Result<DataKey, KvError> {
    let text = hex::encode(rand::random::<[u8; 32]>());
    write_private(path, format!("{text}\n").as_bytes())?;
    DataKey::from_hex(&text, &path.display().to_string())
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
}

fn read_key(path: &Path) -> Result<Option<DataKey>, KvError> {
    match std::fs::read_to_string(path) {
        Ok(text) => DataKey::from_hex(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KvError::Key(format!("reading {}: {e}", path.display()))),
    }
}

impl Keyring {
    fn load(source: &KeySource, create: bool) -> Result<Keyring, KvError> {
        match source {
            KeySource::Inline(text) => {
                let key = DataKey::from_hex(text, "the configured datastore key")?;
                Ok(Keyring {
                    all: HashMap::from([(key.id.clone(), key.clone())]),
                    primary: key,
                    pending: None,
                })
            }
            KeySource::File(path) => {
                let primary = match read_key(path)? {
                    Some(key) => key,
                    None if create => {
                        let key = write_new_key(path)?;
                        tracing::info!(path = %path.display(), "created the datastore key");
                        key
                    }
                    None => {
                        return Err(KvError::Key(format!(
                            "no key file at {} (squall serve creates it at first start)",
                            path.display()
                        )));
                    }
                };
                let pending = read_key(&pending_path(path))?;
                let mut all = HashMap::new();
                if let Some(previous) = read_key(&previous_path(path))? {
                    all.insert(previous.id.clone(), previous);
                }
                if let Some(pending) = &pending {
                    all.insert(pending.id.clone(), pending.clone());
                }
                all.insert(primary.id.clone(), primary.clone());
                Ok(Keyring {
                    primary,
                    all,
                    pending,
                })
            }
        }
    }
}

/// What templates see: every live pair, secrets decrypted, as nested
/// objects (`a.b` is reachable as `st2kv.system.a.b`).
#[derive(Debug, Default)]
pub struct KvSnapshot {
    system: Map<String, Value>,
    users: HashMap<String, Map<String, Value>>,
    secrets: Secrets,
    /// When the first pair in it expires (the snapshot is rebuilt then).
    next_expiry: Option<i64>,
    version: KvVersion,
}

impl KvSnapshot {
    /// The `st2kv` object for a template rendered on behalf of `user`.
    pub fn st2kv(&self, user: Option<&str>) -> Value {
        let user = user
            .and_then(|u| self.users.get(u))
            .cloned()
            .unwrap_or_default();
        json!({"system": self.system, "user": user})
    }

    /// The secret values of the snapshot that occur in `value`.
    pub fn secrets_in(&self, value: &Value) -> Secrets {
        self.secrets.present_in(value)
    }

    fn is_stale(&self, now: i64) -> bool {
        self.next_expiry.is_some_and(|at| at <= now)
    }
}

/// The snapshot shared with the template engine.
pub type KvHandle = Arc<RwLock<Arc<KvSnapshot>>>;

fn insert_path(map: &mut Map<String, Value>, name: &str, value: Value) {
    map.insert(name.to_owned(), value.clone());
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 2 {
        return;
    }
    let mut node = map;
    for part in &parts[..parts.len() - 1] {
        let entry = node
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(inner) => node = inner,
            // A value already sits where the path needs an object: the flat
            // name still reaches it.
            _ => return,
        }
    }
    let last = parts[parts.len() - 1].to_owned();
    node.entry(last).or_insert(value);
}

/// Undo [`insert_path`] for `name` (before it is written again).
fn remove_path(map: &mut Map<String, Value>, name: &str) {
    map.remove(name);
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 2 {
        return;
    }
    let mut node = map;
    for part in &parts[..parts.len() - 1] {
        match node.get_mut(*part) {
            Some(Value::Object(inner)) => node = inner,
            _ => return,
        }
    }
    node.remove(parts[parts.len() - 1]);
}

/// A pair as shown to a caller.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KvView {
    pub scope: String,
    pub name: String,
    pub value: Value,
    pub secret: bool,
    /// Whether `value` is the decrypted secret (else a secret shows the mask).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub decrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub updated_at: i64,
}

/// A value to store.
#[derive(Debug, Clone)]
pub struct KvSet {
    pub scope: String,
    pub name: String,
    pub value: Value,
    pub secret: bool,
    /// Seconds to live.
    pub ttl: Option<u64>,
}

/// Progress of a rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotateReport {
    pub resealed: u64,
    pub new_key_id: String,
}

/// The datastore of one process.
pub struct Datastore {
    store: Store,
    source: KeySource,
    keys: Mutex<Keyring>,
    snapshot: KvHandle,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datastore").finish_non_exhaustive()
    }
}

impl Datastore {
    /// Open the datastore; `create_key` writes a new key file when none
    /// exists (the server at first start).
    pub async fn open(
        store: Store,
        source: KeySource,
        snapshot: KvHandle,
        create_key: bool,
    ) -> Result<Datastore, KvError> {
        let keys = Keyring::load(&source, create_key)?;
        let datastore = Datastore {
            store,
            source,
            keys: Mutex::new(keys),
            snapshot,
            refresh: tokio::sync::Mutex::new(()),
        };
        datastore.reload().await?;
        Ok(datastore)
    }

    /// Keep the snapshot current: every second, rebuild it if the database
    /// changed (another node, the CLI) or a pair expired.
    pub fn spawn_refresh(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = me.refresh_if_changed().await {
                    tracing::warn!(error = %e, "refreshing the datastore snapshot failed");
                }
            }
        });
    }

    async fn refresh_if_changed(&self) -> Result<(), KvError> {
        let version = self.store.kv_version().await?;
        let current = self.current();
        if version != current.version || current.is_stale(now_ms()) {
            self.reload().await?;
        }
        Ok(())
    }

    fn current(&self) -> Arc<KvSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rebuild the snapshot from the database.
    pub async fn reload(&self) -> Result<(), KvError> {
        let _one = self.refresh.lock().await;
        let version = self.store.kv_version().await?;
        let rows = self.store.kv_all().await?;
        let mut snapshot = KvSnapshot {
            version,
            ..KvSnapshot::default()
        };
        let mut secret_values = Vec::new();
        for row in &rows {
            let value = match self.decode(row) {
                Ok(value) => value,
                Err(e) => {
                    tracing::warn!(scope = %row.scope, name = %row.name, error = %e, "a datastore pair cannot be read; templates see it as missing");
                    continue;
                }
            };
            if row.secret {
                secret_values.push(value.clone());
            }
            if let Some(at) = row.expires_at {
                snapshot.next_expiry = Some(snapshot.next_expiry.map_or(at, |n| n.min(at)));
            }
            let map = if row.scope == SYSTEM {
                &mut snapshot.system
            } else {
                let user = row.scope.strip_prefix("user:").unwrap_or(&row.scope);
                snapshot.users.entry(user.to_owned()).or_default()
            };
            insert_path(map, &row.name, value);
        }
        snapshot.secrets = Secrets::from_values(secret_values.iter());
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        Ok(())
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keyring> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open a stored row to its JSON value. A key id this process does not
    /// hold (a rotation finished by another process) reloads the key files.
    fn decode(&self, row: &kv_pair::Model) -> Result<Value, KvError> {
        let text = if row.secret {
            let key_id = row.key_id.as_deref().unwrap_or_default();
            let held = self.keys().all.get(key_id).cloned();
            let key = match held {
                Some(key) => key,
                None => {
                    let reloaded = Keyring::load(&self.source, false)?;
                    let key = reloaded.all.get(key_id).cloned();
                    *self.keys() = reloaded;
                    key.ok_or_else(|| {
                        KvError::Key(format!(
                            "the secret {}/{} was sealed with key {key_id}, which is not on hand",
                            row.scope, row.name
                        ))
                    })?
                }
            };
            key.open(&row.scope, &row.name, &row.value)?
        } else {
            row.value.clone()
        };
        serde_json::from_str(&text).map_err(|e| {
            KvError::Invalid(format!(
                "stored value of {}/{} is not JSON: {e}",
                row.scope, row.name
            ))
        })
    }

    /// Store a pair; replaces any pair of that scope and name. Returns the
    /// pair as stored (a secret masked), not read back: a short TTL may
    /// already have run out.
    pub async fn set(&self, set: &KvSet) -> Result<KvView, KvError> {
        let scope = parse_scope(&set.scope)?;
        check_name(&set.name)?;
        let text = set.value.to_string();
        if text.len() > MAX_VALUE_BYTES {
            return Err(KvError::Invalid(format!(
                "the value is {} bytes; at most {MAX_VALUE_BYTES} are kept",
                text.len()
            )));
        }
        match set.ttl {
            Some(0) => {
                return Err(KvError::Invalid(
                    "ttl must be at least 1 second (leave it out for no expiry)".into(),
                ));
            }
            Some(ttl) if ttl > MAX_TTL_SECONDS => {
                return Err(KvError::Invalid(format!(
                    "ttl must be at most {MAX_TTL_SECONDS} seconds (100 years; leave it out for no expiry)"
                )));
            }
            _ => {}
        }
        let (value, key_id) = if set.secret {
            self.refresh_keys_if_rotated()?;
            let keys = self.keys();
            // Mid-rotation, new secrets go straight under the new key.
            let key = keys.pending.as_ref().unwrap_or(&keys.primary);
            (key.seal(&scope, &set.name, &text)?, Some(key.id.clone()))
        } else {
            (text, None)
        };
        let expires_at = set.ttl.map(|s| {
            now_ms().saturating_add(i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000))
        });
        self.store
            .kv_put(&KvWrite {
                scope: scope.clone(),
                name: set.name.clone(),
                value,
                secret: set.secret,
                key_id,
                expires_at,
            })
            .await?;
        // Read-your-writes without re-reading every pair: the new value goes
        // into a copy of the snapshot (the periodic check rebuilds it whole).
        let _one = self.refresh.lock().await;
        let current = self.current();
        let mut next = KvSnapshot {
            system: current.system.clone(),
            users: current.users.clone(),
            secrets: current.secrets.clone(),
            next_expiry: current.next_expiry,
            version: current.version,
        };
        if set.secret {
            next.secrets = next.secrets.union(&Secrets::from_values([&set.value]));
        }
        if let Some(at) = expires_at {
            next.next_expiry = Some(next.next_expiry.map_or(at, |n| n.min(at)));
        }
        let map = match scope.strip_prefix("user:") {
            Some(user) => next.users.entry(user.to_owned()).or_default(),
            None => &mut next.system,
        };
        remove_path(map, &set.name);
        insert_path(map, &set.name, set.value.clone());
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(KvView {
            scope,
            name: set.name.clone(),
            value: if set.secret {
                Value::String(MASK.into())
            } else {
                set.value.clone()
            },
            secret: set.secret,
            decrypted: false,
            expires_at,
            updated_at: now_ms(),
        })
    }

    /// A rotation run elsewhere may have replaced the key file: pick up its
    /// keys before sealing, so nothing is sealed under a retired key.
    fn refresh_keys_if_rotated(&self) -> Result<(), KvError> {
        if let KeySource::File(path) = &self.source {
            let on_disk = read_key(path)?;
            let pending = read_key(&pending_path(path))?;
            let keys = self.keys();
            let same = on_disk.as_ref().map(|k| k.id.as_str()) == Some(keys.primary.id.as_str())
                && pending.as_ref().map(|k| &k.id) == keys.pending.as_ref().map(|k| &k.id);
            drop(keys);
            if !same {
                *self.keys() = Keyring::load(&self.source, false)?;
            }
        }
        Ok(())
    }

    /// One pair; a secret is masked unless `decrypt`.
    pub async fn get(&self, scope: &str, name: &str, decrypt: bool) -> Result<KvView, KvError> {
        let scope = parse_scope(scope)?;
        check_name(name)?;
        let row = self
            .store
            .kv_get(&scope, name)
            .await?
            .ok_or_else(|| KvError::NotFound {
                scope: scope.clone(),
                name: name.to_owned(),
            })?;
        self.view(&row, decrypt)
    }

    fn view(&self, row: &kv_pair::Model, decrypt: bool) -> Result<KvView, KvError> {
        let (value, decrypted) = if row.secret && !decrypt {
            (Value::String(MASK.into()), false)
        } else {
            (self.decode(row)?, row.secret)
        };
        Ok(KvView {
            scope: row.scope.clone(),
            name: row.name.clone(),
            value,
            secret: row.secret,
            decrypted,
            expires_at: row.expires_at,
            updated_at: row.updated_at,
        })
    }

    /// Live pairs; secrets masked unless `decrypt`.
    pub async fn list(
        &self,
        scope: Option<&str>,
        prefix: Option<&str>,
        decrypt: bool,
        limit: u64,
    ) -> Result<Vec<KvView>, KvError> {
        let scope = scope.map(parse_scope).transpose()?;
        let rows = self.store.kv_list(scope.as_deref(), prefix, limit).await?;
        rows.iter().map(|row| self.view(row, decrypt)).collect()
    }

    /// Delete a pair.
    pub async fn delete(&self, scope: &str, name: &str) -> Result<(), KvError> {
        let scope = parse_scope(scope)?;
        check_name(name)?;
        if !self.store.kv_delete(&scope, name).await? {
            return Err(KvError::NotFound {
                scope,
                name: name.to_owned(),
            });
        }
        self.reload().await
    }

    /// Re-seal every secret under a new key. The new key is written to
    /// `<key file>.new` first; rows move one at a time; the key files swap
    /// (the old key kept as `<key file>.previous`) only when no row is left
    /// under another key. Stopped anywhere, every row stays readable, and a
    /// second run carries on with the same new key. `progress` hears the
    /// count after each row.
    pub async fn rotate(&self, mut progress: impl FnMut(u64)) -> Result<RotateReport, KvError> {
        let KeySource::File(path) = &self.source else {
            return Err(KvError::Key(
                "the key is given inline (datastore.key or SQUALL_DATASTORE_KEY); rotation writes key files, so use datastore.key_file".into(),
            ));
        };
        let pending = match read_key(&pending_path(path))? {
            Some(key) => key,
            None => write_new_key(&pending_path(path))?,
        };
        *self.keys() = Keyring::load(&self.source, false)?;
        let mut resealed = 0;
        loop {
            let rows = self.store.kv_secrets_not_under(&pending.id, 200).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let plain = match self.decode(&row) {
                    Ok(value) => value.to_string(),
                    Err(e) => {
                        return Err(KvError::Key(format!(
                            "{e}; rotation stopped with {resealed} secret(s) moved, every row still readable"
                        )));
                    }
                };
                let sealed = pending.seal(&row.scope, &row.name, &plain)?;
                if self.store.kv_reseal(&row, &sealed, &pending.id).await? {
                    resealed += 1;
                    progress(resealed);
                }
            }
        }
        // Every secret is under the new key: swap the files.
        let old = std::fs::read(path)
            .map_err(|e| KvError::Key(format!("reading {}: {e}", path.display())))?;
        write_private(&previous_path(path), &old)?;
        std::fs::rename(pending_path(path), path)
            .map_err(|e| KvError::Key(format!("replacing {}: {e}", path.display())))?;
        sync_dir(path);
        *self.keys() = Keyring::load(&self.source, false)?;
        self.reload().await?;
        Ok(RotateReport {
            resealed,
            new_key_id: pending.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_row_and_key() {
        let key = DataKey::from_hex(&"ab".repeat(32), "test").unwrap();
        let sealed = key.seal("system", "token", "\"hunter22\"").unwrap();
        assert!(!sealed.contains("hunter22"));
        assert_eq!(
            key.open("system", "token", &sealed).unwrap(),
            "\"hunter22\""
        );
        assert!(key.open("system", "other", &sealed).is_err());
        let other = DataKey::from_hex(&"cd".repeat(32), "test").unwrap();
        assert!(other.open("system", "token", &sealed).is_err());
        assert!(DataKey::from_hex("abc", "test").is_err());
    }

    #[test]
    fn names_and_scopes_are_checked() {
        assert!(check_name("api.token-2:x").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_scope("user:alice").unwrap(), "user:alice");
        assert!(parse_scope("user:").is_err());
        assert!(parse_scope("global").is_err());
    }

    #[test]
    fn dotted_names_nest_without_losing_the_flat_name() {
        let mut map = Map::new();
        insert_path(&mut map, "db.host", json!("h"));
        insert_path(&mut map, "db.port", json!(5432));
        insert_path(&mut map, "plain", json!(1));
        assert_eq!(map["db"], json!({"host": "h", "port": 5432}));
        assert_eq!(map["db.host"], json!("h"));
        assert_eq!(map["plain"], json!(1));
    }
}
