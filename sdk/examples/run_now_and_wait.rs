//! Runs a new job now (idempotently), waits for it to end, and prints its output.
//!
//! `cargo run -p kairos-sdk --example run_now_and_wait` with a running Kairos (see the README);
//! the process exits 1 unless the run succeeded.

use std::time::Duration;

use kairos_sdk::{Client, NewJob};

#[tokio::main]
async fn main() -> Result<(), kairos_sdk::Error> {
    let client = Client::from_env()?;
    let job = client
        .create_job(NewJob::new("run-now", "busybox:1.36").command(["sh", "-c", "echo it ran"]))
        .await?;

    // The key makes the call safe to repeat (and to retry): the same key answers the same run.
    let key = format!("example-{}", job.id);
    let execution = client.execute_now(&job.id, Some(&key)).await?;
    let again = client.execute_now(&job.id, Some(&key)).await?;
    assert_eq!(again.run.id, execution.run.id);
    println!("run {} ({})", execution.run.id, execution.run.state);

    let run = client
        .wait_for_run_with(&execution.run.id, Duration::from_secs(120), |event| {
            println!(
                "  {} -> {}",
                event.from_state.as_deref().unwrap_or("-"),
                event.to_state
            );
        })
        .await?;
    println!(
        "ended {} (reason {:?}, exit code {:?})",
        run.state, run.reason, run.exit_code
    );
    print!("{}", client.run_logs(&run.id).await?.content);
    if run.state != "succeeded" {
        std::process::exit(1);
    }
    Ok(())
}
