//! End-to-end test harness: starts the real `vault-server` binary on a free
//! loopback port with isolated storage ([`TestApp`]), and the S3/KMS-compatible
//! `moto_server` ([`moto_endpoint`]). Nothing here is mocked; a missing dependency
//! fails the test with instructions.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The fault-injecting S3 proxy (its own crate: `vault-bench --chaos` uses it too).
pub use fault_proxy;

/// Region used against moto.
pub const TEST_REGION: &str = "us-east-1";

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The project checkout (found at run time: cargo sets `CARGO_MANIFEST_DIR` for
/// tests, and a test binary reused from a build in another checkout must not
/// look in that one).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
}

/// The `vault-server` binary built beside this test (or `$BILLVAULT_SERVER_BIN`).
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BILLVAULT_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/vault-server
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("vault-server"));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!(
            "vault-server binary not found next to {}: run `cargo build -p vault-server` first (infra/test.sh does), or set BILLVAULT_SERVER_BIN",
            exe.display()
        ),
    }
}

/// The `vault-cli` binary built beside this test (or `$BILLVAULT_CLI_BIN`).
pub fn cli_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BILLVAULT_CLI_BIN") {
        return PathBuf::from(path);
    }
    let server = server_binary();
    let candidate = server.with_file_name("vault-cli");
    assert!(
        candidate.exists(),
        "vault-cli binary not found at {}: run `cargo build -p vault-cli` first (infra/test.sh does), or set BILLVAULT_CLI_BIN",
        candidate.display()
    );
    candidate
}

/// The shared test data folder (`../shared/data` or `$BILLVAULT_SHARED_DATA`); its
/// absence is a failure, not a skip.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("BILLVAULT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    assert!(dir.is_dir(), "shared test data not found at {}: check the project out beside shared/ or set BILLVAULT_SHARED_DATA", dir.display());
    dir
}

struct Moto {
    url: String,
    _child: Option<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// moto_server with S3's atomic conditional writes; see the file for why.
pub fn moto_atomic_script() -> PathBuf {
    workspace_root().join("infra/moto_atomic.py")
}

/// URL of a running moto: `$BILLVAULT_TEST_MOTO_URL` (infra/test.sh starts one)
/// or one started here ([`moto_atomic_script`], by the Python of the moto virtualenv
/// or on the PATH), which stops when this test process exits.
pub fn moto_endpoint() -> String {
    MOTO.get_or_init(|| {
        if let Ok(url) = std::env::var("BILLVAULT_TEST_MOTO_URL") {
            return Moto { url, _child: None };
        }
        let port = free_port();
        let pid = std::process::id();
        // A watchdog shell stops moto when this process goes away, so no test run
        // leaves a server behind.
        // moto_server with atomic conditional writes (infra/moto_atomic.py),
        // run by the Python that has moto.
        let python = python_tool("python3");
        let script = format!("\"$0\" \"$1\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(python)
            .arg(moto_atomic_script())
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot spawn sh");
        let url = format!("http://127.0.0.1:{port}");
        if !wait_for_port(port, Duration::from_secs(30)) {
            panic!("moto did not start on port {port}: install it with `pip install 'moto[server]'` or run the tests with infra/test.sh, which installs and starts it");
        }
        Moto { url, _child: Some(child) }
    })
    .url
    .clone()
}

/// A Python tool the tests run (`moto_server`, `openapi-spec-validator`): the
/// version infra/test.sh pins in its virtualenv when installed there, else the
/// one on the PATH.
pub fn python_tool(name: &str) -> String {
    std::env::var_os("BILLVAULT_MOTO_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vault-moto-venv"))
        })
        .map(|venv| venv.join("bin").join(name))
        .filter(|p| p.exists())
        .map_or_else(|| name.to_owned(), |p| p.display().to_string())
}

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Environment that points AWS SDKs (the server's and the tests') at moto.
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto_endpoint()),
        ("AWS_REGION", TEST_REGION.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// An SDK config for moto, for tests that call S3/KMS directly.
pub async fn aws_config() -> aws_config::SdkConfig {
    let creds =
        aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "vault-tests");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(aws_config::Region::new(TEST_REGION))
        .credentials_provider(creds)
        .load()
        .await
}

