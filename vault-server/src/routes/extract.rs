//! Body and query-string extractors: axum's `Json` and `Query` with their
//! rejections turned into the vault's error envelope. axum's own answer is plain
//! text that quotes serde's message, values included; ours names the problem and
//! never echoes the request.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use vault_crypto::TenantId;

use crate::audit_note::NoteSlot;
use crate::auth::{header_str, require_step_up, Caller, MFA_HEADER};
use crate::endpoint::{Access, Endpoint};
use crate::error::ApiError;
use crate::state::SharedState;
use vault_core::mfa::MfaPolicy;
use vault_core::tenants::parse_tenant_id;

/// The operator credential, with the role the request's endpoint requires
/// (its row in the endpoint table), checked from the request's head, before any
/// body is read: a handler that takes `Operator` ahead of its body extractor
/// answers an API key, or an operator without the role, with 403 whatever the
/// body holds (authorisation before parsing).
pub struct Operator(pub Caller);

impl FromRequestParts<SharedState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Some(endpoint) = parts.extensions.get::<Endpoint>().copied() else {
            // HEAD of an operator GET: axum hands it to the GET handler, but
            // it is no endpoint of the table, so no access is declared for it.
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take this method",
            ));
        };
        match endpoint.access() {
            Access::AnyOperator => caller.require_operator()?,
            Access::Operator(role) => caller.require_operator_role(role)?,
            _ => {
                return Err(ApiError::internal(
                    "route",
                    "Operator on an endpoint that is not an operator's",
                ))
            }
        }
        // The second factor, before any body is read, like the role. A code
        // sent is well-formed wherever it is sent, asked for or not.
        if let Some(code) = header_str(&parts.headers, MFA_HEADER)? {
            if !vault_core::mfa::is_well_formed_code(code) {
                return Err(ApiError::bad_request(
                    "invalid_mfa_code",
                    "X-Vault-MFA is a code of six digits",
                ));
            }
        }
        let every_call =
            state.vault.config.operators.mfa == MfaPolicy::All && !endpoint.enrolls_mfa();
        if endpoint.sensitive() || every_call {
            require_step_up(state, &caller, &parts.headers, parts.extensions.get()).await?;
        }
        Ok(Operator(caller))
    }
}

/// An operator acting on the tenant its route names (`/v1/admin/tenants/{tenant}/...`):
/// the credential is checked to be an operator's and the id is parsed; only then is
/// the event filed under that tenant (a tenant named in the path of a request that
/// did not authenticate as an operator never is). The tenant may not exist.
pub struct OperatorOnTenant(pub TenantId);

impl FromRequestParts<SharedState> for OperatorOnTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        Operator::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::bad_request("invalid_path", "the request path could not be read")
            })?;
        let raw = params.get("tenant").ok_or_else(|| {
            ApiError::internal("route", "OperatorOnTenant on a route without {tenant}")
        })?;
        let tenant = parse_tenant_id(raw.as_str())?;
        if let Some(note) = parts.extensions.get::<NoteSlot>() {
            note.update(|n| n.tenant = Some(tenant.clone()));
        }
        Ok(OperatorOnTenant(tenant))
    }
}

/// A JSON body of type `T`; as `Option<JsonBody<T>>`, a body that may be absent.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match <axum::Json<T> as FromRequest<S>>::from_request(request, state).await {
            Ok(axum::Json(body)) => Ok(JsonBody(body)),
            Err(rejection) => Err(rejected(&rejection)),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        match <axum::Json<T> as OptionalFromRequest<S>>::from_request(request, state).await {
            Ok(body) => Ok(body.map(|axum::Json(body)| JsonBody(body))),
            Err(rejection) => Err(rejected(&rejection)),
        }
    }
}

/// Query-string parameters of type `T`.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match <axum::extract::Query<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
        {
            Ok(axum::extract::Query(params)) => Ok(QueryParams(params)),
            Err(_) => Err(ApiError::bad_request(
                "invalid_parameters",
                "the query string's parameters or their values are not the ones this endpoint takes (see /v1/openapi.json)",
            )),
        }
    }
}

/// An optional RFC 3339 time given as the query parameter `name`.
pub fn rfc3339_param(
    raw: Option<&str>,
    name: &str,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    raw.map(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(
            |_| ApiError::bad_request("invalid_query", format!("{name} must be an RFC 3339 time")),
        )
    })
    .transpose()
}

fn rejected(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON, with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request("invalid_json", "the body is not valid JSON")
        }
        JsonRejection::JsonDataError(_) => ApiError::bad_request(
            "invalid_body",
            "the body's fields or their types are not the ones this endpoint takes (see /v1/openapi.json)",
        ),
        _ => ApiError::bad_request("invalid_body", "the request body could not be read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header::CONTENT_TYPE;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized
    struct Days {
        days: u32,
    }

    async fn extract(content_type: Option<&str>, body: &str) -> Result<Option<u32>, ApiError> {
        let mut request = axum::http::Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        <JsonBody<Days> as OptionalFromRequest<()>>::from_request(request, &())
            .await
            .map(|b| b.map(|JsonBody(d)| d.days))
    }

    #[tokio::test]
    async fn a_bad_query_string_uses_the_envelope_and_is_not_echoed() {
        for (uri, days) in [
            ("/?days=3", Ok(3)),
            ("/?days=DOE", Err("invalid_parameters")),
            ("/", Err("invalid_parameters")),
        ] {
            let (mut parts, ()) = axum::http::Request::builder()
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts();
            let got = QueryParams::<Days>::from_request_parts(&mut parts, &()).await;
            match (got, days) {
                (Ok(QueryParams(d)), Ok(days)) => assert_eq!(d.days, days),
                (Err(e), Err(code)) => {
                    assert_eq!(e.code(), code);
                    assert!(!format!("{e:?}").contains("DOE"), "{e:?}");
                }
                (got, want) => panic!("{uri}: {:?} vs {want:?}", got.map(|QueryParams(d)| d.days)),
            }
        }
    }

    #[tokio::test]
    async fn rejections_use_the_envelope_and_never_echo_the_body() {
        let json = Some("application/json");
        assert_eq!(extract(json, r#"{"days": 7}"#).await.unwrap(), Some(7));
        assert_eq!(extract(None, "").await.unwrap(), None);
        for (content_type, body, code) in [
            (json, "{\"days\": ", "invalid_json"),
            (json, r#"{"days": "DOE, JOHN"}"#, "invalid_body"),
            (
                json,
                r#"{"days": 1, "patient": "DOE, JOHN"}"#,
                "invalid_body",
            ),
            (
                Some("text/plain"),
                r#"{"days": 1}"#,
                "unsupported_media_type",
            ),
        ] {
            let e = extract(content_type, body).await.unwrap_err();
            assert_eq!(e.code(), code, "{body}");
            assert!(!format!("{e:?}").contains("DOE"), "{e:?}");
        }
    }
}
