use std::fmt;

/// A value that must never be logged: its `Debug` prints a placeholder and it has
/// no `Display`. Read it with [`Secret::expose`] only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

/// A Proxmox API token: `user@realm!name` and its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    /// Token id, `user@realm!name`; not secret.
    pub id: String,
    /// The token's secret UUID.
    pub secret: Secret,
}

impl ApiToken {
    /// A token from its id and secret.
    pub fn new(id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Self { id: id.into(), secret: secret.into() }
    }

    /// Whether the id has the `user@realm!name` shape Proxmox expects.
    pub fn id_is_well_formed(&self) -> bool {
        match self.id.split_once('!') {
            Some((user, name)) => {
                user.split_once('@').is_some_and(|(u, realm)| !u.is_empty() && !realm.is_empty()) && !name.is_empty()
            }
            None => false,
        }
    }

    pub(crate) fn authorization(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let token = ApiToken::new("root@pam!ci", "4d7e0c63-1f5a-4b2e-9c3d-0a8f6e2b7c91");
        let debug = format!("{token:?}");
        assert!(!debug.contains("4d7e0c63"), "{debug}");
        assert!(debug.contains("root@pam!ci"), "{debug}");
        assert_eq!(token.authorization(), "PVEAPIToken=root@pam!ci=4d7e0c63-1f5a-4b2e-9c3d-0a8f6e2b7c91");
    }

    #[test]
    fn token_id_shape() {
        for (id, ok) in [
            ("root@pam!ci", true),
            ("automation@pve!infrahaus", true),
            ("root@pam", false),
            ("!ci", false),
            ("root@!ci", false),
            ("root@pam!", false),
        ] {
            assert_eq!(ApiToken::new(id, "s").id_is_well_formed(), ok, "{id}");
        }
    }
}