/// Storage backend of a [`TestApp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Filesystem store in the test's data directory.
    Fs,
    /// A fresh bucket on moto.
    S3,
}

/// Builder of a [`TestApp`].
pub struct TestAppBuilder {
    backend: Backend,
    aws_kms: bool,
    custody: Option<String>,
    s3_endpoint: Option<String>,
    s3_settings: String,
    extra_config: String,
    data_dir: Option<PathBuf>,
    tls_root: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

/// A running `vault-server` with isolated storage, stopped on drop.
pub struct TestApp {
    /// Base URL.
    pub url: String,
    /// Its data directory (removed on drop unless `data_dir` was given).
    pub data_dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    /// The bucket, for the S3 backend.
    pub bucket: Option<String>,
    /// The operator token of a new vault.
    pub operator_token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    child: Child,
    launch: Launch,
}

impl TestApp {
    /// A builder: filesystem backend, local keys.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            backend: Backend::Fs,
            aws_kms: false,
            custody: None,
            s3_endpoint: None,
            s3_settings: String::new(),
            extra_config: String::new(),
            data_dir: None,
            tls_root: None,
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

impl TestAppBuilder {
    /// Storage backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Reaches S3 through `url` (a [`fault_proxy::FaultProxy`]) instead of moto
    /// directly.
    pub fn s3_endpoint(mut self, url: &str) -> Self {
        self.s3_endpoint = Some(url.to_owned());
        self
    }

    /// Adds a `key = value` line to the `[storage]` section of an S3 vault.
    pub fn s3_setting(mut self, line: &str) -> Self {
        self.s3_settings.push_str(line);
        self.s3_settings.push('\n');
        self
    }

    /// Keeps the key custody at `location` (`[keys] custody`).
    pub fn custody(mut self, location: &str) -> Self {
        self.custody = Some(location.to_owned());
        self
    }

    /// Enables the `aws-kms` key provider (on moto).
    pub fn aws_kms(mut self) -> Self {
        self.aws_kms = true;
        self
    }

    /// Extra top-level TOML lines.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Serves HTTPS with this PEM certificate and key; the test client trusts the
    /// certificate. Call after any `config` (it opens the `[tls]` table).
    pub fn tls(mut self, cert_pem: &Path, key_pem: &Path) -> Self {
        self.extra_config.push_str(&format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert_pem, key_pem
        ));
        self.tls_root = Some(std::fs::read(cert_pem).expect("read certificate"));
        self
    }

