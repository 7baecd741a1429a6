//! The S3 object store (`aws-sdk-s3`).
//!
//! Create-only writes send `If-None-Match: *` (S3 answers 412 when the key exists);
//! bodies above the multipart threshold go up in 8 MiB parts and become visible
//! only when the multipart upload completes, itself conditional. Throttling, 5xx
//! answers and timed-out attempts are retried with exponential backoff and jitter
//! by the SDK's standard retry mode; every attempt and every operation has a time
//! limit, so a stalled S3 fails a request (503) instead of holding it.
//!
//! A create-only write whose first attempt succeeded but whose answer was lost is
//! retried by the SDK and meets 412: each write carries a random id in its
//! metadata (`x-amz-meta-vault-write`), and a 412 on an object carrying the
//! write's own id is its success, not a conflict.
//!
//! A GET body cut off mid-way (the SDK retries only until the answer's head) is
//! resumed with a ranged GET from the last byte received, `If-Match` the first
//! answer's ETag so the rest is of the same object. A circuit breaker
//! (`circuit_breaker.rs`) fails every operation at once while S3 keeps failing.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::circuit_breaker::CircuitBreaker;
use super::{ByteStream, ObjectInfo, ObjectName, ObjectStore, StorageError};

/// Size of one multipart part (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Metadata key of a write's random id.
const WRITE_ID: &str = "vault-write";
/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for an operation with all its retries; each attempt gets a third of it
/// (a part of at most 8 MiB, or a single put below the multipart threshold, must
/// go up within it).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);
/// Ranged GETs in a row that may resume a cut-off body without receiving a byte.
const RESUMES_WITHOUT_PROGRESS: u32 = 3;
/// Upper bound of the first retry's jittered backoff (doubling per attempt).
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Upper bound of any retry's backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// An attempt's share of an operation's time limit.
fn attempt_timeout(operation: Duration) -> Duration {
    (operation / 3).max(Duration::from_millis(500))
}

/// Time limits of S3 operations: `operation` in all, a third of it per attempt.
fn timeouts(operation: Duration) -> aws_config::timeout::TimeoutConfig {
    let attempt = attempt_timeout(operation);
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// Objects in an S3 bucket under a prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    multipart_threshold: usize,
    object_lock: Option<ObjectLock>,
    breaker: Arc<CircuitBreaker>,
    /// The time limit of one attempt (see [`timeouts`]).
    attempt_timeout: Duration,
}

/// Feeds the store's circuit breaker with the outcome of every S3 operation
/// (after the SDK's retries): an answer below 500 (and not 429) shows S3 alive.
#[derive(Debug)]
struct BreakerFeed(Arc<CircuitBreaker>);

impl Intercept for BreakerFeed {
    fn name(&self) -> &'static str {
        "vault-circuit-breaker"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let alive = context.response().is_some_and(|r| {
            let status = r.status().as_u16();
            status < 500 && status != 429
        });
        self.0.record(alive);
        Ok(())
    }
}

/// S3 Object Lock retention put on every object this store writes (backup
/// repositories on buckets created with Object Lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Governance (removable by privileged users) or compliance (by nobody).
    pub compliance: bool,
    /// Retention from the moment of the write.
    pub days: u32,
}

impl ObjectLock {
    /// The mode's S3 name.
    pub fn mode_name(&self) -> &'static str {
        if self.compliance {
            "compliance"
        } else {
            "governance"
        }
    }

    fn mode(&self) -> aws_sdk_s3::types::ObjectLockMode {
        if self.compliance {
            aws_sdk_s3::types::ObjectLockMode::Compliance
        } else {
            aws_sdk_s3::types::ObjectLockMode::Governance
        }
    }

    fn retention_mode(&self) -> aws_sdk_s3::types::ObjectLockRetentionMode {
        if self.compliance {
            aws_sdk_s3::types::ObjectLockRetentionMode::Compliance
        } else {
            aws_sdk_s3::types::ObjectLockRetentionMode::Governance
        }
    }

    fn retain_until(&self) -> aws_sdk_s3::primitives::DateTime {
        let until = std::time::SystemTime::now()
            + std::time::Duration::from_secs(u64::from(self.days) * 86_400);
        aws_sdk_s3::primitives::DateTime::from(until)
    }
}

fn backend<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageError::Backend(DisplayErrorContext(e).to_string())
}

fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::status_code)
}

