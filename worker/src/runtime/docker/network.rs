//! The network runs join: `none` (no network at all) or an isolated bridge this worker creates
//! if absent, with inter-container communication disabled, so one customer's container cannot
//! reach another's. Never the host network.
//!
//! Workers sharing an engine may race to create the bridge (the engine API this worker speaks
//! may allow two networks of one name), so every worker uses the one with the smallest id of
//! that name, and refuses one that allows inter-container traffic.

use std::collections::HashMap;

use bollard::{
    Docker,
    models::{Network, NetworkCreateRequest},
    query_parameters::ListNetworksOptions,
};

use super::{DockerError, NetworkChoice, labels};

const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The `NetworkMode` for containers: `none`, or the id of the isolated bridge.
pub async fn ensure(docker: &Docker, choice: &NetworkChoice) -> Result<String, DockerError> {
    let name = match choice {
        NetworkChoice::None => return Ok("none".to_owned()),
        NetworkChoice::Isolated(name) => name,
    };
    if let Some(id) = existing(docker, name).await? {
        return Ok(id);
    }
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".to_owned()),
        internal: Some(false),
        attachable: Some(false),
        options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
        labels: Some(HashMap::from([(
            labels::MANAGED.to_owned(),
            "true".to_owned(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => tracing::info!(network = %name, "created the isolated bridge for runs"),
        // Another worker created it first: use that one.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => {
            return Err(DockerError::Network {
                name: name.clone(),
                reason: e.to_string(),
            });
        }
    }
    existing(docker, name)
        .await?
        .ok_or_else(|| DockerError::Network {
            name: name.clone(),
            reason: "created, but the engine does not list it".to_owned(),
        })
}

/// The id of the network called exactly `name` (the smallest id if there are several),
/// checked to be a bridge without inter-container communication.
async fn existing(docker: &Docker, name: &str) -> Result<Option<String>, DockerError> {
    let options = ListNetworksOptions {
        filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
    };
    let mut found: Vec<Network> = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| DockerError::Network {
            name: name.to_owned(),
            reason: e.to_string(),
        })?
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let Some(network) = found.into_iter().next() else {
        return Ok(None);
    };
    let isolated = network.driver.as_deref() == Some("bridge")
        && network
            .options
            .as_ref()
            .and_then(|o| o.get(ICC_OPTION))
            .is_some_and(|v| v == "false");
    if !isolated {
        return Err(DockerError::Network {
            name: name.to_owned(),
            reason: format!(
                "it exists but is not a bridge with {ICC_OPTION}=false; remove it or pick another name"
            ),
        });
    }
    Ok(network.id)
}
