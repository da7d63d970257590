//! Who may do what through the API.
//!
//! Three roles, each allowed what the one below it is: `viewer` reads, `operator` also labels
//! inspections for review (and, as recipes arrive, switches them), `admin` also changes
//! thresholds, models and teach jobs. Tokens are bearer tokens: `Authorization: Bearer <token>`.
//! The config holds only their SHA-256 (`[[api.tokens]]`), so a copied config gives no access;
//! `[api] token` (plain text, the older setting) and the environment variable
//! [`ENV_ADMIN_TOKEN`] are admin tokens, for first set-up and tests.
//!
//! Reads stay as they were: open, unless `[api] token` is set, in which case any valid token
//! reads. Every write needs a token of its role: none or an unknown one → 401, too weak → 403,
//! both counted. The header is the only credential: no cookie ever authorises a request, so a
//! page on another site cannot make a browser write on a user's behalf (no CSRF).

use crate::config::ApiConfig;
use sha2::{Digest, Sha256};

/// An admin token given in the station's environment (first set-up, tests).
pub const ENV_ADMIN_TOKEN: &str = "LINESIGHT_API_TOKEN";

pub use crate::config::ApiRole as Role;

/// Who made a request: the token's name (for audit records) and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The tokens the API accepts, by SHA-256.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    known: Vec<([u8; 32], Caller)>,
    /// Reads need a token too (`[api] token` is set).
    reads_need_token: bool,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one the API does not know: 401.
    Unauthenticated,
    /// A known token whose role may not do this: 403.
    Forbidden { needed: Role, has: Role },
}

impl Tokens {
    /// The tokens of `[api]`, plus `env_admin` (the value of [`ENV_ADMIN_TOKEN`], if set).
    pub fn from_config(api: &ApiConfig, env_admin: Option<&str>) -> Self {
        let mut tokens = Self { known: Vec::new(), reads_need_token: api.token.is_some() };
        if let Some(token) = &api.token {
            tokens.add_plain(token, "api.token", Role::Admin);
        }
        if let Some(token) = env_admin.filter(|t| !t.is_empty()) {
            tokens.add_plain(token, ENV_ADMIN_TOKEN, Role::Admin);
        }
        for t in &api.tokens {
            // Validated at load: 64 hex digits.
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&t.sha256, &mut hash).is_ok() {
                tokens.known.push((hash, Caller { name: t.name.clone(), role: t.role }));
            }
        }
        tokens
    }

    /// Accept `token` (plain text) as `name` with `role`.
    pub fn add_plain(&mut self, token: &str, name: &str, role: Role) {
        self.known.push((sha256(token), Caller { name: name.into(), role }));
    }

    /// Whether reads need a token.
    pub fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    /// The caller an `Authorization` header value names, if it holds a known bearer token.
    /// Tokens are compared by their SHA-256, so the time taken says nothing about the token.
    pub fn identify(&self, authorization: Option<&str>) -> Option<&Caller> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        let hash = sha256(token);
        self.known.iter().find(|(h, _)| *h == hash).map(|(_, caller)| caller)
    }

    /// May the holder of `authorization` do something that needs `needed`?
    pub fn check(&self, authorization: Option<&str>, needed: Role) -> Result<Option<&Caller>, Refusal> {
        match self.identify(authorization) {
            Some(caller) if caller.role >= needed => Ok(Some(caller)),
            Some(caller) => Err(Refusal::Forbidden { needed, has: caller.role }),
            None if needed == Role::Viewer && !self.reads_need_token => Ok(None),
            None => Err(Refusal::Unauthenticated),
        }
    }
}

/// SHA-256 of a token, as `[[api.tokens]] sha256` holds it (in hex).
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;

    fn tokens(legacy: Option<&str>) -> Tokens {
        let api = ApiConfig {
            token: legacy.map(String::from),
            tokens: vec![
                ApiToken { name: "line-1".into(), role: Role::Operator, sha256: hex::encode(sha256("op-secret")) },
                ApiToken { name: "dashboard".into(), role: Role::Viewer, sha256: hex::encode(sha256("view-secret")) },
            ],
            ..ApiConfig::default()
        };
        Tokens::from_config(&api, Some("admin-secret"))
    }

    #[test]
    fn roles_are_ordered_and_checked() {
        let t = tokens(None);
        let op = Some("Bearer op-secret");
        assert_eq!(t.check(op, Role::Operator).unwrap().unwrap().name, "line-1");
        assert_eq!(t.check(op, Role::Admin), Err(Refusal::Forbidden { needed: Role::Admin, has: Role::Operator }));
        assert_eq!(
            t.check(Some("Bearer view-secret"), Role::Operator),
            Err(Refusal::Forbidden { needed: Role::Operator, has: Role::Viewer })
        );
        assert_eq!(t.check(Some("Bearer admin-secret"), Role::Admin).unwrap().unwrap().name, ENV_ADMIN_TOKEN);
    }

    #[test]
    fn writes_need_a_known_token_reads_only_when_configured() {
        let open = tokens(None);
        assert_eq!(open.check(None, Role::Viewer), Ok(None));
        assert_eq!(open.check(None, Role::Operator), Err(Refusal::Unauthenticated));
        assert_eq!(open.check(Some("Bearer wrong"), Role::Operator), Err(Refusal::Unauthenticated));
        assert_eq!(open.check(Some("op-secret"), Role::Operator), Err(Refusal::Unauthenticated), "no Bearer scheme");
        let closed = tokens(Some("legacy"));
        assert_eq!(closed.check(None, Role::Viewer), Err(Refusal::Unauthenticated));
        assert_eq!(closed.check(Some("Bearer view-secret"), Role::Viewer).unwrap().unwrap().role, Role::Viewer);
        assert_eq!(closed.check(Some("Bearer legacy"), Role::Admin).unwrap().unwrap().name, "api.token");
    }
}
