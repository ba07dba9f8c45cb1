//! Keyset pagination: a page size and an opaque token that resumes after the last id seen.
//!
//! Tokens are opaque to clients and carry only a position, never a tenant or a filter, so a
//! token replayed by another tenant or with other filters can reveal nothing.

use uuid::Uuid;

use crate::FieldError;

/// A checked list request: how many, and after which id (ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u32,
    pub after: Option<Uuid>,
}

impl PageRequest {
    pub const DEFAULT_SIZE: u32 = 100;
    pub const MAX_SIZE: u32 = 1000;

    /// `page_size` absent or 0 takes the default; above the maximum it is capped at 1000
    /// (as AIP-158 advises); negative is an error.
    pub fn parse(page_size: Option<i64>, page_token: Option<&str>) -> Result<Self, FieldError> {
        let size = match page_size {
            None | Some(0) => Self::DEFAULT_SIZE,
            Some(n) if n < 0 => {
                return Err(FieldError::new(
                    "page_size",
                    format!("must not be negative, got {n}"),
                ));
            }
            Some(n) => n.min(i64::from(Self::MAX_SIZE)) as u32,
        };
        let after = match page_token.filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(PageToken::decode(token)?),
        };
        Ok(Self { size, after })
    }
}

/// Encodes and decodes the opaque `page_token`.
#[derive(Debug)]
pub struct PageToken;

impl PageToken {
    const PREFIX: &'static str = "p1_";

    pub fn encode(last: Uuid) -> String {
        format!("{}{}", Self::PREFIX, last.simple())
    }

    pub fn decode(token: &str) -> Result<Uuid, FieldError> {
        token
            .strip_prefix(Self::PREFIX)
            .filter(|hex| hex.len() == 32)
            .and_then(|hex| Uuid::try_parse(hex).ok())
            .ok_or_else(|| {
                FieldError::new("page_token", "is not a token returned by a previous page")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(PageRequest::parse(None, None).unwrap().size, 100);
        assert_eq!(PageRequest::parse(Some(0), None).unwrap().size, 100);
        assert_eq!(PageRequest::parse(Some(5000), None).unwrap().size, 1000);
        assert_eq!(
            PageRequest::parse(Some(-1), None).unwrap_err().field,
            "page_size"
        );
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let id = Uuid::now_v7();
        let page = PageRequest::parse(Some(10), Some(&PageToken::encode(id))).unwrap();
        assert_eq!(page.after, Some(id));
        assert_eq!(
            PageRequest::parse(None, Some("nope")).unwrap_err().field,
            "page_token"
        );
        assert_eq!(PageRequest::parse(None, Some("")).unwrap().after, None);
    }
}
