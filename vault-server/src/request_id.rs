//! The request id: checked (or set) before anything else sees a request, then
//! logged, audited and echoed.

use axum::extract::Request;
use axum::http::HeaderValue;

/// Header carrying the request id (set when absent or unacceptable, echoed in the
/// response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client request id accepted.
const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's request id may be kept: 1 to 64 of `A-Z a-z 0-9 . _ -`.
/// Anything else is replaced before it is logged, audited or echoed.
pub fn is_acceptable_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keeps one acceptable `X-Request-Id`, else sets a new random one.
pub async fn checked_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(REQUEST_ID_HEADER).iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => id.to_str().is_ok_and(is_acceptable_request_id),
        _ => false,
    };
    if !keep {
        if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            request.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
    }
    request
}

/// The request's id, already checked or replaced by [`checked_request_id`].
pub fn request_id_of(request: &Request) -> &str {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        for good in [
            "abc",
            "req-42",
            "a.b_c-D",
            &"x".repeat(64),
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert!(is_acceptable_request_id(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "<script>",
            "id\u{e9}",
            "a\"b",
            "a;b",
        ] {
            assert!(!is_acceptable_request_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unacceptable_or_repeated_request_id_is_replaced() {
        let with = |ids: &[&str]| {
            let mut request = Request::new(axum::body::Body::empty());
            for id in ids {
                request
                    .headers_mut()
                    .append(REQUEST_ID_HEADER, HeaderValue::from_str(id).unwrap());
            }
            request
        };
        let kept = checked_request_id(with(&["client-1"])).await;
        assert_eq!(request_id_of(&kept), "client-1");
        for ids in [
            &["x".repeat(100)][..],
            &["a b".to_owned()],
            &["a".to_owned(), "b".to_owned()],
            &[],
        ] {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let replaced = checked_request_id(with(&ids)).await;
            let values: Vec<_> = replaced
                .headers()
                .get_all(REQUEST_ID_HEADER)
                .iter()
                .collect();
            assert_eq!(values.len(), 1);
            let id = values[0].to_str().unwrap();
            assert!(is_acceptable_request_id(id) && !ids.contains(&id), "{id}");
        }
    }
}
