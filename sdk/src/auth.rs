//! The caller's secret ([`ApiKey`]) and the interceptor that sends it as
//! `authorization: Bearer <secret>` on every call; neither may ever show the secret in `Debug`,
//! a log line or an error.

use std::fmt;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
};

use crate::Error;

/// A tenant's API key or the operator's admin token: a bearer secret.
///
/// Its `Debug` prints `ApiKey(<redacted>)`; only [`expose`](ApiKey::expose) gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a secret; surrounding whitespace (such as a newline read from a file) is dropped.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = secret.into();
        Self(secret.trim().to_owned())
    }

    /// The secret itself, for writing it where it belongs (a header, the credentials file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when nothing is left after trimming.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl From<String> for ApiKey {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for ApiKey {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

/// Adds `authorization: Bearer <secret>` (marked sensitive, so HTTP/2 never indexes it) to
/// each request, exactly as the API reads it.
#[derive(Clone)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl BearerAuth {
    /// Checks that the secret can travel in a header. `field` names the setting it came from
    /// (`api_key`, `admin_token`) for the error.
    pub fn new(secret: &ApiKey, field: &'static str) -> Result<Self, Error> {
        if secret.is_empty() {
            return Err(Error::Config {
                field,
                reason: "must not be empty".to_owned(),
            });
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", secret.expose())
            .parse()
            .map_err(|_| Error::Config {
                field,
                reason: "must be printable ASCII without line breaks".to_owned(),
            })?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerAuth(<redacted>)")
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_is_added_and_marked_sensitive() {
        let mut auth = BearerAuth::new(&ApiKey::new("k_secret\n"), "api_key").unwrap();
        let request = auth.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer k_secret");
        assert!(value.is_sensitive());
        assert!(!format!("{auth:?}").contains("k_secret"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::new("kairos_abc");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(key.expose(), "kairos_abc");
    }

    #[test]
    fn a_secret_that_cannot_be_a_header_is_a_field_error() {
        let e = BearerAuth::new(&ApiKey::new("bad\ntoken"), "api_key").unwrap_err();
        assert_eq!(e.field(), Some("api_key"));
        let e = BearerAuth::new(&ApiKey::new("  "), "admin_token").unwrap_err();
        assert_eq!(e.field(), Some("admin_token"));
        assert!(e.to_string().contains("must not be empty"));
    }
}
