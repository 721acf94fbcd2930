//! Users, identities, roles and grants (RBAC), defined in YAML under `rbac/`.
//!
//! A chat user is known by an identity `platform:user_id`; identities link to
//! squall users, users have roles, roles grant permissions:
//! `alias:<pack>.<name>`, `action:<pack>.<name>`, `pack:<pack>` (every alias
//! and action of the pack), `inquiry:respond`, `key:read`, `key:write`,
//! `key:decrypt` (the datastore), or `*`. Unknown identities get
//! the default role only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Something a person wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Alias(String),
    Action(String),
    InquiryRespond,
    /// Read datastore pairs beyond one's own `user:` scope.
    KeyRead,
    /// Write and delete datastore pairs beyond one's own `user:` scope.
    KeyWrite,
    /// See secret values decrypted.
    KeyDecrypt,
}

impl Permission {
    /// The grant that would allow exactly this.
    pub fn grant(&self) -> String {
        match self {
            Permission::Alias(r) => format!("alias:{r}"),
            Permission::Action(r) => format!("action:{r}"),
            Permission::InquiryRespond => "inquiry:respond".into(),
            Permission::KeyRead => "key:read".into(),
            Permission::KeyWrite => "key:write".into(),
            Permission::KeyDecrypt => "key:decrypt".into(),
        }
    }

    fn pack(&self) -> Option<&str> {
        match self {
            Permission::Alias(r) | Permission::Action(r) => r.split('.').next(),
            _ => None,
        }
    }
}

/// Who someone is, as far as permissions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub identity: String,
    /// The squall user the identity links to, if any.
    pub user: Option<String>,
    pub roles: Vec<String>,
}

/// A refusal that says what is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{identity} may not do this: it needs the permission `{missing}` (roles: {roles})")]
pub struct Denied {
    pub identity: String,
    pub missing: String,
    pub roles: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RbacFile {
    #[serde(default)]
    default_role: Option<String>,
    #[serde(default)]
    roles: BTreeMap<String, RoleDef>,
    #[serde(default)]
    users: BTreeMap<String, UserDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleDef {
    #[serde(default)]
    description: String,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserDef {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    identities: Vec<String>,
}

/// A problem in the RBAC files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub struct RbacError {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

/// A role as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub description: String,
    pub grants: BTreeSet<String>,
}

/// The loaded RBAC model.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    default_role: Option<String>,
    roles: BTreeMap<String, Role>,
    /// identity -> (user, roles)
    identities: HashMap<String, (String, Vec<String>)>,
}

impl Rbac {
    /// Everyone may do everything: for a deployment without `rbac/`.
    pub fn allow_all() -> Self {
        let mut roles = BTreeMap::new();
        roles.insert(
            "admin".to_owned(),
            Role {
                description: "everything".into(),
                grants: BTreeSet::from(["*".to_owned()]),
            },
        );
        Self {
            default_role: Some("admin".into()),
            roles,
            identities: HashMap::new(),
        }
    }

