//! Checked types of Kairos shared by every crate; it does no I/O and depends on no crate of ours.
//!
//! Everything a customer sends is parsed into these types at the edge (REST, gRPC, CLI): a value
//! of `JobSpec` or `ScheduleSpec` is valid by construction, so nothing inside re-validates.

pub mod error;
pub mod ids;
pub mod image;
pub mod job;
pub mod page;
pub mod registry;
pub mod run;
pub mod schedule;
pub mod shard;
pub mod tenant;

pub use error::{ErrorCode, FieldError};
pub use ids::{ApiKeyId, IdParseError, JobId, RunId, ScheduleId, TenantId};
pub use image::ImageRef;
pub use job::{
    Command, Env, JobDraft, JobName, JobSpec, Labels, MemoryLimit, RetryDraft, RetryPolicy,
    RunTimeout,
};
pub use page::{PageRequest, PageToken};
pub use registry::{CredentialDraft, CredentialName, CredentialSpec, RegistryHost, Secret};
pub use run::{FailureReason, RunState, SkipReason, Trigger};
pub use schedule::{
    Cadence, CronSpec, FirePreview, OverlapPolicy, ScheduleDraft, ScheduleSpec, TimeZone,
};
pub use shard::{SHARD_COUNT, ShardId};
pub use tenant::TenantName;
