//! Watches a run's state transitions as they happen (the `WatchRun` stream) and then follows
//! its output until it ends.
//!
//! `cargo run -p kairos-sdk --example watch -- <run_id>`; without a run id it starts one.

use std::time::Duration;

use futures::StreamExt;
use kairos_sdk::{Client, NewJob};

#[tokio::main]
async fn main() -> Result<(), kairos_sdk::Error> {
    let client = Client::from_env()?;
    let run_id = match std::env::args().nth(1) {
        Some(id) => id,
        None => {
            let job = client
                .create_job(NewJob::new("watched", "busybox:1.36").command([
                    "sh",
                    "-c",
                    "for i in 1 2 3; do echo tick $i; sleep 1; done",
                ]))
                .await?;
            client.execute_now(&job.id, None).await?.run.id
        }
    };

    let mut events = client.watch_run(&run_id);
    while let Some(event) = events.next().await {
        let event = event?;
        println!(
            "{} -> {}{}",
            event.from_state.as_deref().unwrap_or("-"),
            event.to_state,
            event.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }

    let mut output = client.follow_logs(&run_id, Duration::from_secs(1));
    while let Some(chunk) = output.next().await {
        let chunk = chunk?;
        if chunk.gap {
            eprintln!("[output skipped: the stored tail is capped]");
        }
        print!("{}", chunk.text);
    }
    Ok(())
}
