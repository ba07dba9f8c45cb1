//! `kairos tenants create`: makes a tenant with the admin token and shows its API key once; it
//! must never store the key or print the admin token.

use std::process::ExitCode;

use clap::Subcommand;
use kairos_proto::v1::Tenant;
use serde_json::json;

use super::{
    GlobalOpts, OutputFormat,
    connect::admin_client,
    output::{Printer, Record, note, opt_time},
};

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant and print its API key (shown only this once).
    Create {
        /// Display name of the tenant.
        #[arg(long)]
        name: String,
    },
}

/// A tenant with the REST API's field names.
pub fn record(tenant: &Tenant) -> Record {
    Record::new()
        .with("id", tenant.id.as_str())
        .with("name", tenant.name.as_str())
        .with("created_at", opt_time(tenant.created_at.as_ref()))
}

/// The REST body of `POST /v1/tenants`: `{"tenant": {...}, "api_key": "..."}`.
pub fn created_json(tenant: &Tenant, api_key: &str) -> serde_json::Value {
    json!({"tenant": record(tenant).to_json(), "api_key": api_key})
}

pub async fn run(cmd: TenantsCommand, opts: &GlobalOpts, out: Printer) -> anyhow::Result<ExitCode> {
    let client = admin_client(opts)?;
    match cmd {
        TenantsCommand::Create { name } => {
            let created = client.create_tenant(name).await?;
            let key = created.api_key.expose();
            match out.format {
                OutputFormat::Json => out.json(&created_json(&created.tenant, key))?,
                OutputFormat::Table => {
                    out.record(&record(&created.tenant).with("api_key", key))?;
                    note("keep the API key now: it is stored hashed and never shown again");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prost_types::Timestamp;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: TenantsCommand,
    }

    #[test]
    fn create_needs_a_name() {
        assert!(Cli::try_parse_from(["tenants", "create"]).is_err());
        let Cli {
            cmd: TenantsCommand::Create { name },
        } = Cli::try_parse_from(["tenants", "create", "--name", "acme"]).unwrap();
        assert_eq!(name, "acme");
    }

    #[test]
    fn the_created_tenant_prints_in_the_rest_shape() {
        let tenant = Tenant {
            id: "ten_1".into(),
            name: "acme".into(),
            created_at: Some(Timestamp {
                seconds: 1_769_850_000,
                nanos: 0,
            }),
        };
        assert_eq!(
            created_json(&tenant, "k_1"),
            json!({
                "tenant": {"id": "ten_1", "name": "acme", "created_at": "2026-01-31T09:00:00Z"},
                "api_key": "k_1"
            })
        );
    }
}
