//! The vault's wire contract: the JSON bodies its HTTP API answers with, shared by
//! the server (which describes them in OpenAPI) and the CLI (which reads them).
//!
//! Some of these are also records the domain stores as they are answered (a
//! tenant record, an audit event): their JSON is one format, versioned where it is
//! stored. Everything here is plain data with serde; with the `openapi` feature
//! (the server's) each type also describes itself to utoipa. Nothing here does
//! I/O or knows HTTP.

pub mod audit;
pub mod documents;
pub mod error;
pub mod jobs;
pub mod json;
pub mod reports;
pub mod roles;
pub mod tenants;

pub use audit::{AuditEvent, Outcome, ProofResponse};
pub use documents::DocumentKind;
pub use error::ErrorBody;
pub use jobs::{is_job_id, JobList, JobProgress, JobRecord, JobResult, JobState, JOB_ID_PREFIX};
pub use reports::{
    BackupSummary, DrillReport, OffboardReport, ReconcileReport, RewrapReport, TenantDrill,
};
pub use roles::{OperatorRole, Role};
pub use tenants::{TenantRecord, TenantStatus};
