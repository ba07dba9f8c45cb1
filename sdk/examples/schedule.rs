//! Attaches schedules to a job, prints the server's preview of the next fires, pauses one, and
//! lists every schedule of the job through the pagination stream.
//!
//! `cargo run -p kairos-sdk --example schedule`

use std::time::Duration;

use futures::TryStreamExt;
use kairos_domain::OverlapPolicy;
use kairos_sdk::{Client, NewJob, NewSchedule};

#[tokio::main]
async fn main() -> Result<(), kairos_sdk::Error> {
    let client = Client::from_env()?;
    let job = client
        .create_job(NewJob::new("scheduled", "busybox:1.36").command(["date"]))
        .await?;

    let weekdays = client
        .create_schedule(NewSchedule::cron(&job.id, "0 30 9 * * mon-fri").timezone("Europe/Paris"))
        .await?;
    println!(
        "{}: cron {:?} in {}",
        weekdays.id, weekdays.cron, weekdays.timezone
    );
    for fire in &weekdays.next_fire_times {
        println!("  next: {}", fire.local);
    }

    let every = client
        .create_schedule(
            NewSchedule::every(&job.id, Duration::from_secs(300))
                .overlap_policy(OverlapPolicy::Skip)
                .jitter(Duration::from_secs(5)),
        )
        .await?;
    let paused = client.pause_schedule(&every.id, Some("example")).await?;
    println!("{} paused: {}", paused.id, paused.paused);

    let all: Vec<_> = client
        .schedules(Some(job.id.clone()), 100)
        .try_collect()
        .await?;
    println!("{} schedules on {}", all.len(), job.id);
    Ok(())
}