/// Status code of a raw response (kept generic over the SDK's response type).
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3Store {
    /// A store over `bucket`/`prefix`. Endpoint and region default to the standard
    /// AWS environment; a custom endpoint uses path-style addressing.
    pub async fn new(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        multipart_threshold: u64,
    ) -> Self {
        let mut loader = aws_config::from_env()
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(5)
                    // The SDK's default first backoff (up to 1 s, doubling) is
                    // for batch clients; a request path waits at most
                    // 50 + 100 + 200 + 400 ms between its five attempts.
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(timeouts(OPERATION_TIMEOUT));
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_owned()));
        }
        let shared = loader.load().await;
        let custom_endpoint = endpoint.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let breaker = Arc::new(CircuitBreaker::default());
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(custom_endpoint)
            .interceptor(BreakerFeed(breaker.clone()))
            .build();
        let prefix = prefix.trim_matches('/');
        S3Store {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            multipart_threshold: usize::try_from(multipart_threshold)
                .unwrap_or(usize::MAX)
                .max(PART_SIZE),
            object_lock: None,
            breaker,
            attempt_timeout: attempt_timeout(OPERATION_TIMEOUT),
        }
    }

    /// Bounds each operation, retries included, to `operation` (each attempt to a
    /// third of it) instead of the default 90 s.
    pub fn with_operation_timeout(mut self, operation: Duration) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .timeout_config(timeouts(operation))
            .build();
        self.attempt_timeout = attempt_timeout(operation);
        self.client = Client::from_conf(config);
        self
    }

    /// Puts Object Lock retention on every object written from now on.
    pub fn with_object_lock(mut self, lock: ObjectLock) -> Self {
        self.object_lock = Some(lock);
        self
    }

    /// Whether the bucket was created with Object Lock enabled.
    pub async fn object_lock_enabled(&self) -> Result<bool, StorageError> {
        self.admit()?;
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled")),
            Err(e) if matches!(status_of(&e), Some(404)) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    fn key(&self, name: &ObjectName) -> String {
        format!("{}{}", self.prefix, name.as_str())
    }

    /// Whether the object under `name` is the one the write `write_id` stored (its
    /// 412 met an earlier attempt of itself).
    async fn written_by(&self, name: &ObjectName, write_id: &str) -> Result<bool, StorageError> {
        Ok(self.head_output(name).await?.is_some_and(|head| {
            head.metadata()
                .and_then(|m| m.get(WRITE_ID))
                .is_some_and(|id| id == write_id)
        }))
    }

    /// HeadObject; `None` when the key does not exist.
    async fn head_output(
        &self,
        name: &ObjectName,
    ) -> Result<Option<HeadObjectOutput>, StorageError> {
        self.admit()?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
        {
            Ok(head) => Ok(Some(head)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// Refuses at once while the circuit breaker is open.
    fn admit(&self) -> Result<(), StorageError> {
        self.breaker.admit().map_err(|left| {
            StorageError::Backend(format!(
                "S3 keeps failing: requests refused for {:.1} s more (circuit breaker)",
                left.as_secs_f64()
            ))
        })
    }

    /// The answer to a create-only write that met 412 or 409: its own earlier
    /// attempt (success), or another writer's object.
    async fn taken(&self, name: &ObjectName, write_id: &str) -> Result<(), StorageError> {
        if self.written_by(name, write_id).await? {
            return Ok(());
        }
        Err(StorageError::AlreadyExists(name.to_string()))
    }

    async fn put_single(&self, name: &ObjectName, body: Bytes) -> Result<(), StorageError> {
        self.admit()?;
        let write_id = hex::encode(rand::random::<[u8; 16]>());
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .if_none_match("*")
            .metadata(WRITE_ID, &write_id)
            .set_object_lock_mode(self.object_lock.map(|l| l.mode()))
            .set_object_lock_retain_until_date(self.object_lock.map(|l| l.retain_until()))
            .body(S3Body::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(412 | 409)) => self.taken(name, &write_id).await,
            Err(e) => Err(backend(e)),
        }
    }

    async fn put_multipart(
        &self,
        name: &ObjectName,
        first: Bytes,
        mut body: ByteStream,
    ) -> Result<u64, StorageError> {
        self.admit()?;
        let key = self.key(name);
        // Fail early when the name is taken, before sending gigabytes.
        if self.head(name).await?.is_some() {
            return Err(StorageError::AlreadyExists(name.to_string()));
        }
        let write_id = hex::encode(rand::random::<[u8; 16]>());
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .metadata(WRITE_ID, &write_id)
            .set_object_lock_mode(self.object_lock.map(|l| l.mode()))
            .set_object_lock_retain_until_date(self.object_lock.map(|l| l.retain_until()))
            .send()
            .await
            .map_err(backend)?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = async {
            let mut parts = Vec::new();
            let mut size = 0u64;
            let mut buffer = BytesMut::from(&first[..]);
            let mut source_done = false;
            loop {
                while buffer.len() < PART_SIZE && !source_done {
                    match body.next().await {
                        Some(chunk) => buffer.extend_from_slice(&chunk?),
                        None => source_done = true,
                    }
                }
                if buffer.is_empty() {
                    break;
                }
                // Every part but the last is exactly PART_SIZE.
                let part = buffer.split_to(buffer.len().min(PART_SIZE)).freeze();
                size += part.len() as u64;
                let number = i32::try_from(parts.len() + 1)
                    .map_err(|_| StorageError::Backend("too many parts".into()))?;
                let uploaded = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(S3Body::from(part))
                    .send()
                    .await
                    .map_err(backend)?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(uploaded.e_tag().map(str::to_owned))
                        .build(),
                );
                if source_done && buffer.is_empty() {
                    break;
                }
            }
            let completed = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            match completed {
                Ok(_) => Ok(size),
                Err(e) if matches!(status_of(&e), Some(412 | 409)) => {
                    self.taken(name, &write_id).await.map(|()| size)
                }
                Err(e) => Err(backend(e)),
            }
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

impl S3Store {
    /// GetObject (optionally ranged); `None` when the key does not exist.
    async fn fetch(
        &self,
        name: &ObjectName,
        range: Option<String>,
        if_match: Option<String>,
    ) -> Result<Option<GetObjectOutput>, StorageError> {
        self.admit()?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .set_range(range)
            .set_if_match(if_match);
        match request.send().await {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }
}

fn to_time(at: &aws_sdk_s3::primitives::DateTime) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(at.secs()).ok()
}

/// A GET body being read, and what it takes to ask again for the rest.
struct Resuming {
    store: S3Store,
    name: ObjectName,
    /// Offset of the next byte expected.
    next: u64,
    /// Offset just past the last byte wanted.
    end: u64,
    etag: Option<String>,
    body: S3Body,
    /// Resumes in a row that brought no byte.
    fruitless: u32,
}

/// The body of `out` (bytes `start..` of `name`) as a stream that resumes a
/// cut-off body with ranged GETs of the same object version.
fn resuming_body(
    store: &S3Store,
    name: &ObjectName,
    start: u64,
    out: GetObjectOutput,
) -> ByteStream {
    let length = out.content_length().unwrap_or(0).max(0) as u64;
    let state = Resuming {
        store: store.clone(),
        name: name.clone(),
        next: start,
        end: start + length,
        etag: out.e_tag().map(str::to_owned),
        body: out.body,
        fruitless: 0,
    };
    Box::pin(futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        loop {
            let cut = match s.body.try_next().await {
                Ok(Some(chunk)) => {
                    s.next += chunk.len() as u64;
                    s.fruitless = 0;
                    return Some((Ok(chunk), Some(s)));
                }
                Ok(None) => return None,
                Err(e) => e,
            };
            if s.next >= s.end {
                // Every byte arrived before the connection broke.
                return None;
            }
            if s.fruitless >= RESUMES_WITHOUT_PROGRESS || s.etag.is_none() {
                return Some((
                    Err(StorageError::Backend(format!("reading {}: {cut}", s.name))),
                    None,
                ));
            }
            s.fruitless += 1;
            tracing::debug!(object = %s.name, from = s.next, "S3 body cut off; resuming with a ranged GET");
            let range = format!("bytes={}-{}", s.next, s.end - 1);
            match s.store.fetch(&s.name, Some(range), s.etag.clone()).await {
                Ok(Some(out)) => s.body = out.body,
                Ok(None) => return Some((Err(StorageError::NotFound(s.name.to_string())), None)),
                Err(e) => return Some((Err(e), None)),
            }
        }
    }))
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn extend_lock(&self, name: &ObjectName) -> Result<(), StorageError> {
        self.admit()?;
        let Some(lock) = self.object_lock else {
            return Ok(());
        };
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(lock.retention_mode())
            .retain_until_date(lock.retain_until())
            .build();
        match self
            .client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.key(name))
            .retention(retention)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Err(StorageError::NotFound(name.to_string())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn put_new(&self, name: &ObjectName, mut body: ByteStream) -> Result<u64, StorageError> {
        let mut buffer = BytesMut::new();
        while buffer.len() <= self.multipart_threshold {
            match body.next().await {
                Some(chunk) => buffer.extend_from_slice(&chunk?),
                None => {
                    let size = buffer.len() as u64;
                    self.put_single(name, buffer.freeze()).await?;
                    return Ok(size);
                }
            }
        }
        self.put_multipart(name, buffer.freeze(), body).await
    }

    async fn replace(&self, name: &ObjectName, bytes: Bytes) -> Result<(), StorageError> {
        self.admit()?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .body(S3Body::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn get(&self, name: &ObjectName) -> Result<ByteStream, StorageError> {
        let out = self
            .fetch(name, None, None)
            .await?
            .ok_or_else(|| StorageError::NotFound(name.to_string()))?;
        Ok(resuming_body(self, name, 0, out))
    }

    async fn get_range(
        &self,
        name: &ObjectName,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        if range.start >= range.end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let out = self
            .fetch(name, Some(header), None)
            .await?
            .ok_or_else(|| StorageError::NotFound(name.to_string()))?;
        Ok(resuming_body(self, name, range.start, out))
    }

    async fn get_bytes(&self, name: &ObjectName) -> Result<Option<Bytes>, StorageError> {
        let Some(out) = self.fetch(name, None, None).await? else {
            return Ok(None);
        };
        let mut body = resuming_body(self, name, 0, out);
        let mut bytes = BytesMut::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(Some(bytes.freeze()))
    }

    async fn head(&self, name: &ObjectName) -> Result<Option<ObjectInfo>, StorageError> {
        Ok(self.head_output(name).await?.map(|out| ObjectInfo {
            name: name.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: out.last_modified().and_then(to_time),
        }))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        self.admit()?;
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{}{prefix}", self.prefix))
                .max_keys(i32::try_from(limit.min(1000)).unwrap_or(1000));
            if let Some(after) = start_after {
                request = request.start_after(format!("{}{after}", self.prefix));
            }
            if let Some(t) = &token {
                request = request.continuation_token(t);
            }
            let out = request.send().await.map_err(backend)?;
            for object in out.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                if let Some(name) = ObjectName::parse(key) {
                    found.push(ObjectInfo {
                        name,
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified: object.last_modified().and_then(to_time),
                    });
                }
            }
            token = out.next_continuation_token().map(str::to_owned);
            if found.len() >= limit || token.is_none() {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn delete(&self, name: &ObjectName) -> Result<(), StorageError> {
        self.admit()?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map(|_| ())
            .map_err(backend)
    }

    /// ListObjectVersions on the object's key, then DeleteObject with each
    /// VersionId (versions and delete markers alike). On a bucket without
    /// versioning the listing holds the one `null` version.
    async fn delete_all_versions(&self, name: &ObjectName) -> Result<(), StorageError> {
        self.admit()?;
        let key = self.key(name);
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let listed = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(backend)?;
            // The prefix also matches longer keys: only this exact key is ours.
            let versions = listed
                .versions()
                .iter()
                .filter(|v| v.key() == Some(key.as_str()))
                .map(|v| v.version_id())
                .chain(
                    listed
                        .delete_markers()
                        .iter()
                        .filter(|m| m.key() == Some(key.as_str()))
                        .map(|m| m.version_id()),
                );
            for version in versions {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .set_version_id(version.map(str::to_owned))
                    .send()
                    .await
                    .map_err(backend)?;
            }
            if listed.is_truncated() != Some(true) {
                return Ok(());
            }
            key_marker = listed.next_key_marker().map(str::to_owned);
            version_marker = listed.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && version_marker.is_none() {
                return Ok(());
            }
        }
    }

    async fn get_versioned(
        &self,
        name: &ObjectName,
    ) -> Result<Option<(Bytes, String)>, StorageError> {
        let Some(out) = self.fetch(name, None, None).await? else {
            return Ok(None);
        };
        let etag = out
            .e_tag()
            .map(str::to_owned)
            .ok_or_else(|| StorageError::Backend(format!("{name}: S3 gave no ETag")))?;
        let mut body = resuming_body(self, name, 0, out);
        let mut bytes = BytesMut::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(Some((bytes.freeze(), etag)))
    }

    /// PutObject `If-Match` the ETag read. A 412 that meets this write's own
    /// earlier attempt (its answer lost, the SDK retried) is its success.
    async fn replace_if(
        &self,
        name: &ObjectName,
        bytes: Bytes,
        expected: &str,
    ) -> Result<(), StorageError> {
        self.admit()?;
        let write_id = hex::encode(rand::random::<[u8; 16]>());
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .if_match(expected)
            .metadata(WRITE_ID, &write_id)
            .body(S3Body::from(bytes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(412 | 409)) => {
                if self.written_by(name, &write_id).await? {
                    Ok(())
                } else {
                    Err(StorageError::Changed(name.to_string()))
                }
            }
            Err(e) if status_of(&e) == Some(404) => Err(StorageError::NotFound(name.to_string())),
            Err(e) => Err(backend(e)),
        }
    }

    fn write_settle_time(&self) -> Duration {
        self.attempt_timeout
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.admit()?;
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let code = e.code().unwrap_or("unknown").to_owned();
                StorageError::Backend(format!(
                    "bucket {} not reachable ({code}): {}",
                    self.bucket,
                    DisplayErrorContext(e)
                ))
            })
    }
}
