//! Console settings: who is typing. `squall chat --user` (default: the login
//! name) sets it; the identity is `console:<user>`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub user: String,
}
