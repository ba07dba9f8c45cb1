//! Creates a job and prints it; a bad limit shows the error with the field at fault.
//!
//! `KAIROS_API_KEY=… cargo run -p kairos-sdk --example create_job` (the endpoint and key come
//! from `KAIROS_ENDPOINT` / `KAIROS_API_KEY` or the credentials file `kairos standalone` writes).

use std::time::Duration;

use kairos_sdk::{Client, NewJob};

#[tokio::main]
async fn main() -> Result<(), kairos_sdk::Error> {
    let client = Client::from_env()?;
    let job = client
        .create_job(
            NewJob::new("hello", "busybox:1.36")
                .command(["sh", "-c", "echo hello from kairos"])
                .memory_mb(128)
                .timeout(Duration::from_secs(60))
                .label("example", "create_job"),
        )
        .await?;
    println!(
        "created {} ({}), {} MiB, {} s",
        job.id, job.name, job.memory_mb, job.timeout_seconds
    );

    // Bad input is refused with the field named, and nothing is written.
    if let Err(e) = client
        .create_job(NewJob::new("too-big", "busybox:1.36").memory_mb(4096))
        .await
    {
        println!(
            "refused as expected: {e} [code {}, field {:?}]",
            e.code_name(),
            e.field()
        );
    }
    Ok(())
}
