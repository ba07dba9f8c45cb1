//! The connection to a Kairos API: [`ClientBuilder`] makes a [`Client`] (tenant API key) and
//! every unary call goes through one retrying, time-limited path here. It must never log or
//! keep a credential outside the request header, and never retry against the rules of
//! [`crate::retry`].

use std::{fmt, future::Future, time::Duration};

use kairos_proto::v1::job_service_client::JobServiceClient;
use tonic::{
    Status,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    ApiKey, BearerAuth, Error, RetryPolicy,
    error::causes,
    retry::{CallKind, connect_error},
};

/// The generated `JobService` client with the bearer interceptor, for calls this crate does
/// not wrap (see [`Client::raw`]).
pub type RawJobClient = JobServiceClient<InterceptedService<Channel, BearerAuth>>;

/// The endpoint the CLI and the API use when nothing else is said.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// How a client connects and how patient it is with each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Retries of transient failures (see [`crate::retry`] for what is retried).
    pub retry: RetryPolicy,
    /// The longest one attempt of a unary call may take (sent as the gRPC deadline too).
    /// Streams ([`Client::watch_run`]) have no such limit.
    pub request_timeout: Duration,
    /// The longest opening a connection may take.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    /// The default retry policy, 30 s per call, 5 s to connect.
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds a [`Client`]: the endpoint, the API key, and optionally retries and timeouts.
///
/// ```no_run
/// # async fn demo() -> Result<(), kairos_sdk::Error> {
/// use std::time::Duration;
/// use kairos_sdk::{Client, RetryPolicy};
///
/// let client = Client::builder("http://127.0.0.1:50051")
///     .api_key("kairos_…")
///     .request_timeout(Duration::from_secs(10))
///     .retry(RetryPolicy { max_attempts: 3, ..RetryPolicy::default() })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    api_key: Option<ApiKey>,
    options: ClientOptions,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key)
            .field("options", &self.options)
            .finish()
    }
}

impl ClientBuilder {
    /// Starts a builder for the gRPC endpoint (`http://host:port`; `host:port` gets `http://`).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            api_key: None,
            options: ClientOptions::default(),
        }
    }

    /// The tenant's API key (required).
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Replaces every option at once.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.options.retry = retry;
        self
    }

    /// Sets the limit of one attempt of a unary call.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// Sets the limit of opening a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Builds the client without connecting: the connection opens on the first call (and
    /// reopens after a failure), so a server that is not up yet is waited for by the retries.
    pub fn build(self) -> Result<Client, Error> {
        let key = self.api_key.ok_or_else(|| Error::Config {
            field: "api_key",
            reason:
                "no API key given (the builder's api_key, KAIROS_API_KEY, or the credentials file)"
                    .to_owned(),
        })?;
        let auth = BearerAuth::new(&key, "api_key")?;
        let transport = Transport::lazy(&self.endpoint, self.options)?;
        let raw = JobServiceClient::with_interceptor(transport.channel.clone(), auth);
        Ok(Client { transport, raw })
    }

    /// Builds the client and opens the connection now, so an unreachable server is reported
    /// before any call ([`Error::Connect`]).
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.build()?;
        client.transport.connect_now().await?;
        Ok(client)
    }
}

/// A typed client of `kairos.v1.JobService` for one tenant (its API key).
///
/// Cheap to clone (clones share one connection); every method takes `&self`. Ids are taken as
/// anything that displays as the id: a `&str`, a `String`, or a checked
/// `kairos_domain::JobId` / `ScheduleId` / `RunId`.
#[derive(Clone)]
pub struct Client {
    pub(crate) transport: Transport,
    pub(crate) raw: RawJobClient,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.transport.endpoint)
            .field("options", &self.transport.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a [`ClientBuilder`] for the endpoint.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint)
    }

    /// A client from the endpoint and API key of a credentials file
    /// ([`crate::credentials`]); the endpoint defaults to [`DEFAULT_ENDPOINT`].
    pub fn from_credentials(credentials: &crate::Credentials) -> Result<Client, Error> {
        let mut builder = ClientBuilder::new(
            credentials
                .endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        );
        if let Some(key) = &credentials.api_key {
            builder = builder.api_key(key.clone());
        }
        builder.build()
    }

    /// A client configured the way the `kairos` CLI is: `KAIROS_ENDPOINT` and
    /// `KAIROS_API_KEY`, then the credentials file for what they leave out
    /// ([`crate::credentials::from_env`]), then [`DEFAULT_ENDPOINT`].
    pub fn from_env() -> Result<Client, Error> {
        Self::from_credentials(&crate::credentials::from_env()?)
    }

    /// The endpoint URL this client calls.
    pub fn endpoint(&self) -> &str {
        &self.transport.endpoint
    }

    /// The options this client was built with.
    pub fn options(&self) -> ClientOptions {
        self.transport.options
    }

    /// The generated client underneath (authenticated, without this crate's retries), for
    /// calls this crate does not wrap.
    pub fn raw(&self) -> RawJobClient {
        self.raw.clone()
    }

    /// One unary `JobService` call through the retry path.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        kind: CallKind,
        method: &'static str,
        request: Req,
        send: F,
    ) -> Result<Resp, Failure>
    where
        Req: Clone,
        F: Fn(RawJobClient, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.transport
            .unary(&self.raw, kind, method, request, send)
            .await
    }
}

/// A call that failed for good: the last status and how many attempts were made.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: Status,
    pub(crate) attempts: u32,
    endpoint: String,
}

