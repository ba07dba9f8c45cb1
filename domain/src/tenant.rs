//! The tenant's display name; tenants themselves are created only by an operator.

use crate::FieldError;

/// 1–100 printable characters, surrounding whitespace trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(TenantName::parse("  acme ").unwrap().as_str(), "acme");
        assert_eq!(TenantName::parse("   ").unwrap_err().field, "name");
        assert!(TenantName::parse(&"x".repeat(101)).is_err());
        assert!(TenantName::parse("a\nb").is_err());
    }
}
