//! The document API: upload, download (with `Range`), metadata, delete, list.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use vault_crypto::DocumentId;
use vault_index::fields::{Field, BASE_FIELDS};

use std::time::Duration;

use super::extract::{rfc3339_param, QueryParams};
use crate::audit_note::NoteSlot;
use crate::auth::header_str;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::limits::Budget;
use crate::state::SharedState;
use vault_core::documents::{self, DocumentKind, Fields, UploadRequest};
use vault_core::extraction::Extraction;
use vault_core::storage::StorageError;
use vault_core::tenant_documents::ListFilter;

/// A document's bytes as sent: described as binary in the OpenAPI document (a
/// `Vec<u8>` would be described as an array of numbers). The handler streams
/// the body; nothing builds this type.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // only described
pub struct DocumentBytes(Vec<u8>);

/// `X-Vault-Extraction`: what the server does with the body's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExtractionMode {
    /// Extract fields from X12 and FHIR bodies; refuse what cannot be read.
    Auto,
    /// Store as given, with the caller's fields only.
    Opaque,
}

impl ExtractionMode {
    fn from_header(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None | Some("auto") => Ok(Self::Auto),
            Some("opaque") => Ok(Self::Opaque),
            Some(_) => Err(ApiError::bad_request(
                "invalid_header",
                "X-Vault-Extraction must be auto or opaque",
            )),
        }
    }
}

impl From<ExtractionMode> for Extraction {
    fn from(mode: ExtractionMode) -> Self {
        match mode {
            ExtractionMode::Auto => Extraction::Auto,
            ExtractionMode::Opaque => Extraction::Opaque,
        }
    }
}

/// Answer of an upload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    /// Document id (32 hex digits).
    pub id: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Declared kind.
    pub kind: DocumentKind,
    /// Names of the fields the blind index holds for this document.
    pub indexed_fields: Vec<String>,
}

/// Decrypted metadata of a document.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetadataResponse {
    /// Document id.
    pub id: String,
    /// Declared kind.
    pub kind: DocumentKind,
    /// Content type.
    pub content_type: String,
    /// File name, if given.
    pub file_name: Option<String>,
    /// Plaintext size.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Searchable fields.
    #[schema(value_type = Object)]
    pub fields: Fields,
    /// Upload time (RFC 3339).
    pub uploaded_at: String,
}

/// One entry of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedDocument {
    /// Document id.
    pub id: String,
    /// Declared kind.
    pub kind: DocumentKind,
    /// Upload time (RFC 3339).
    pub uploaded_at: String,
    /// Ciphertext bytes stored.
    pub stored_bytes: u64,
}

/// A page of documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse {
    /// Documents, in id order.
    pub documents: Vec<ListedDocument>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this kind.
    #[param(value_type = Option<DocumentKind>)]
    pub kind: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^[0-9a-f]{32}$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Only documents uploaded at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub uploaded_after: Option<String>,
    /// Only documents uploaded before this RFC 3339 time.
    #[param(format = DateTime)]
    pub uploaded_before: Option<String>,
}

const MAX_FIELDS_HEADER: usize = 16 * 1024;

/// Validates `X-Vault-Fields`: a JSON object of search field names to a string or
/// an array of strings, each 1 to 256 characters and of the field's shape (a date
/// for `service_date`, ten digits for `provider_npi`, ...). Messages name fields,
/// never values.
pub fn parse_fields(raw: &str) -> Result<Fields, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_fields", m);
    if raw.len() > MAX_FIELDS_HEADER {
        return Err(invalid(format!(
            "X-Vault-Fields is larger than {MAX_FIELDS_HEADER} bytes"
        )));
    }
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        invalid(format!(
            "X-Vault-Fields is not valid JSON (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("X-Vault-Fields must be a JSON object".into()))?;
    let mut fields = Fields::new();
    for (name, value) in object {
        let field = Field::from_name(name).ok_or_else(|| {
            invalid(format!(
                "X-Vault-Fields names an unknown field; known fields: {}",
                BASE_FIELDS.map(Field::name).join(", ")
            ))
        })?;
        let values: Vec<String> = match value {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    invalid(format!(
                        "field {field} must be a string or an array of strings"
                    ))
                })?,
            _ => {
                return Err(invalid(format!(
                    "field {field} must be a string or an array of strings"
                )))
            }
        };
        if values
            .iter()
            .any(|v| v.trim().is_empty() || v.chars().count() > 256)
        {
            return Err(invalid(format!(
                "values of field {field} must be 1 to 256 characters"
            )));
        }
        for value in &values {
            field.normalize(value).map_err(|e| invalid(e.to_string()))?;
        }
        fields.insert(field.name().to_owned(), values);
    }
    Ok(fields)
}

