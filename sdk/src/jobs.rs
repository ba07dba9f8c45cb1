//! Jobs: what to run. The builders [`NewJob`] and [`JobUpdate`] make the requests, and the
//! [`Client`] methods here send them; nothing here judges limits (the server's checks are the
//! truth and answer with the field at fault).

use std::{collections::BTreeMap, fmt, time::Duration};

use kairos_proto::v1::{
    CreateJobRequest, DeleteJobRequest, GetJobRequest, Job, ListJobsRequest, RetryPolicy,
    StringList, StringMap, UpdateJobRequest,
};

use crate::{Client, Error, Page, ResultStream, pages::paginate, retry::CallKind};

/// The setters a new job and a job update share: the create and update requests name these
/// fields alike.
macro_rules! limit_setters {
    () => {
        /// The memory limit in MiB (at most 1024).
        pub fn memory_mb(mut self, mb: i32) -> Self {
            self.0.memory_mb = Some(mb);
            self
        }

        /// The wall-clock limit of one run (at most 24 h), in whole seconds.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.0.timeout_seconds = Some(seconds(timeout));
            self
        }

        /// Retry a failed run: `max_attempts` in all, the first wait `initial_backoff`,
        /// doubling up to `max_backoff` (whole seconds). On an update it replaces the policy.
        pub fn retry(
            mut self,
            max_attempts: i32,
            initial_backoff: Duration,
            max_backoff: Duration,
        ) -> Self {
            self.0.retry = Some(RetryPolicy {
                max_attempts: Some(max_attempts),
                initial_backoff_seconds: Some(seconds(initial_backoff)),
                max_backoff_seconds: Some(seconds(max_backoff)),
            });
            self
        }
    };
}

/// A job to create: `NewJob::new(name, image)` plus what differs from the defaults
/// (the image's own command, no env, 256 MiB, 1 hour, no retry).
///
/// ```
/// use std::time::Duration;
/// use kairos_sdk::NewJob;
///
/// let job = NewJob::new("nightly-report", "busybox:1.36")
///     .command(["sh", "-c", "echo report"])
///     .env("REGION", "eu")
///     .memory_mb(128)
///     .timeout(Duration::from_secs(600))
///     .retry(3, Duration::from_secs(10), Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewJob(CreateJobRequest);

impl NewJob {
    /// A job running `image` under the display name `name`.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self(CreateJobRequest {
            name: name.into(),
            image: image.into(),
            ..CreateJobRequest::default()
        })
    }

    /// The command and its arguments (default: the image's own command).
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.0.command = argv.into_iter().map(Into::into).collect();
        self
    }

    /// One environment variable (repeat for more; a repeated name keeps the last value).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.env.insert(name.into(), value.into());
        self
    }

    /// One label (repeat for more).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.labels.insert(key.into(), value.into());
        self
    }

    limit_setters!();
}

impl From<NewJob> for CreateJobRequest {
    fn from(job: NewJob) -> Self {
        job.0
    }
}

/// A change to a job: named fields replace, the rest stay.
///
/// ```
/// use kairos_sdk::JobUpdate;
///
/// let update = JobUpdate::new("job_0190f0c2d8a87c3e9f4b1a2b3c4d5e6f")
///     .memory_mb(512)
///     .clear_env();
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobUpdate(UpdateJobRequest);

impl JobUpdate {
    /// A change to the job `job_id` that, so far, changes nothing.
    pub fn new(job_id: impl fmt::Display) -> Self {
        Self(UpdateJobRequest {
            job_id: job_id.to_string(),
            ..UpdateJobRequest::default()
        })
    }

    /// A new display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// A new image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.0.image = Some(image.into());
        self
    }

    /// A new command; an empty one goes back to the image's own command.
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.0.command = Some(StringList {
            values: argv.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Replaces the whole env.
    pub fn env(mut self, env: BTreeMap<String, String>) -> Self {
        self.0.env = Some(StringMap { entries: env });
        self
    }

    /// Removes every env variable.
    pub fn clear_env(self) -> Self {
        self.env(BTreeMap::new())
    }

    /// Replaces all labels.
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.0.labels = Some(StringMap { entries: labels });
        self
    }

    limit_setters!();
}

