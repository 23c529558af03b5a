//! Who may use the controller: basic-auth users and bearer tokens from the configuration's
//! `controller` section (stored as SHA-256), plus an admin token from `WEIR_ADMIN_TOKEN`. With
//! none configured, development mode accepts `admin`/`admin` (and says so in the log); production
//! mode refuses to start that way.

use base64::Engine as _;
use http::StatusCode;
use sha2::{Digest, Sha256};
use weir_config::{AdminRole, ControllerSettings};

use crate::error::ApiError;

/// The credentials the controller accepts.
#[derive(Debug, Clone)]
pub struct Auth {
    users: Vec<(String, String, AdminRole)>,
    tokens: Vec<(String, AdminRole)>,
}

/// The development-mode user, when no credentials are configured.
pub const DEV_USER: (&str, &str) = ("admin", "admin");

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// The credentials of `settings` and `admin_token`; in `production`, none at all is an error.
    pub fn new(
        settings: &ControllerSettings,
        admin_token: Option<&str>,
        production: bool,
    ) -> Result<Self, String> {
        let mut users: Vec<(String, String, AdminRole)> = settings
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    u.password_sha256.to_ascii_lowercase(),
                    u.role,
                )
            })
            .collect();
        let mut tokens: Vec<(String, AdminRole)> = settings
            .tokens
            .iter()
            .map(|t| (t.token_sha256.to_ascii_lowercase(), t.role))
            .collect();
        if let Some(t) = admin_token.filter(|t| !t.is_empty()) {
            tokens.push((sha256_hex(t), AdminRole::Admin));
        }
        if users.is_empty() && tokens.is_empty() {
            if production {
                return Err(
                    "the controller has no credentials: set WEIR_ADMIN_TOKEN or configure \
                     controller.users / controller.tokens (production mode has no default password)"
                        .into(),
                );
            }
            tracing::warn!(
                user = DEV_USER.0,
                "controller: no credentials configured, accepting the development user admin/admin \
                 (configure controller.users or WEIR_ADMIN_TOKEN; --production refuses this)"
            );
            users.push((DEV_USER.0.into(), sha256_hex(DEV_USER.1), AdminRole::Admin));
        }
        Ok(Self { users, tokens })
    }

    /// The role of the caller, from its `Authorization` header.
    pub fn role(&self, authorization: Option<&http::HeaderValue>) -> Result<AdminRole, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else {
            return Err(unauthorized(
                "authenticate with basic auth or a bearer token",
            ));
        };
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let hash = sha256_hex(credential);
            return self
                .tokens
                .iter()
                .find(|(h, _)| same(h, &hash))
                .map(|(_, r)| *r)
                .ok_or_else(|| unauthorized("unknown token"));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credential)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| unauthorized("malformed basic credentials"))?;
            let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
            let hash = sha256_hex(password);
            return self
                .users
                .iter()
                .find(|(n, h, _)| n == user && same(h, &hash))
                .map(|(_, _, r)| *r)
                .ok_or_else(|| unauthorized("wrong user or password"));
        }
        Err(unauthorized("use the Basic or Bearer scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    fn basic(user: &str, password: &str) -> http::HeaderValue {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        header(&format!("Basic {b}"))
    }

    #[test]
    fn development_mode_accepts_only_the_default_user() {
        let auth = Auth::new(&ControllerSettings::default(), None, false).unwrap();
        assert_eq!(
            auth.role(Some(&basic("admin", "admin"))),
            Ok(AdminRole::Admin)
        );
        assert!(auth.role(Some(&basic("admin", "x"))).is_err());
        assert!(auth.role(None).is_err());
    }

    #[test]
    fn production_mode_needs_credentials() {
        assert!(Auth::new(&ControllerSettings::default(), None, true).is_err());
        let auth = Auth::new(&ControllerSettings::default(), Some("t0k"), true).unwrap();
        assert_eq!(auth.role(Some(&header("Bearer t0k"))), Ok(AdminRole::Admin));
        assert!(auth.role(Some(&basic("admin", "admin"))).is_err());
    }

    #[test]
    fn configured_users_keep_their_roles() {
        let settings = ControllerSettings {
            users: vec![weir_config::AdminUser {
                name: "viewer".into(),
                password_sha256: sha256_hex("pw"),
                role: AdminRole::ReadOnly,
            }],
            ..Default::default()
        };
        let auth = Auth::new(&settings, None, true).unwrap();
        assert_eq!(
            auth.role(Some(&basic("viewer", "pw"))),
            Ok(AdminRole::ReadOnly)
        );
        assert!(auth.role(Some(&basic("admin", "admin"))).is_err());
    }
}
