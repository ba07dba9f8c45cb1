//! A container image reference (`registry/repo:tag@digest`) checked against the OCI grammar.
//!
//! Parsing is delegated to `oci-spec`'s distribution reference parser; this type only bounds
//! the length and keeps the customer's spelling, and never resolves or contacts a registry.

use std::str::FromStr;

use oci_spec::distribution::Reference;

use crate::FieldError;

/// A syntactically valid image reference, kept as the customer wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(String);

impl ImageRef {
    pub const MAX_LEN: usize = 512;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let field = |reason: &str| FieldError::new("image", reason);
        if raw.is_empty() {
            return Err(field("must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(field(&format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(field("must not contain whitespace"));
        }
        Reference::from_str(raw).map_err(|e| {
            field(&format!(
                "'{raw}' is not a valid image reference ({e}); expected e.g. 'registry.example.com/team/app:1.2'"
            ))
        })?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The registry the image is pulled from, as the reference names it (`docker.io` when it
    /// names none).
    pub fn registry(&self) -> String {
        Reference::from_str(&self.0)
            .map(|r| r.registry().to_owned())
            .unwrap_or_else(|_| "docker.io".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_references_are_accepted() {
        for ok in [
            "busybox",
            "library/busybox:1.36",
            "localhost:5000/kairos/sleeper:latest",
            "ghcr.io/acme/etl@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "registry.example.com/team/app:1.2",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_references_name_the_image_field() {
        for bad in [
            "",
            "Busybox:latest",
            "library/BusyBox",
            "a b",
            "repo:",
            "repo@sha256:short",
            "-leading/dash",
            "x:tag:tag",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert_eq!(err.field, "image", "{bad}");
        }
        assert!(ImageRef::parse(&"a".repeat(600)).is_err());
    }
}