fn parse_document_id(raw: &str) -> Result<DocumentId, ApiError> {
    // A malformed id cannot name a document: the same 404 as a missing one.
    raw.parse().map_err(|_| ApiError::document_not_found())
}

fn upload_response(
    id: &DocumentId,
    metadata: &documents::SealedMetadata,
    terms: &vault_core::search::SearchTerms,
) -> UploadResponse {
    UploadResponse {
        id: id.to_string(),
        size: metadata.size,
        sha256: metadata.sha256.clone(),
        kind: metadata.kind,
        indexed_fields: vault_core::search::indexed_field_names(terms),
    }
}

/// Uploads a document (streamed; any size up to the configured limit).
#[utoipa::path(post, path = "/v1/documents", request_body(content = DocumentBytes, content_type = "application/octet-stream"),
    params(
        ("X-Vault-Kind" = DocumentKind, Header, description = "eob, claim, scan or other"),
        ("X-Vault-Fields" = Option<String>, Header, description = "JSON object of searchable fields"),
        ("X-Vault-File-Name" = Option<String>, Header, description = "original file name (stored encrypted)"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry of the same request with the same key returns the first result; the key reused for a different request gets 422 `idempotency_key_mismatch`"),
        ("X-Vault-Extraction" = Option<ExtractionMode>, Header, description = "`auto` (default): extract fields from X12 and FHIR bodies, 422 when unreadable; `opaque`: store without extraction"),
    ),
    responses((status = 201, body = UploadResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "Another upload with this Idempotency-Key is in flight, or its document was deleted", body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    let tenant_id = caller.require_role(Role::Uploader)?;
    let tenant = state.vault.tenants.require_active(tenant_id).await?;
    let kind_raw = header_str(&headers, "x-vault-kind")?.ok_or_else(|| {
        ApiError::bad_request(
            "missing_kind",
            "set X-Vault-Kind to eob, claim, scan or other",
        )
    })?;
    let kind = DocumentKind::parse(kind_raw).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_kind",
            "X-Vault-Kind must be eob, claim, scan or other",
        )
    })?;
    let content_type = match header_str(&headers, "content-type")? {
        Some(ct) => {
            let parsed: mime::Mime = ct.parse().map_err(|_| {
                ApiError::bad_request("invalid_content_type", "Content-Type is not a media type")
            })?;
            parsed.essence_str().to_owned()
        }
        None => "application/octet-stream".to_owned(),
    };
    let fields = match header_str(&headers, "x-vault-fields")? {
        Some(raw) => parse_fields(raw)?,
        None => Fields::new(),
    };
    let extraction =
        ExtractionMode::from_header(header_str(&headers, "x-vault-extraction")?)?.into();
    let file_name = header_str(&headers, "x-vault-file-name")?.map(str::to_owned);
    if file_name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 255 || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_file_name",
            "X-Vault-File-Name must be 1 to 255 visible characters",
        ));
    }
    if let Some(length) =
        header_str(&headers, "content-length")?.and_then(|l| l.parse::<u64>().ok())
    {
        if length > state.vault.config.max_upload_bytes {
            return Err(StorageError::TooLarge(state.vault.config.max_upload_bytes).into());
        }
        if length == 0 {
            return Err(ApiError::bad_request(
                "empty_body",
                "the request body is empty: send the document's bytes",
            ));
        }
    }
    let idempotency_key = header_str(&headers, "idempotency-key")?;
    if let Some(key) = idempotency_key {
        vault_core::tenant_documents::check_idempotency_key(key)?;
    }
    let request = UploadRequest {
        kind,
        content_type,
        file_name,
        fields,
        extraction,
    };
    // Held until the upload is answered; none free: 503 at once, nothing read.
    let _slot = state.uploads.acquire(&tenant.id).inspect_err(|_| {
        state.vault.metrics.uploads_refused.inc();
    })?;
    let limits = &state.vault.config.limits;
    let body = crate::limits::guard_stream(
        body.into_data_stream().map_err(std::io::Error::other),
        Duration::from_secs(limits.stall_timeout_secs),
        Budget::Transfer.duration(limits),
    );
    let intent = crate::audit_trail::UploadIntent {
        state: &state,
        note: &note,
    };
    let filed = state
        .vault
        .tenant_documents
        .upload(&tenant, request, idempotency_key, body, Some(&intent))
        .await?;
    note.update(|n| n.document = Some(filed.id.to_string()));
    Ok((
        StatusCode::CREATED,
        Json(upload_response(&filed.id, &filed.metadata, &filed.terms)),
    ))
}