    /// Load every `*.yaml` file of `dir`, reporting every problem at once.
    pub fn load_dir(dir: &Path) -> Result<Rbac, Vec<RbacError>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect(),
            Err(err) => {
                return Err(vec![RbacError {
                    file: dir.to_path_buf(),
                    field: String::new(),
                    reason: format!("cannot read the RBAC directory: {err}"),
                }]);
            }
        };
        files.sort();
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => sources.push((file, text)),
                Err(err) => errors.push(RbacError {
                    file,
                    field: String::new(),
                    reason: err.to_string(),
                }),
            }
        }
        match Self::from_sources(&sources) {
            Ok(rbac) if errors.is_empty() => Ok(rbac),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Build from (file name, YAML text) pairs.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Rbac, Vec<RbacError>> {
        let mut errors = Vec::new();
        let mut rbac = Rbac::default();
        let mut role_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut users: Vec<(PathBuf, String, UserDef)> = Vec::new();
        let err = |file: &Path, field: String, reason: String| RbacError {
            file: file.to_path_buf(),
            field,
            reason,
        };
        for (file, text) in sources {
            let parsed: RbacFile = match yaml_serde::from_str(text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    errors.push(err(file, String::new(), e.to_string()));
                    continue;
                }
            };
            if let Some(default) = parsed.default_role
                && rbac.default_role.replace(default).is_some()
            {
                errors.push(err(
                    file,
                    "default_role".into(),
                    "set in more than one file".into(),
                ));
            }
            for (name, def) in parsed.roles {
                for grant in &def.grants {
                    if let Err(reason) = check_grant(grant) {
                        errors.push(err(file, format!("roles.{name}.grants"), reason));
                    }
                }
                if let Some(first) = role_files.insert(name.clone(), file.clone()) {
                    errors.push(err(
                        file,
                        format!("roles.{name}"),
                        format!("already defined in {}", first.display()),
                    ));
                }
                rbac.roles.insert(
                    name,
                    Role {
                        description: def.description,
                        grants: def.grants.into_iter().collect(),
                    },
                );
            }
            for (name, def) in parsed.users {
                users.push((file.clone(), name, def));
            }
        }
        for (file, name, def) in users {
            for role in &def.roles {
                if !rbac.roles.contains_key(role) {
                    errors.push(err(
                        &file,
                        format!("users.{name}.roles"),
                        format!("unknown role {role:?}"),
                    ));
                }
            }
            for identity in def.identities {
                if !identity.contains(':') {
                    errors.push(err(
                        &file,
                        format!("users.{name}.identities"),
                        format!("{identity:?} is not platform:user_id"),
                    ));
                    continue;
                }
                if let Some((other, _)) = rbac.identities.get(&identity) {
                    errors.push(err(
                        &file,
                        format!("users.{name}.identities"),
                        format!("{identity} already belongs to user {other}"),
                    ));
                    continue;
                }
                rbac.identities
                    .insert(identity, (name.clone(), def.roles.clone()));
            }
        }
        if let Some(default) = &rbac.default_role
            && !rbac.roles.contains_key(default)
        {
            let file = sources.first().map(|(f, _)| f.clone()).unwrap_or_default();
            errors.push(err(
                &file,
                "default_role".into(),
                format!("unknown role {default:?}"),
            ));
        }
        if errors.is_empty() {
            Ok(rbac)
        } else {
            Err(errors)
        }
    }

    /// Who `identity` is: its user and roles, or the default role.
    pub fn principal(&self, identity: &str) -> Principal {
        match self.identities.get(identity) {
            Some((user, roles)) => Principal {
                identity: identity.to_owned(),
                user: Some(user.clone()),
                roles: roles.clone(),
            },
            None => Principal {
                identity: identity.to_owned(),
                user: None,
                roles: self.default_role.iter().cloned().collect(),
            },
        }
    }

    /// Whether `principal` holds `permission`.
    pub fn allows(&self, principal: &Principal, permission: &Permission) -> bool {
        let exact = permission.grant();
        let pack = permission.pack().map(|p| format!("pack:{p}"));
        principal
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.grants.iter())
            .any(|g| g == "*" || *g == exact || Some(g) == pack.as_ref())
    }

    /// `Ok` with the principal, or a refusal naming the missing grant.
    pub fn check(&self, identity: &str, permission: &Permission) -> Result<Principal, Denied> {
        let principal = self.principal(identity);
        if self.allows(&principal, permission) {
            Ok(principal)
        } else {
            Err(Denied {
                identity: identity.to_owned(),
                missing: permission.grant(),
                roles: if principal.roles.is_empty() {
                    "none".into()
                } else {
                    principal.roles.join(", ")
                },
            })
        }
    }

    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }
}

fn check_grant(grant: &str) -> Result<(), String> {
    let ok = grant == "*"
        || grant == "inquiry:respond"
        || matches!(grant, "key:read" | "key:write" | "key:decrypt")
        || grant
            .strip_prefix("pack:")
            .is_some_and(|p| !p.is_empty() && !p.contains('.'))
        || ["alias:", "action:"].iter().any(|prefix| {
            grant.strip_prefix(prefix).is_some_and(|r| {
                r.split_once('.')
                    .is_some_and(|(p, n)| !p.is_empty() && !n.is_empty())
            })
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{grant:?} is not a grant (use alias:<pack>.<name>, action:<pack>.<name>, pack:<pack>, inquiry:respond, key:read, key:write, key:decrypt or *)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rbac(yaml: &str) -> Result<Rbac, Vec<RbacError>> {
        Rbac::from_sources(&[(PathBuf::from("rbac/roles.yaml"), yaml.to_owned())])
    }

    const MODEL: &str = r#"
default_role: viewer
roles:
  viewer: {grants: ["alias:chatops.help"]}
  deployer: {grants: ["pack:examples", "inquiry:respond"]}
users:
  alice: {roles: [deployer], identities: ["console:alice", "matrix:@alice:localhost"]}
"#;

    #[test]
    fn identities_map_to_their_users_roles() {
        let rbac = rbac(MODEL).expect("valid");
        let principal = rbac
            .check(
                "matrix:@alice:localhost",
                &Permission::Alias("examples.deploy".into()),
            )
            .expect("allowed by pack grant");
        assert_eq!(principal.user.as_deref(), Some("alice"));
        assert!(rbac.allows(&principal, &Permission::InquiryRespond));
    }

    #[test]
    fn unknown_users_get_the_default_role_only_and_denials_name_the_grant() {
        let rbac = rbac(MODEL).expect("valid");
        assert!(
            rbac.check("console:mallory", &Permission::Alias("chatops.help".into()))
                .is_ok()
        );
        let denied = rbac
            .check(
                "console:mallory",
                &Permission::Alias("examples.deploy".into()),
            )
            .expect_err("denied");
        assert_eq!(denied.missing, "alias:examples.deploy");
        assert_eq!(
            denied.to_string(),
            "console:mallory may not do this: it needs the permission `alias:examples.deploy` (roles: viewer)"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = rbac(
            "default_role: ghost\nroles:\n  r: {grants: [\"bogus\"]}\nusers:\n  u: {roles: [nope], identities: [\"noplatform\"]}\n",
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "roles.r.grants",
                "users.u.roles",
                "users.u.identities",
                "default_role"
            ]
        );
    }
}
