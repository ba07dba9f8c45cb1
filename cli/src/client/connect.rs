//! Decides which endpoint and credential a client command uses — the flag, else its variable,
//! else the credentials file, else the default endpoint — and builds the SDK client. It must
//! never print, log or keep a credential anywhere but the SDK's request header.

use std::path::PathBuf;

use kairos_sdk::{AdminClient, ApiKey, Client, ClientOptions, DEFAULT_ENDPOINT, credentials};

use super::{GlobalOpts, error::CliError};

/// The credentials file this invocation reads: `--credentials-file` /
/// `KAIROS_CREDENTIALS_FILE`, else the SDK's default place.
fn credentials_path(opts: &GlobalOpts) -> Result<PathBuf, CliError> {
    match &opts.credentials_file {
        Some(path) => Ok(path.clone()),
        None => credentials::default_path().map_err(|e| CliError::from_sdk(&e.into())),
    }
}

/// The endpoint and API key of a tenant command, the file filling what flags and variables
/// leave out.
fn tenant_credentials(opts: &GlobalOpts) -> Result<(String, ApiKey), CliError> {
    let given_key = opts.api_key.clone().map(ApiKey::new);
    let resolved = if opts.endpoint.is_some() && given_key.as_ref().is_some_and(|k| !k.is_empty()) {
        credentials::Credentials {
            endpoint: opts.endpoint.clone(),
            api_key: given_key,
        }
    } else {
        let path = credentials_path(opts)?;
        credentials::resolve(opts.endpoint.clone(), given_key, &path)
            .map_err(|e| CliError::from_sdk(&e.into()))?
    };
    let key = resolved.api_key.filter(|k| !k.is_empty()).ok_or_else(|| {
        CliError::invalid(
            "no API key: pass --api-key, set KAIROS_API_KEY, or keep one in the credentials file (kairos standalone writes it)",
        )
        .with_field("api_key")
    })?;
    let endpoint = resolved
        .endpoint
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    Ok((endpoint, key))
}

/// The endpoint of an admin command: the flag or variable, else the credentials file's, else
/// the default.
fn admin_endpoint(opts: &GlobalOpts) -> Result<String, CliError> {
    if let Some(endpoint) = &opts.endpoint {
        return Ok(endpoint.clone());
    }
    let path = credentials_path(opts)?;
    let stored =
        credentials::Credentials::load(&path).map_err(|e| CliError::from_sdk(&e.into()))?;
    Ok(stored
        .and_then(|c| c.endpoint)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()))
}

/// The SDK client of tenant commands.
pub fn job_client(opts: &GlobalOpts) -> Result<Client, CliError> {
    let (endpoint, key) = tenant_credentials(opts)?;
    Client::builder(endpoint)
        .api_key(key)
        .options(ClientOptions::default())
        .build()
        .map_err(|e| CliError::from_sdk(&e))
}

/// The SDK client of admin commands (the admin token, never read from the credentials file).
pub fn admin_client(opts: &GlobalOpts) -> Result<AdminClient, CliError> {
    let token = opts
        .admin_token
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            CliError::invalid("no admin token: pass --admin-token or set KAIROS_ADMIN_TOKEN")
                .with_field("admin_token")
        })?;
    AdminClient::new(admin_endpoint(opts)?, token, ClientOptions::default())
        .map_err(|e| CliError::from_sdk(&e))
}

#[cfg(test)]
mod tests {
    use kairos_sdk::Credentials;

    use super::*;
    use crate::client::OutputFormat;

    fn opts(endpoint: Option<&str>, key: Option<&str>, file: PathBuf) -> GlobalOpts {
        GlobalOpts {
            endpoint: endpoint.map(str::to_owned),
            api_key: key.map(str::to_owned),
            admin_token: None,
            credentials_file: Some(file),
            output: OutputFormat::Table,
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        Credentials::new("http://stored:1", "kairos_stored")
            .save(&file)
            .unwrap();
        let (endpoint, key) =
            tenant_credentials(&opts(Some("http://flag:2"), Some("k_flag"), file.clone())).unwrap();
        assert_eq!(
            (endpoint.as_str(), key.expose()),
            ("http://flag:2", "k_flag")
        );
        let (endpoint, key) =
            tenant_credentials(&opts(None, Some("k_flag"), file.clone())).unwrap();
        assert_eq!(
            (endpoint.as_str(), key.expose()),
            ("http://stored:1", "k_flag")
        );
        let (endpoint, key) = tenant_credentials(&opts(None, None, file)).unwrap();
        assert_eq!(
            (endpoint.as_str(), key.expose()),
            ("http://stored:1", "kairos_stored")
        );
    }

    #[test]
    fn without_a_key_anywhere_the_error_names_the_ways_to_give_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = tenant_credentials(&opts(None, None, dir.path().join("absent"))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("api_key"));
        assert!(e.message.contains("--api-key") && e.message.contains("KAIROS_API_KEY"));
        assert_eq!(e.exit_code(), 2);
        // No file and no endpoint: the default endpoint.
        let (endpoint, _) =
            tenant_credentials(&opts(None, Some("k"), dir.path().join("absent"))).unwrap();
        assert_eq!(endpoint, DEFAULT_ENDPOINT);
    }

    #[test]
    fn a_broken_credentials_file_is_a_field_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        Credentials::new("http://x:1", "k").save(&file).unwrap();
        std::fs::write(&file, "apikey = k\n").unwrap();
        let e = tenant_credentials(&opts(None, None, file)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("credentials_file"));
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn a_missing_admin_token_is_reported_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let e = admin_client(&opts(None, None, dir.path().join("absent"))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("admin_token"));
    }
}
