//! Request extractors of the REST adapter: the authenticated tenant, strict JSON bodies and
//! strict query strings. Every rejection is an `ApiError` naming the field at fault.
//!
//! Bodies are parsed whatever the Content-Type says (curl users often omit it); they must
//! never be logged, since env values in them may be secrets.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header::AUTHORIZATION, request::Parts},
};
use kairos_domain::{ErrorCode, TenantId};
use serde::de::DeserializeOwned;

use crate::{ApiError, Service};

/// The tenant of the request's API key.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub TenantId);

impl FromRequestParts<Service> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        service.authenticate(header).await.map(Caller)
    }
}

/// The admin bearer of tenant creation was checked.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<Service> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        service.authorize_admin(header).map(|()| Admin)
    }
}

/// A required JSON body; unknown fields and wrong types are refused with the field named.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// A JSON body that may be absent (empty), in which case it takes its default.
#[derive(Debug)]
pub struct OptionalBody<T>(pub T);

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("could not read the request body: {e}"),
        )
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "a JSON request body is required",
            ));
        }
        parse_json(&bytes).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        parse_json(&bytes).map(OptionalBody)
    }
}

/// A strict query string: unknown parameters and unparsable values name the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                field_error(&path, &message)
            })
    }
}

/// Parses JSON with the path of the first error, for a precise `error.field`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                ErrorCode::InvalidArgument,
                format!("the request body is not valid JSON: {inner}"),
            );
        }
        field_error(&path, &strip_position(&inner.to_string()))
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// Builds the error for a serde message at `path`; an unknown field names itself.
fn field_error(path: &str, message: &str) -> ApiError {
    let parent = (path != "." && !path.is_empty()).then_some(path);
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        // serde_path_to_error's path already ends with the unknown field itself.
        let field = match parent {
            Some(p) if p == unknown || p.ends_with(&format!(".{unknown}")) => p.to_owned(),
            Some(p) => format!("{p}.{unknown}"),
            None => unknown.to_owned(),
        };
        return ApiError::invalid(field, "is not a known field");
    }
    match parent {
        Some(p) => ApiError::invalid(p, message),
        None => ApiError::new(ErrorCode::InvalidArgument, message.to_owned()),
    }
}

/// serde_json appends " at line L column C"; the field name says more to a client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::dto::JobBody;

    #[test]
    fn unknown_fields_are_named() {
        let err = parse_json::<JobBody>(br#"{"name":"a","colour":"red"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("colour"));
        let nested =
            parse_json::<JobBody>(br#"{"retry":{"max_attempts":2,"tries":3}}"#).unwrap_err();
        assert_eq!(nested.field.as_deref(), Some("retry.tries"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse_json::<JobBody>(br#"{"memory_mb":"lots"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("memory_mb"));
        assert!(!err.message.contains("line 1"), "{}", err.message);
    }

    #[test]
    fn malformed_json_is_invalid_without_a_field() {
        let err = parse_json::<JobBody>(b"{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.field, None);
        assert!(parse_json::<JobBody>(br#"{"name":"a"} trailing"#).is_err());
    }
}