impl From<JobUpdate> for UpdateJobRequest {
    fn from(update: JobUpdate) -> Self {
        update.0
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Client {
    /// Creates a job ([`NewJob`] or a raw `CreateJobRequest`). Not retried once sent: a
    /// retry could create a second job.
    pub async fn create_job(&self, job: impl Into<CreateJobRequest>) -> Result<Job, Error> {
        Ok(self
            .call(
                CallKind::Create,
                "CreateJob",
                job.into(),
                |mut c, r| async move { c.create_job(r).await },
            )
            .await?)
    }

    /// Reads a job.
    pub async fn get_job(&self, job_id: impl fmt::Display) -> Result<Job, Error> {
        let request = GetJobRequest {
            job_id: job_id.to_string(),
        };
        Ok(self
            .call(CallKind::Read, "GetJob", request, |mut c, r| async move {
                c.get_job(r).await
            })
            .await?)
    }

    /// One page of the tenant's jobs, oldest first. `page_size` 0 takes the server's default
    /// (100, at most 1000); `page_token` is empty for the first page.
    pub async fn list_jobs(
        &self,
        page_size: u32,
        page_token: impl Into<String>,
    ) -> Result<Page<Job>, Error> {
        let request = ListJobsRequest {
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: page_token.into(),
        };
        let answer = self
            .call(CallKind::Read, "ListJobs", request, |mut c, r| async move {
                c.list_jobs(r).await
            })
            .await?;
        Ok(Page::new(answer.jobs, answer.next_page_token))
    }

    /// Every job of the tenant, fetching pages of `page_size` as the stream is read.
    pub fn jobs(&self, page_size: u32) -> ResultStream<Job> {
        let client = self.clone();
        paginate(move |token| {
            let client = client.clone();
            async move { client.list_jobs(page_size, token).await }
        })
    }

    /// Changes a job ([`JobUpdate`] or a raw `UpdateJobRequest`); retried on `UNAVAILABLE`
    /// (applying the same change twice leaves the same job).
    pub async fn update_job(&self, update: impl Into<UpdateJobRequest>) -> Result<Job, Error> {
        Ok(self
            .call(
                CallKind::IdempotentWrite,
                "UpdateJob",
                update.into(),
                |mut c, r| async move { c.update_job(r).await },
            )
            .await?)
    }

    /// Deletes a job, its schedules, and cancels its pending runs. A retried delete whose
    /// earlier attempt already deleted the job succeeds.
    pub async fn delete_job(&self, job_id: impl fmt::Display) -> Result<(), Error> {
        let request = DeleteJobRequest {
            job_id: job_id.to_string(),
        };
        let result = self
            .call(
                CallKind::IdempotentWrite,
                "DeleteJob",
                request,
                |mut c, r| async move { c.delete_job(r).await },
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(f) if f.was_retried() && f.status.code() == tonic::Code::NotFound => Ok(()),
            Err(f) => Err(f.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_job_sends_only_what_was_named() {
        let req: CreateJobRequest = NewJob::new("n", "busybox")
            .command(["echo", "hi"])
            .env("A", "1")
            .env("A", "2")
            .memory_mb(128)
            .into();
        assert_eq!(req.command, ["echo", "hi"]);
        assert_eq!(req.env.get("A").map(String::as_str), Some("2"));
        assert_eq!(req.memory_mb, Some(128));
        assert_eq!((req.timeout_seconds, req.retry), (None, None));
    }

    #[test]
    fn a_job_update_distinguishes_clearing_from_keeping() {
        let req: UpdateJobRequest = JobUpdate::new("job_1").clear_env().into();
        assert_eq!(req.job_id, "job_1");
        assert_eq!(req.env, Some(StringMap::default()));
        assert_eq!((req.labels, req.command, req.name), (None, None, None));
        let req: UpdateJobRequest = JobUpdate::new("job_1")
            .retry(3, Duration::from_secs(5), Duration::from_secs(60))
            .timeout(Duration::from_secs(90))
            .into();
        let retry = req.retry.unwrap();
        assert_eq!(retry.max_attempts, Some(3));
        assert_eq!(retry.max_backoff_seconds, Some(60));
        assert_eq!(req.timeout_seconds, Some(90));
    }
}