/// A single byte range from a `Range` header.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No (usable) Range header: the whole document.
    Whole,
    /// `start..end` (end exclusive, clamped to the document).
    Bytes(u64, u64),
    /// Cannot be satisfied (416).
    Unsatisfiable,
}

fn parse_range(raw: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = raw.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        // Multiple ranges are allowed to be ignored (RFC 9110 §14.2).
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(suffix) => (len.saturating_sub(suffix), len),
            Err(_) => return RangeRequest::Whole,
        },
        (false, true) => match a.parse::<u64>() {
            Ok(start) => (start, len),
            Err(_) => return RangeRequest::Whole,
        },
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(start), Ok(last)) if last >= start => (start, last.saturating_add(1).min(len)),
            _ => return RangeRequest::Whole,
        },
        (true, true) => return RangeRequest::Whole,
    };
    if range.0 >= len {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Bytes(range.0, range.1)
    }
}

/// Downloads a document, streamed; a single `Range` is honoured with 206.
#[utoipa::path(get, path = "/v1/documents/{id}",
    responses((status = 200, description = "the bytes"), (status = 206, description = "the requested range"), (status = 404, body = ErrorBody), (status = 416, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let tenant_id = caller.require_role(Role::Reader)?;
    let tenant = state.vault.tenants.require_active(tenant_id).await?;
    let id = parse_document_id(&id)?;
    let opened = state.vault.tenant_documents.open(&tenant, &id).await?;
    let len = opened.metadata.size;
    let range = parse_range(header_str(&headers, "range")?, len);
    let (status, wanted) = match range {
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the document has {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
        RangeRequest::Whole => (StatusCode::OK, None),
        RangeRequest::Bytes(start, end) => (StatusCode::PARTIAL_CONTENT, Some((start, end))),
    };
    let plain = state
        .vault
        .tenant_documents
        .body(&tenant, &id, &opened, wanted)
        .await?
        .plaintext
        .map_err(ApiError::from);
    // Pull the first chunk before answering, so a document whose first segment is
    // corrupt gets a clean JSON error instead of a broken 200. A later corrupt
    // segment aborts the connection: a client never receives unauthenticated bytes.
    let mut plain = plain.peekable();
    if let Some(Err(_)) = std::pin::Pin::new(&mut plain).peek().await {
        if let Some(Err(e)) = plain.next().await {
            return Err(e);
        }
    }
    // Bounded in all (a slow reader) and between chunks (a stalled store); a cut
    // aborts the connection, so a client never mistakes it for the end.
    let limits = &state.vault.config.limits;
    let plain = crate::limits::guard_stream(
        plain.map_err(|e| std::io::Error::other(e.code())),
        Duration::from_secs(limits.stall_timeout_secs),
        Budget::Transfer.duration(limits),
    );
    let mut response = Response::new(Body::from_stream(plain));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        served_content_type(&opened.metadata.content_type),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(opened.metadata.file_name.as_deref()),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Documents are immutable: the id names one content for ever. Never a hash of
    // the plaintext, which would let anyone holding a guess confirm it.
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{id}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (length, content_range) = match range {
        RangeRequest::Bytes(start, end) => (
            end.min(len) - start,
            Some(format!("bytes {start}-{}/{len}", end.min(len) - 1)),
        ),
        _ => (len, None),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

/// Media types a browser would run as an active document (script): served as
/// `application/octet-stream`. Everything else keeps its stored type (what billing
/// software expects), made inert by `Content-Disposition: attachment`, `nosniff`
/// and a sandboxing CSP; `/metadata` always shows the stored type.
fn is_active_content(essence: &str) -> bool {
    matches!(
        essence,
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/javascript"
            | "application/javascript"
            | "application/ecmascript"
            | "text/ecmascript"
            | "application/x-javascript"
            | "text/xsl"
            | "application/xslt+xml"
            | "text/x-html"
            | "text/xml"
            | "application/xml"
    ) || essence.starts_with("multipart/")
        // Any XML may carry an XHTML namespace, which browsers run.
        || essence.ends_with("+xml")
}

fn served_content_type(stored: &str) -> HeaderValue {
    let octets = HeaderValue::from_static("application/octet-stream");
    let essence = stored.to_ascii_lowercase();
    if is_active_content(essence.trim()) {
        return octets;
    }
    HeaderValue::from_str(stored).unwrap_or(octets)
}

/// `attachment`, with the stored file name when there is one (RFC 6266): a plain
/// `filename` fallback of safe ASCII and the exact name as RFC 8187 `filename*`.
/// Only the last path component is kept; quotes, separators and controls never
/// reach the header.
fn content_disposition(file_name: Option<&str>) -> HeaderValue {
    let name = file_name
        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(""))
        .map(|n| n.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|n| !n.trim().is_empty() && n != "." && n != "..");
    let Some(name) = name else {
        return HeaderValue::from_static("attachment");
    };
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ' | '(' | ')') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        // RFC 8187 attr-char; everything else percent-encoded.
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

/// Decrypted metadata of a document.
#[utoipa::path(get, path = "/v1/documents/{id}/metadata",
    responses((status = 200, body = MetadataResponse), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn metadata(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MetadataResponse>> {
    let tenant_id = caller.require_role(Role::Reader)?;
    let tenant = state.vault.tenants.require_active(tenant_id).await?;
    let id = parse_document_id(&id)?;
    let opened = state.vault.tenant_documents.open(&tenant, &id).await?;
    let m = opened.metadata;
    Ok(Json(MetadataResponse {
        id: id.to_string(),
        kind: m.kind,
        content_type: m.content_type,
        file_name: m.file_name,
        size: m.size,
        sha256: m.sha256,
        fields: m.fields,
        uploaded_at: rfc3339(m.uploaded_at),
    }))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Deletes a document: its tombstone is written, then its facts, key record and
/// body are removed (with every version a versioned bucket keeps). Copies made
/// before the delete (backup snapshots) still hold its ciphertext and key record
/// until they are pruned; a restore leaves the document out when the repository
/// holds a snapshot with its tombstone. Needs the tenant-admin role.
#[utoipa::path(delete, path = "/v1/documents/{id}", responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "Under retention or a legal hold: not deleted", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant_id = caller.require_role(Role::TenantAdmin)?;
    let tenant = state.vault.tenants.require_active(tenant_id).await?;
    let id = parse_document_id(&id)?;
    note.update(|n| n.document = Some(id.to_string()));
    crate::audit_trail::record_intent(&state, &note).await?;
    vault_core::failpoints::crash_point(vault_core::failpoints::DELETE_AFTER_INTENT);
    state.vault.tenant_documents.delete(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists documents in id order, with cursor pagination.
#[utoipa::path(get, path = "/v1/documents", params(ListQuery),
    responses((status = 200, body = ListResponse), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    // Parsed after the role check: a key without the role gets 403 whatever
    // its query string holds (authorisation before parsing).
    query: Result<QueryParams<ListQuery>, ApiError>,
) -> ApiResult<Json<ListResponse>> {
    let tenant_id = caller.require_role(Role::Reader)?;
    let QueryParams(query) = query?;
    let tenant = state.vault.tenants.require_active(tenant_id).await?;
    let kind = query
        .kind
        .as_deref()
        .map(|k| {
            DocumentKind::parse(k).ok_or_else(|| {
                ApiError::bad_request("invalid_kind", "kind must be eob, claim, scan or other")
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1 to 1000",
        ));
    }
    let after = rfc3339_param(query.uploaded_after.as_deref(), "uploaded_after")?;
    let before = rfc3339_param(query.uploaded_before.as_deref(), "uploaded_before")?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<DocumentId>().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this server gave")
            })
        })
        .transpose()?;
    let filter = ListFilter {
        kind,
        uploaded_after: after,
        uploaded_before: before,
    };
    let page = state
        .vault
        .tenant_documents
        .list(&tenant, &filter, cursor.as_ref(), limit)
        .await?;
    let documents = page
        .documents
        .into_iter()
        .map(|facts| ListedDocument {
            id: facts.id.to_string(),
            kind: facts.kind,
            uploaded_at: rfc3339(facts.uploaded_at),
            stored_bytes: facts.stored_bytes,
        })
        .collect();
    let next_cursor = page.next_cursor.map(|id| id.to_string());
    Ok(Json(ListResponse {
        documents,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), RangeRequest::Whole);
        assert_eq!(
            parse_range(Some("bytes=0-9"), 100),
            RangeRequest::Bytes(0, 10)
        );
        assert_eq!(
            parse_range(Some("bytes=90-"), 100),
            RangeRequest::Bytes(90, 100)
        );
        assert_eq!(
            parse_range(Some("bytes=-10"), 100),
            RangeRequest::Bytes(90, 100)
        );
        assert_eq!(
            parse_range(Some("bytes=50-500"), 100),
            RangeRequest::Bytes(50, 100)
        );
        assert_eq!(
            parse_range(Some("bytes=100-"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeRequest::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=9-1"), 100), RangeRequest::Whole);
    }

    #[test]
    fn file_names_are_encoded_and_never_break_the_header() {
        assert_eq!(content_disposition(None), "attachment");
        assert_eq!(
            content_disposition(Some("eob 2024.pdf")),
            "attachment; filename=\"eob 2024.pdf\"; filename*=UTF-8''eob%202024.pdf"
        );
        assert_eq!(
            content_disposition(Some("../../x\";y=\"z.html")),
            "attachment; filename=\"x__y__z.html\"; filename*=UTF-8''x%22%3By%3D%22z.html"
        );
        assert_eq!(
            content_disposition(Some("C:\\scans\\b.pdf")),
            "attachment; filename=\"b.pdf\"; filename*=UTF-8''b.pdf"
        );
        assert_eq!(content_disposition(Some("dir/")), "attachment");
        assert_eq!(content_disposition(Some("..")), "attachment");
    }

    #[test]
    fn active_types_are_served_as_octets() {
        assert_eq!(served_content_type("application/pdf"), "application/pdf");
        assert_eq!(
            served_content_type("application/fhir+json"),
            "application/fhir+json"
        );
        for active in [
            "text/html",
            "TEXT/HTML",
            "image/svg+xml",
            "application/xhtml+xml",
            "multipart/related",
            "text/xml",
            "application/rss+xml",
            "application/vnd.wap.xhtml+xml",
            "text/x-html",
        ] {
            assert_eq!(
                served_content_type(active),
                "application/octet-stream",
                "{active}"
            );
        }
    }

    #[test]
    fn fields_are_validated() {
        let fields =
            parse_fields(r#"{"patient_name": "Doe, John", "procedure_code": ["99213", "85025"]}"#)
                .unwrap();
        assert_eq!(fields["procedure_code"].len(), 2);
        for bad in [
            r#"{"ssn": "1"}"#,
            "[1]",
            "{",
            r#"{"member_id": 5}"#,
            r#"{"member_id": ""}"#,
            r#"{"service_date": "last tuesday"}"#,
            r#"{"provider_npi": "12345"}"#,
        ] {
            assert_eq!(
                parse_fields(bad).unwrap_err().code(),
                "invalid_fields",
                "{bad}"
            );
        }
    }
}
