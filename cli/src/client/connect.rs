//! Opens the gRPC channel to the Kairos API and attaches `authorization: Bearer <token>` to
//! every call; it must never print, log or keep a credential anywhere but the request header.

use std::time::Duration;

use kairos_proto::v1::{
    job_service_client::JobServiceClient, tenant_service_client::TenantServiceClient,
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use super::{GlobalOpts, error::CliError};

/// How long to wait for the TCP/HTTP2 connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `JobService` client of tenant commands.
pub type JobClient = JobServiceClient<InterceptedService<Channel, Bearer>>;
/// The `TenantService` client of admin commands.
pub type TenantClient = TenantServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds the bearer credential to each request. Its `Debug` never shows the credential.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl Bearer {
    /// `field` names the flag the token came from, for the error if it cannot be a header.
    pub fn new(token: &str, field: &str) -> Result<Self, CliError> {
        let mut value: MetadataValue<Ascii> =
            format!("Bearer {}", token.trim()).parse().map_err(|_| {
                CliError::invalid("must be printable ASCII without line breaks").with_field(field)
            })?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The endpoint URL, with `http://` added when no scheme was given (`127.0.0.1:50051`).
pub fn endpoint_url(raw: &str) -> String {
    let raw = raw.trim();
    if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    }
}

/// Connects now, so an unreachable server is reported as such before any request.
pub async fn channel(endpoint: &str) -> Result<Channel, CliError> {
    let url = endpoint_url(endpoint);
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|_| CliError::invalid(format!("'{url}' is not a URL")).with_field("endpoint"))?
        .connect_timeout(CONNECT_TIMEOUT);
    ep.connect().await.map_err(|e| {
        CliError::new(
            "unavailable",
            format!("cannot connect to {url}: {}", causes(&e)),
        )
    })
}

/// A `JobService` client authenticated with the tenant's API key.
pub async fn job_client(opts: &GlobalOpts) -> Result<JobClient, CliError> {
    let key = opts
        .api_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            CliError::invalid("no API key: pass --api-key or set KAIROS_API_KEY")
                .with_field("api_key")
        })?;
    let bearer = Bearer::new(key, "api_key")?;
    Ok(JobServiceClient::with_interceptor(
        channel(&opts.endpoint).await?,
        bearer,
    ))
}

/// A `TenantService` client authenticated with the admin token.
pub async fn tenant_client(opts: &GlobalOpts) -> Result<TenantClient, CliError> {
    let token = opts
        .admin_token
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            CliError::invalid("no admin token: pass --admin-token or set KAIROS_ADMIN_TOKEN")
                .with_field("admin_token")
        })?;
    let bearer = Bearer::new(token, "admin_token")?;
    Ok(TenantServiceClient::with_interceptor(
        channel(&opts.endpoint).await?,
        bearer,
    ))
}

/// An error and its sources on one line (`transport error: tcp connect error: refused`).
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_scheme_gets_http() {
        assert_eq!(endpoint_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(
            endpoint_url("https://kairos.example"),
            "https://kairos.example"
        );
    }

    #[test]
    fn the_bearer_header_is_added_and_marked_sensitive() {
        let mut bearer = Bearer::new("k_secret", "api_key").unwrap();
        let request = bearer.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer k_secret");
        assert!(value.is_sensitive());
        assert!(!format!("{bearer:?}").contains("k_secret"));
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_a_field_error() {
        let e = Bearer::new("bad\ntoken", "api_key").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("api_key"));
    }

    #[tokio::test]
    async fn a_missing_api_key_is_reported_before_connecting() {
        let opts = GlobalOpts {
            endpoint: "http://127.0.0.1:1".into(),
            api_key: None,
            admin_token: None,
            output: super::super::OutputFormat::Table,
        };
        let e = job_client(&opts).await.unwrap_err();
        assert_eq!(e.field.as_deref(), Some("api_key"));
        assert_eq!(e.exit_code(), 2);
    }
}
