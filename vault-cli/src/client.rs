//! HTTP client for the vault API, with the operator credential from a private file.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// A CLI failure, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad local input (missing or unsafe token file, bad URL).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable {
        /// URL tried.
        url: String,
        /// Cause.
        message: String,
    },
    /// A check found the data tampered with or incomplete.
    #[error("{0}")]
    Integrity(String),
    /// A local operation failed (storage, files).
    #[error("{0}")]
    Failed(String),
    /// The server refused the request.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code.
        code: String,
        /// Server's message.
        message: String,
    },
}

impl CliError {
    /// Machine-readable code for `--json` errors.
    pub fn code(&self) -> &str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Unreachable { .. } => "unreachable",
            CliError::Integrity(_) => "integrity",
            CliError::Failed(_) => "failed",
            CliError::Api { code, .. } => code,
        }
    }

    /// Process exit code: 1 local failure, 2 usage, 3 unreachable, 4 refused by
    /// the server, 5 an integrity problem found (a check ran and failed: a
    /// script must tell that from a check that could not run).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Integrity(_) => 5,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Api { .. } => 4,
        }
    }
}

/// A client bound to one server.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token_file: Option<PathBuf>,
    /// A current TOTP code for the operator's sensitive calls (`X-Vault-MFA`).
    mfa_code: Option<String>,
}

/// Asks for a TOTP code at the terminal; refuses when stdin is not one (a
/// script passes `--mfa-code` or `BILLVAULT_MFA_CODE`).
pub fn prompt_mfa_code() -> Result<String, CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "this operation needs an MFA code: pass --mfa-code CODE or set BILLVAULT_MFA_CODE"
                .into(),
        ));
    }
    eprint!("MFA code: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("reading the MFA code: {e}")))?;
    Ok(line.trim().to_owned())
}

/// Where the operator token comes from when neither `--token-file` nor
/// `BILLVAULT_TOKEN_FILE` is given and `BILLVAULT_TOKEN` is unset.
const DEFAULT_TOKEN_FILE: &str = "./vault-data/operator-token";

/// How to reach the server.
pub struct Connection {
    /// Extra CA certificates (PEM) to trust, besides the system's store.
    pub ca_cert: Option<PathBuf>,
    /// Limit on making a connection.
    pub connect_timeout: Duration,
    /// Limit on the server's silence while it answers.
    pub read_timeout: Duration,
}

impl Client {
    /// A client for `server`, reading the token from `token_file` when needed.
    pub fn new(
        server: &str,
        token_file: Option<PathBuf>,
        connection: &Connection,
    ) -> Result<Self, CliError> {
        if !server.starts_with("http://") && !server.starts_with("https://") {
            return Err(CliError::Usage(format!(
                "--server must be an http:// or https:// URL, got {server:?}"
            )));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(connection.connect_timeout)
            .read_timeout(connection.read_timeout);
        if let Some(path) = &connection.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--ca-cert {}: {e}", path.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--ca-cert {}: no PEM certificate in it",
                        path.display()
                    ))
                })?;
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http
            .build()
            .map_err(|e| CliError::Usage(format!("HTTP client: {}", with_causes(&e))))?;
        Ok(Client {
            base: server.trim_end_matches('/').to_owned(),
            http,
            token_file,
            mfa_code: None,
        })
    }

    /// Sends `code` (a current TOTP code) with every authenticated request:
    /// `--mfa-code` / `BILLVAULT_MFA_CODE`. Without one, a call the server
    /// answers `mfa_required` is asked again with a code typed at the prompt
    /// when this is a terminal.
    pub fn with_mfa_code(mut self, code: Option<String>) -> Self {
        self.mfa_code = code.map(|c| c.trim().to_owned());
        self
    }

    /// The file the operator token is read from, for commands that replace it
    /// (`operator rotate`): `--token-file` / `BILLVAULT_TOKEN_FILE`, else
    /// `./vault-data/operator-token`; none when the token comes from `BILLVAULT_TOKEN`.
    pub fn token_file(&self) -> Result<PathBuf, CliError> {
        match &self.token_file {
            Some(path) => Ok(path.clone()),
            None if std::env::var_os("BILLVAULT_TOKEN").is_some() => Err(CliError::Usage(
                "the operator token comes from BILLVAULT_TOKEN: pass --token-file FILE for the new token to be written to".into(),
            )),
            None => Ok(PathBuf::from(DEFAULT_TOKEN_FILE)),
        }
    }

    /// The operator token: from `--token-file` / `BILLVAULT_TOKEN_FILE`, else from
    /// `BILLVAULT_TOKEN`, else from `./vault-data/operator-token`. Never an argument.
    fn token(&self) -> Result<String, CliError> {
        if self.token_file.is_none() {
            if let Ok(token) = std::env::var("BILLVAULT_TOKEN") {
                return Ok(token.trim().to_owned());
            }
        }
        let default = PathBuf::from(DEFAULT_TOKEN_FILE);
        let path = self.token_file.as_ref().unwrap_or(&default);
        if !path.exists() {
            return Err(CliError::Usage(format!(
                "cannot read the operator token file {}: it does not exist (use --token-file or BILLVAULT_TOKEN_FILE)",
                path.display()
            )));
        }
        vault_keys::private_file::ensure_private(path)
            .map_err(|e| CliError::Usage(format!("refusing {}: {e}", path.display())))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        Ok(text.trim().to_owned())
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        authenticated: bool,
    ) -> Result<Value, CliError> {
        let request = if authenticated {
            let request = request.bearer_auth(self.token()?);
            match &self.mfa_code {
                Some(code) => request.header("X-Vault-MFA", code),
                None => request,
            }
        } else {
            request
        };
        // Kept to ask again with a code typed at the prompt.
        let again = (authenticated && self.mfa_code.is_none())
            .then(|| request.try_clone())
            .flatten();
        match self.answer(request).await {
            Err(CliError::Api { code, .. }) if code == "mfa_required" && again.is_some() => {
                let typed = prompt_mfa_code()?;
                let again = again.map(|r| r.header("X-Vault-MFA", typed));
                match again {
                    Some(request) => self.answer(request).await,
                    None => Err(CliError::Usage("the request cannot be sent again".into())),
                }
            }
            answer => answer,
        }
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            message: with_causes(&e),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            message: with_causes(&e),
        })?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(CliError::Api {
                status: status.as_u16(),
                code: value["code"].as_str().unwrap_or("error").to_owned(),
                message: value["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_owned(),
            })
        }
    }

    /// GET without credentials.
    pub async fn get_public(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)), false)
            .await
    }

    /// Authenticated GET with query parameters (URL-encoded here).
    pub async fn get_with(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.send(
            self.http.get(format!("{}{path}", self.base)).query(query),
            true,
        )
        .await
    }

    /// Authenticated GET.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)), true)
            .await
    }

    /// Authenticated POST of JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            true,
        )
        .await
    }

    /// Authenticated POST of JSON asking for `202 Accepted` and a job to follow
    /// (`Prefer: respond-async`); answers with the job's record.
    pub async fn post_async(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("Prefer", "respond-async")
                .json(body),
            true,
        )
        .await
    }

    /// Authenticated PUT of JSON.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(
            self.http.put(format!("{}{path}", self.base)).json(body),
            true,
        )
        .await
    }

    /// Authenticated DELETE.
    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.delete(format!("{}{path}", self.base)), true)
            .await
    }
}

/// An error with its causes (`error sending request: ...: connection refused`):
/// reqwest's own message stops at the first.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