impl Failure {
    /// True when an earlier attempt may have done the work (the call was retried).
    pub(crate) fn was_retried(&self) -> bool {
        self.attempts > 1
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match connect_reason(&failure.status) {
            Some(reason) => Error::Connect {
                endpoint: failure.endpoint,
                reason,
            },
            None => Error::from_status(&failure.status),
        }
    }
}

/// The causes of a connection that could not be opened, if that is what the status says.
fn connect_reason(status: &Status) -> Option<String> {
    connect_error(status).map(causes)
}

/// The channel, its URL and options, shared by [`Client`] and [`crate::AdminClient`].
#[derive(Clone)]
pub(crate) struct Transport {
    pub(crate) endpoint: String,
    pub(crate) channel: Channel,
    pub(crate) options: ClientOptions,
    endpoint_config: Endpoint,
}

impl Transport {
    /// A lazily connecting channel to `raw` (a URL or `host:port`).
    pub(crate) fn lazy(raw: &str, options: ClientOptions) -> Result<Self, Error> {
        let endpoint = endpoint_url(raw)?;
        let endpoint_config = Endpoint::from_shared(endpoint.clone())
            .map_err(|_| Error::Config {
                field: "endpoint",
                reason: format!("'{endpoint}' is not a URL"),
            })?
            .connect_timeout(options.connect_timeout)
            // Notice a dead server during a long watch instead of waiting forever.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        Ok(Self {
            channel: endpoint_config.connect_lazy(),
            endpoint,
            options,
            endpoint_config,
        })
    }

    /// Opens a connection now (through the retries of nothing-sent failures).
    pub(crate) async fn connect_now(&self) -> Result<(), Error> {
        let mut attempt = 1;
        loop {
            match self.endpoint_config.connect().await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < self.options.retry.max_attempts => {
                    tracing::debug!(endpoint = %self.endpoint, attempt, error = %causes(&e), "connect failed; retrying");
                    tokio::time::sleep(self.options.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::Connect {
                        endpoint: self.endpoint.clone(),
                        reason: causes(&e),
                    });
                }
            }
        }
    }

    /// Sends `request` through `send` until it succeeds, fails for good, or the retry policy
    /// is spent; each attempt is limited to the request timeout.
    pub(crate) async fn unary<C, Req, Resp, F, Fut>(
        &self,
        client: &C,
        kind: CallKind,
        method: &'static str,
        request: Req,
        send: F,
    ) -> Result<Resp, Failure>
    where
        C: Clone,
        Req: Clone,
        F: Fn(C, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let timeout = self.options.request_timeout;
        let mut attempt = 1;
        loop {
            let mut message = tonic::Request::new(request.clone());
            message.set_timeout(timeout);
            let result = match tokio::time::timeout(timeout, send(client.clone(), message)).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {}s",
                    timeout.as_secs_f32()
                ))),
            };
            let status = match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            if attempt >= self.options.retry.max_attempts || !kind.may_retry(&status) {
                return Err(Failure {
                    status,
                    attempts: attempt,
                    endpoint: self.endpoint.clone(),
                });
            }
            let delay = self.options.retry.delay(attempt);
            tracing::debug!(method, attempt, code = ?status.code(), delay_ms = delay.as_millis() as u64, "transient failure; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// The endpoint URL, with `http://` added when no scheme was given (`127.0.0.1:50051`).
pub(crate) fn endpoint_url(raw: &str) -> Result<String, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Error::Config {
            field: "endpoint",
            reason: "must not be empty: give the API's gRPC address, e.g. http://127.0.0.1:50051"
                .to_owned(),
        });
    }
    if raw.starts_with("https://") {
        return Err(Error::Config {
            field: "endpoint",
            reason: "https is not supported by this build: use http:// (plaintext HTTP/2) or terminate TLS in a local proxy".to_owned(),
        });
    }
    if raw.contains("://") && !raw.starts_with("http://") {
        return Err(Error::Config {
            field: "endpoint",
            reason: format!("'{raw}' is not an http:// URL"),
        });
    }
    Ok(if raw.starts_with("http://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_scheme_gets_http() {
        assert_eq!(
            endpoint_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            endpoint_url(" http://kairos.internal:50051 ").unwrap(),
            "http://kairos.internal:50051"
        );
    }

    #[test]
    fn unusable_endpoints_are_config_errors_naming_the_endpoint() {
        for bad in ["", "https://kairos.example", "ftp://x"] {
            let e = endpoint_url(bad).unwrap_err();
            assert_eq!(e.field(), Some("endpoint"), "{bad}");
        }
        let e = Transport::lazy("http://bad host", ClientOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.field(), Some("endpoint"));
    }

    #[tokio::test]
    async fn a_client_needs_a_usable_api_key() {
        let e = Client::builder("127.0.0.1:1").build().unwrap_err();
        assert_eq!(e.field(), Some("api_key"));
        let e = Client::builder("127.0.0.1:1")
            .api_key("two\nlines")
            .build()
            .unwrap_err();
        assert_eq!(e.field(), Some("api_key"));
        let client = Client::builder("127.0.0.1:1").api_key("k").build().unwrap();
        assert_eq!(client.endpoint(), "http://127.0.0.1:1");
        assert!(!format!("{client:?}").contains("\"k\""));
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_reports_the_endpoint() {
        // A port nothing listens on: bind one, then free it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Client::builder(closed.to_string())
            .api_key("k")
            .retry(RetryPolicy::none())
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("unavailable: cannot connect to http://{closed}")),
            "{e}"
        );
    }
}
