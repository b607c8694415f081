//! Credentials for mock-es: API keys and users, the `Authorization` header, and the
//! data-stream patterns each principal may write to.

use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;

/// Who a request authenticated as.
#[derive(Debug)]
pub(crate) struct Principal {
    /// `API key id [ID] of user [mock]` or `user [NAME]`, as ES words it in 403 reasons.
    pub(crate) description: String,
    /// Index patterns (`*` glob) this principal may write to.
    pub(crate) allowed: Vec<String>,
}

impl Principal {
    /// Whether this principal may write to `index`.
    pub(crate) fn may_write(&self, index: &str) -> bool {
        self.allowed
            .iter()
            .any(|pattern| glob_match(pattern, index))
    }
}

struct ApiKey {
    key: String,
    invalidated: bool,
    principal: Arc<Principal>,
}

struct User {
    password: String,
    principal: Arc<Principal>,
}

/// Known API keys and users.
#[derive(Default)]
pub(crate) struct Credentials {
    api_keys: HashMap<String, ApiKey>,
    users: HashMap<String, User>,
}

impl Credentials {
    /// Adds (or replaces) an API key.
    pub(crate) fn add_api_key(&mut self, id: &str, key: &str, allowed: &[&str]) {
        let principal = Arc::new(Principal {
            description: format!("API key id [{id}] of user [mock]"),
            allowed: allowed.iter().map(|p| p.to_string()).collect(),
        });
        self.api_keys.insert(
            id.to_string(),
            ApiKey {
                key: key.to_string(),
                invalidated: false,
                principal,
            },
        );
    }

    /// Adds (or replaces) a user.
    pub(crate) fn add_user(&mut self, username: &str, password: &str, allowed: &[&str]) {
        let principal = Arc::new(Principal {
            description: format!("user [{username}]"),
            allowed: allowed.iter().map(|p| p.to_string()).collect(),
        });
        self.users.insert(
            username.to_string(),
            User {
                password: password.to_string(),
                principal,
            },
        );
    }

    /// Marks an API key invalid; unknown ids are ignored.
    pub(crate) fn invalidate_api_key(&mut self, id: &str) {
        if let Some(key) = self.api_keys.get_mut(id) {
            key.invalidated = true;
        }
    }

    /// The principal an `Authorization` header value names, if it is valid.
    pub(crate) fn authenticate(&self, header: Option<&[u8]>) -> Option<Arc<Principal>> {
        let header = std::str::from_utf8(header?).ok()?;
        let (scheme, encoded) = header.trim().split_once(' ')?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, secret) = decoded.split_once(':')?;
        if scheme.eq_ignore_ascii_case("ApiKey") {
            let key = self.api_keys.get(name)?;
            (!key.invalidated && key.key == secret).then(|| key.principal.clone())
        } else if scheme.eq_ignore_ascii_case("Basic") {
            let user = self.users.get(name)?;
            (user.password == secret).then(|| user.principal.clone())
        } else {
            None
        }
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: exact match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("logs-*-default", "logs-app-default"));
        assert!(glob_match("logs-*-default", "logs--default"));
        assert!(!glob_match("logs-*-default", "metrics-app-default"));
        assert!(!glob_match("logs-*-default", "logs-app-other"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("logs-*", "logs-"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    fn header(scheme: &str, raw: &str) -> Vec<u8> {
        format!(
            "{scheme} {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
        .into_bytes()
    }

    #[test]
    fn api_keys_and_users() {
        let mut creds = Credentials::default();
        creds.add_api_key("id1", "secret", &["logs-*"]);
        creds.add_user("elastic", "changeme", &["*"]);
        assert!(creds
            .authenticate(Some(&header("ApiKey", "id1:secret")))
            .is_some());
        assert!(creds
            .authenticate(Some(&header("ApiKey", "id1:wrong")))
            .is_none());
        assert!(creds
            .authenticate(Some(&header("Basic", "elastic:changeme")))
            .is_some());
        assert!(creds
            .authenticate(Some(&header("Basic", "id1:secret")))
            .is_none());
        assert!(creds.authenticate(None).is_none());
        assert!(creds.authenticate(Some(b"ApiKey !!!")).is_none());
        creds.invalidate_api_key("id1");
        assert!(creds
            .authenticate(Some(&header("ApiKey", "id1:secret")))
            .is_none());
    }
}
