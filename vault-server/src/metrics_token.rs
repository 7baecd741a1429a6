//! The bearer token `/metrics` requires.

use sha2::Digest;

/// The bearer token `/metrics` requires. Only its SHA-256 is kept in memory; the
/// token itself lives in a 0600 file the scraper reads.
pub struct MetricsToken {
    sha256: [u8; 32],
}

/// Where the metrics token came from at start-up.
pub enum MetricsTokenSource {
    /// An existing file (configured, or created by an earlier start).
    Existing,
    /// Created now at this path.
    Created(std::path::PathBuf),
}

impl MetricsToken {
    /// Reads the token from `path` (refused when group or others can read it), or,
    /// when `create` and the file does not exist, creates it with a new random
    /// token: written beside it with mode 0600 and linked into place, so it is
    /// create-only and never seen half-written. The token is never printed or logged.
    pub fn load_or_create(
        path: &std::path::Path,
        create: bool,
    ) -> std::io::Result<(MetricsToken, MetricsTokenSource)> {
        use base64::Engine;
        let mut source = MetricsTokenSource::Existing;
        if create && !path.exists() {
            let token = zeroize::Zeroizing::new(format!(
                "vlt_metrics_{}\n",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
            ));
            let staged =
                path.with_extension(format!("new-{}", hex::encode(rand::random::<[u8; 6]>())));
            vault_keys::private_file::write_atomically(&staged, token.as_bytes())?;
            let linked = std::fs::hard_link(&staged, path);
            std::fs::remove_file(&staged)?;
            match linked {
                Ok(()) => {
                    vault_keys::private_file::sync_parent(path)?;
                    source = MetricsTokenSource::Created(path.to_owned());
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        vault_keys::private_file::ensure_private(path)?;
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
        let token = text.trim();
        if token.len() < 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the metrics token must be at least 32 characters",
            ));
        }
        Ok((
            MetricsToken {
                sha256: sha2::Sha256::digest(token.as_bytes()).into(),
            },
            source,
        ))
    }

    /// Whether `presented` is the token (hashes compared in constant time, so
    /// neither its content nor its length shows in the timing).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let presented: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        bool::from(presented.ct_eq(&self.sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_created_once_private_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics-token");
        let (token, source) = MetricsToken::load_or_create(&path, true).unwrap();
        assert!(matches!(source, MetricsTokenSource::Created(_)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(token.matches(text.trim()));
        assert!(!token.matches("vlt_metrics_wrong"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, source) = MetricsToken::load_or_create(&path, true).unwrap();
        assert!(matches!(source, MetricsTokenSource::Existing));
        assert!(again.matches(text.trim()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MetricsToken::load_or_create(&path, true).is_err());
        let missing = dir.path().join("configured-but-missing");
        assert!(MetricsToken::load_or_create(&missing, false).is_err());
    }
}