    /// Sets an environment variable of the server process (crash points:
    /// `vault_core::failpoints::ENV`). [`TestApp::restart_plain`] drops them.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs the server under `command` (its arguments, then the server's path
    /// and options follow), in a process group of its own that `kill` ends
    /// whole: `strace` in the durability test.
    pub fn wrapped_in(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Reuses a data directory (restarts).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Starts the server and waits until it is healthy.
    pub async fn start(self) -> TestApp {
        let (tempdir, data_dir) = match &self.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let p = t.path().join("vault");
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut config = self.extra_config.clone();
        let mut bucket = None;
        if self.aws_kms || self.custody.is_some() {
            config.push_str("[keys]\n");
        }
        if self.aws_kms {
            config.push_str("aws_kms = true\n");
        }
        if let Some(custody) = &self.custody {
            config.push_str(&format!("custody = {custody:?}\n"));
        }
        if self.backend == Backend::S3 {
            let name = format!("vault-test-{}", uuid_like());
            let s3 = aws_sdk_s3::Client::new(&aws_config().await);
            s3.create_bucket()
                .bucket(&name)
                .send()
                .await
                .expect("create test bucket on moto");
            config.push_str(&format!(
                "[storage]\nbackend = \"s3\"\nbucket = \"{name}\"\nprefix = \"vault\"\n"
            ));
            if let Some(endpoint) = &self.s3_endpoint {
                config.push_str(&format!("endpoint = {endpoint:?}\n"));
            }
            config.push_str(&self.s3_settings);
            bucket = Some(name);
        }
        Launch {
            data_dir,
            config,
            bucket,
            needs_aws: self.backend == Backend::S3 || self.aws_kms,
            tls_root: self.tls_root,
            env: self.env,
            wrapper: self.wrapper,
        }
        .spawn(tempdir)
        .await
    }
}

/// Everything needed to (re)start a server on the same state.
#[derive(Clone)]
struct Launch {
    data_dir: PathBuf,
    config: String,
    bucket: Option<String>,
    needs_aws: bool,
    tls_root: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

impl Launch {
    async fn spawn(self, tempdir: Option<tempfile::TempDir>) -> TestApp {
        let Launch {
            data_dir,
            config,
            bucket,
            needs_aws,
            tls_root,
            env,
            wrapper,
        } = self.clone();
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, &config).expect("write config");
        let port = free_port();
        // HTTPS test certificates name "localhost", so the URL does too.
        let scheme = if tls_root.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://localhost:{port}");
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("log file");
        let mut command = match wrapper.split_first() {
            None => Command::new(server_binary()),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(server_binary());
                std::os::unix::process::CommandExt::process_group(&mut command, 0);
                command
            }
        };
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("BILLVAULT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if needs_aws {
            command.envs(aws_env());
        }
        command.envs(env);
        let child = command.spawn().expect("spawn vault-server");
        let http = match &tls_root {
            Some(pem) => reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("certificate"))
                .build()
                .expect("client"),
            None => reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "vault-server did not become healthy; see {}",
                data_dir.with_extension("log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let operator_token = std::fs::read_to_string(data_dir.join("operator-token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default();
        TestApp {
            url,
            data_dir,
            _tempdir: tempdir,
            bucket,
            operator_token,
            http,
            child,
            launch: self,
        }
    }
}

impl TestApp {
    /// Stops the server with SIGKILL (crash) and waits for it.
    pub fn kill(&mut self) {
        if !self.launch.wrapper.is_empty() {
            // The wrapper and the server under it: the whole process group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the server to shut down gracefully (SIGTERM).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the server to exit; its status, if it did.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Another replica of this vault: a server with its own data directory over
    /// the same bucket (S3 only), the same configuration and a copy of the root
    /// key file, as an operator adds one. Its operator token is this one's.
    pub async fn replica(&self) -> TestApp {
        assert!(self.bucket.is_some(), "replicas share an S3 bucket");
        let tempdir = tempfile::tempdir().expect("tempdir");
        let data_dir = tempdir.path().join("vault");
        let keys = data_dir.join("keys");
        std::fs::create_dir_all(&keys).expect("keys dir");
        std::fs::copy(self.data_dir.join("keys/root.key"), keys.join("root.key"))
            .expect("copy the root key file");
        std::fs::set_permissions(
            keys.join("root.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("root key mode");
        // Kept beside it for restarts (the replica itself issued none).
        std::fs::write(data_dir.join("operator-token"), &self.operator_token)
            .expect("operator token");
        let mut launch = self.launch.clone();
        launch.data_dir = data_dir;
        launch.spawn(Some(tempdir)).await
    }

    /// Restarts on the same data directory and configuration.
    pub async fn restart(mut self) -> TestApp {
        self.kill();
        let tempdir = self._tempdir.take();
        self.launch.clone().spawn(tempdir).await
    }

    /// Restarts on the same data directory and configuration without the
    /// environment variables the builder set (after a crash point fired).
    pub async fn restart_plain(mut self) -> TestApp {
        self.kill();
        self.launch.env.clear();
        let tempdir = self._tempdir.take();
        self.launch.clone().spawn(tempdir).await
    }

    /// Full URL of a path.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// An operator request.
    pub fn operator(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.at(path))
            .bearer_auth(&self.operator_token)
    }

    /// An operator GET that must succeed; its JSON answer.
    pub async fn operator_get(&self, path: &str) -> Value {
        let r = self
            .operator(reqwest::Method::GET, path)
            .send()
            .await
            .expect("operator GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("operator GET json")
    }

    /// Creates a tenant with the local provider and returns its JSON.
    pub async fn create_tenant(&self, id: &str) -> Value {
        self.create_tenant_with(id, "local").await
    }

    /// Creates a tenant with the given key provider (`local` or `aws-kms`) and no
    /// retention period, so tests may delete documents (retention has its own test).
    pub async fn create_tenant_with(&self, id: &str, key_provider: &str) -> Value {
        let r = self
            .operator(reqwest::Method::POST, "/v1/admin/tenants")
            .json(&json!({"id": id, "key_provider": key_provider, "retention_days": 0}))
            .send()
            .await
            .expect("create tenant");
        assert_eq!(
            r.status(),
            201,
            "create tenant {id}: {}",
            r.text().await.unwrap_or_default()
        );
        r.json().await.expect("tenant json")
    }

    /// Uploads a document with an API key; `headers` adds or overrides headers
    /// (`X-Vault-Fields`, `X-Vault-Extraction`, ...).
    pub async fn upload(
        &self,
        key: &str,
        kind: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.at("/v1/documents"))
            .bearer_auth(key)
            .header("X-Vault-Kind", kind)
            .header("Content-Type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("upload request")
    }

    /// A GET with an API key.
    pub async fn get_as(&self, key: &str, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(self.at(path_and_query))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET request")
    }

    /// Runs `vault-cli` against this server with its operator token file (and the
    /// AWS environment of moto, for offline commands on an S3 store).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_with_env(&[], args)
    }

    /// [`TestApp::cli`] with more environment variables (crash points).
    pub fn cli_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        let mut command = Command::new(cli_binary());
        if self.launch.needs_aws {
            command.envs(aws_env());
        }
        command.envs(env.iter().copied());
        command
            .arg("--server")
            .arg(&self.url)
            .arg("--token-file")
            .arg(self.data_dir.join("operator-token"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vault-cli")
    }

    /// Runs `vault-cli` (as [`TestApp::cli`]), requires success and returns its
    /// JSON output (`Null` when it printed none).
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "vault-cli {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Runs `vault-cli` (as [`TestApp::cli`]) and returns its exit code and
    /// everything it printed, for commands expected to fail.
    pub fn cli_exit(&self, args: &[&str]) -> (i32, String) {
        let out = self.cli(args);
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// This vault's store as offline `vault-cli` commands take it (`--store`).
    pub fn store_arg(&self) -> String {
        match &self.bucket {
            Some(bucket) => format!("s3://{bucket}/vault"),
            None => self.data_dir.display().to_string(),
        }
    }

    /// The `/metrics` bearer token the server created in its data directory.
    pub fn metrics_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("metrics-token"))
            .expect("read the metrics token")
            .trim()
            .to_owned()
    }

    /// The Prometheus text of `/metrics` (with the metrics token).
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.at("/metrics"))
            .bearer_auth(self.metrics_token())
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// One metric's value from `/metrics` (the first sample named so).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .filter(|rest| rest.starts_with(' '))
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("metric {name} not found in {text}"))
    }

    /// Issues an API key and returns its secret.
    pub async fn api_key(&self, tenant: &str, roles: &[&str]) -> String {
        let r = self
            .operator(
                reqwest::Method::POST,
                &format!("/v1/admin/tenants/{tenant}/api-keys"),
            )
            .json(&json!({"roles": roles}))
            .send()
            .await
            .expect("issue key");
        assert_eq!(
            r.status(),
            201,
            "issue key: {}",
            r.text().await.unwrap_or_default()
        );
        let v: Value = r.json().await.expect("key json");
        v["secret"].as_str().expect("secret").to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shell block of README.md between `<!-- {name}:begin -->` and
/// `<!-- {name}:end -->` (one ```sh block), for the tests that run the README
/// as written.
pub fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let block = readme
        .split(&format!("<!-- {name}:begin -->"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- {name}:end -->")).next())
        .unwrap_or_else(|| panic!("README.md has the {name} markers"));
    block
        .trim()
        .strip_prefix("```sh")
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or_else(|| panic!("the {name} block is one ```sh block"))
        .to_owned()
}

/// Fails, naming what needs it, unless every tool is on the PATH.
pub fn require_tools(tools: &[&str], needed_by: &str) {
    for tool in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} is needed by {needed_by}; install it");
    }
}
