//! Reading one figure out of the server's `/metrics` (Prometheus / OpenMetrics
//! text exposition).

/// The value of the samples named exactly `name` (summed over their label sets),
/// or `None` when there is none. Comments, other names (including longer names
/// that start with `name`) and unreadable values are skipped.
pub fn sample_value(text: &str, name: &str) -> Option<f64> {
    let mut total: Option<f64> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if let Some(labels) = rest.strip_prefix('{') {
            match after_labels(labels) {
                Some(rest) => rest,
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue;
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// The text after a label set's closing brace (`labels` starts after the `{`);
/// braces inside quoted, possibly escaped, label values do not close it.
fn after_labels(labels: &str) -> Option<&str> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(&labels[i + 1..]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP vault_key_provider_calls Calls made to key services.
# TYPE vault_key_provider_calls gauge
vault_key_provider_calls 3
# TYPE vault_key_provider_calls_extra gauge
vault_key_provider_calls_extra 100
# TYPE vault_http_requests counter
vault_http_requests_total{route="/v1/documents",status="201"} 1000
vault_http_requests_total{route="/v1/{weird} \"}\"",status="200"} 5
vault_http_requests_total{route="/v1/search",status="200"} 20 1700000000
vault_documents_uploaded_total 1e3
# EOF
"#;

    #[test]
    fn exact_names_only() {
        assert_eq!(sample_value(TEXT, "vault_key_provider_calls"), Some(3.0));
        assert_eq!(
            sample_value(TEXT, "vault_key_provider_calls_extra"),
            Some(100.0)
        );
        assert_eq!(sample_value(TEXT, "vault_key_provider"), None);
        assert_eq!(
            sample_value(TEXT, "vault_documents_uploaded_total"),
            Some(1000.0)
        );
    }

    #[test]
    fn label_sets_are_summed_and_timestamps_ignored() {
        assert_eq!(
            sample_value(TEXT, "vault_http_requests_total"),
            Some(1025.0)
        );
    }

    #[test]
    fn absent_or_unreadable() {
        assert_eq!(sample_value("", "x"), None);
        assert_eq!(sample_value("x abc\n", "x"), None);
        assert_eq!(sample_value("x{a=\"1\" 3\n", "x"), None);
        assert_eq!(sample_value("x 1\nx 2\n", "x"), Some(3.0));
    }
}
