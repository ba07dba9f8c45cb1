//! Checks that `etcd()` answers puts and gets and, when owned, keeps its data across a stop and start; never writes outside its key prefix.

use etcd_client::Client;

async fn get(client: &mut Client, key: &str) -> anyhow::Result<Option<String>> {
    let response = client.get(key, None).await?;
    match response.kvs().first() {
        Some(kv) => Ok(Some(kv.value_str()?.to_owned())),
        None => Ok(None),
    }
}

#[tokio::test]
async fn answers_a_put_and_a_get_under_its_prefix() -> anyhow::Result<()> {
    let etcd = kairos_testkit::etcd().await?;
    assert!(etcd.key_prefix().starts_with('/') && etcd.key_prefix().ends_with('/'));
    assert!(!etcd.endpoints().is_empty());
    let key = format!("{}greeting", etcd.key_prefix());
    let mut client = etcd.client().await?;
    client.put(key.as_str(), "hello", None).await?;
    assert_eq!(get(&mut client, &key).await?.as_deref(), Some("hello"));
    Ok(())
}

#[tokio::test]
async fn gives_each_caller_its_own_prefix() -> anyhow::Result<()> {
    let first = kairos_testkit::etcd().await?;
    let second = kairos_testkit::etcd().await?;
    assert_ne!(first.key_prefix(), second.key_prefix());
    Ok(())
}

#[tokio::test]
async fn keeps_its_data_across_a_stop_and_a_start() -> anyhow::Result<()> {
    let mut etcd = kairos_testkit::etcd().await?;
    if !etcd.is_owned() {
        // A shared etcd must never be stopped; prove the refusal instead.
        assert!(etcd.stop().await.is_err());
        return Ok(());
    }
    let key = format!("{}survivor", etcd.key_prefix());
    let mut client = etcd.client().await?;
    client.put(key.as_str(), "still here", None).await?;

    etcd.stop().await?;
    let address = etcd.endpoints()[0].trim_start_matches("http://").to_owned();
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "a stopped etcd must not accept connections"
    );

    etcd.start().await?;
    let mut client = etcd.client().await?;
    assert_eq!(get(&mut client, &key).await?.as_deref(), Some("still here"));
    Ok(())
}
