//! The system under test: the real `vault-server` binary started on a free
//! loopback port with its own data directory and configuration (filesystem store
//! and local keys, or an S3 bucket and KMS on moto), as the e2e harness does. The
//! server (and a moto this program started) is killed when [`Server`] is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Storage backend of the server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Filesystem store in the data directory, local key provider.
    Fs,
    /// A fresh bucket on moto, an aws-kms tenant (KMS on moto).
    S3,
}

/// Every role an API key can have.
pub const ALL_ROLES: &[&str] = &["uploader", "reader", "auditor", "tenant-admin"];

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `vault-server` binary beside this program's executable.
pub fn default_server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current executable")?;
    let path = exe.with_file_name("vault-server");
    if !path.exists() {
        bail!(
            "vault-server not found at {}: build it in the same profile (`cargo build -p vault-server --bins`, with --release for a release run) or pass --server-bin",
            path.display()
        );
    }
    Ok(path)
}

/// moto_server with atomic conditional writes, as S3's are: plain moto lets two
/// create-only writes of one key both succeed now and then.
const MOTO_ATOMIC: &str = include_str!("../../infra/moto_atomic.py");

/// A running moto this program started.
pub struct Moto {
    child: Child,
}

impl Moto {
    /// Starts `moto_server` on a free port, logging to `<work_dir>/moto.log`;
    /// the handle (it stops on drop) and its URL.
    pub fn start(work_dir: &std::path::Path) -> anyhow::Result<(Moto, String)> {
        let Some(binary) = moto_binary() else {
            bail!("--backend s3 needs moto: pass --moto-url or set BILLVAULT_TEST_MOTO_URL, or install it (infra/test.sh installs the pinned version into ~/.cache/vault-moto-venv)");
        };
        let port = free_port()?;
        let log = std::fs::File::create(work_dir.join("moto.log"))?;
        // moto_server with S3's atomic conditional writes (see the script),
        // run by the Python that has moto.
        let python = binary
            .parent()
            .map(|bin| bin.join("python3"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("python3"));
        let script = work_dir.join("moto_atomic.py");
        std::fs::write(&script, MOTO_ATOMIC)?;
        let child = Command::new(python)
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn moto_server")?;
        let moto = Moto { child };
        if !wait_for_port(port, Duration::from_secs(30)) {
            bail!("moto_server did not start on port {port}");
        }
        Ok((moto, format!("http://127.0.0.1:{port}")))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto (the one at `launch.moto_url`, or one started in the run's directory)
/// and a fault proxy in front of it, with no faults set. `launch.moto_url` is
/// set to moto's own URL (bucket creation and KMS go there); the caller puts the
/// proxy's URL in `[storage] endpoint`. Keep the moto handle alive for the run.
pub async fn moto_behind_proxy(
    launch: &mut Launch,
) -> anyhow::Result<(Option<Moto>, fault_proxy::FaultProxy)> {
    let (moto, url) = match &launch.moto_url {
        Some(url) => (None, url.clone()),
        None => {
            let (moto, url) = Moto::start(&launch.work_dir)?;
            (Some(moto), url)
        }
    };
    let proxy = fault_proxy::FaultProxy::start(url.trim_start_matches("http://")).await;
    launch.moto_url = Some(url);
    Ok((moto, proxy))
}

/// `moto_server` from the virtualenv infra/test.sh installs (the pinned version
/// the e2e tests run against), else from the PATH.
fn moto_binary() -> Option<PathBuf> {
    let venv = std::env::var_os("BILLVAULT_MOTO_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vault-moto-venv"))
        })
        .map(|venv| venv.join("bin/moto_server"))
        .filter(|p| p.is_file());
    venv.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    })
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

/// How to start the server.
#[derive(Clone)]
pub struct Launch {
    /// The `vault-server` binary.
    pub binary: PathBuf,
    /// Storage backend.
    pub backend: Backend,
    /// moto's URL for `Backend::S3` (else one is started from `moto_server`).
    pub moto_url: Option<String>,
    /// Directory for the data directory, the configuration and the logs.
    pub work_dir: PathBuf,
    /// More `key = value` lines for the `[limits]` table.
    pub limits: String,
    /// More `key = value` lines for the `[storage]` table of an S3 vault (the
    /// chaos run's fault proxy as `endpoint`, its timeouts).
    pub s3_storage: String,
    /// `key = value` lines for the `[search]` table.
    pub search: String,
    /// More lines after the `[backup]` table's `target` (its keys, then
    /// subtables such as `[backup.retention]`).
    pub backup_config: String,
    /// Back up to a bucket on moto instead of a directory of the run.
    pub backup_s3: bool,
}

impl Launch {
    /// A launch of `binary` in `work_dir` with nothing added to the configuration.
    pub fn new(
        binary: PathBuf,
        backend: Backend,
        moto_url: Option<String>,
        work_dir: PathBuf,
    ) -> Launch {
        Launch {
            binary,
            backend,
            moto_url,
            work_dir,
            limits: String::new(),
            s3_storage: String::new(),
            search: String::new(),
            backup_config: String::new(),
            backup_s3: false,
        }
    }
}

/// The running server.
pub struct Server {
    child: Child,
    _moto: Option<Moto>,
    /// Base URL.
    pub url: String,
    /// Its process id (for `/proc`).
    pub pid: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The operator credential it wrote on first start.
    pub operator_token: String,
    /// The `/metrics` bearer token it wrote on first start.
    pub metrics_token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Its bucket on moto (`Backend::S3`).
    pub bucket: Option<String>,
    /// The bucket its backups go to (`Launch::backup_s3`).
    pub backup_bucket: Option<String>,
    /// Where it runs (to start replicas of it, or itself again).
    place: Place,
}

/// Where a server runs: its configuration, data directory, log and S3 endpoint.
#[derive(Clone)]
struct Place {
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    moto_url: Option<String>,
}

/// An HTTP client for many concurrent connections to one host.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

impl Server {
    /// Starts the server and waits until it answers `/healthz`.
    pub async fn start(launch: &Launch) -> anyhow::Result<Server> {
        let data_dir = launch.work_dir.join("vault-data");
        std::fs::create_dir_all(&data_dir)?;
        let http = http_client()?;
        // A 1 GiB upload is the largest the benchmark sends; leave room.
        let mut config = String::from("max_upload_bytes = 2147483648\n");
        // Measure the vault, not its per-key rate limit (one key sends thousands of
        // requests a second here); the upload caps (all, and one tenant's share: the
        // benchmark has one tenant) stay above the top concurrency.
        config.push_str(
            "[limits]\nrequests_per_second = 0\nmax_concurrent_uploads = 192\nmax_concurrent_uploads_per_tenant = 0\n",
        );
        config.push_str(&launch.limits);
        if !launch.search.is_empty() {
            config.push_str(&format!("[search]\n{}", launch.search));
        }
        let mut moto = None;
        let mut moto_url = None;
        let mut bucket_name = None;
        if launch.backend == Backend::S3 {
            let url = match &launch.moto_url {
                Some(url) => url.trim_end_matches('/').to_owned(),
                None => {
                    let (started, url) = Moto::start(&launch.work_dir)?;
                    moto = Some(started);
                    url
                }
            };
            let bucket = format!(
                "vault-bench-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            );
            // moto takes unsigned requests: no AWS SDK needed to make a bucket.
            let r = http
                .put(format!("{url}/{bucket}"))
                .send()
                .await
                .with_context(|| format!("create bucket on moto at {url}"))?;
            if !r.status().is_success() {
                bail!("moto refused to create bucket {bucket}: {}", r.status());
            }
            config.push_str(&format!(
                "[storage]\nbackend = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"vault\"\n{}[keys]\naws_kms = true\n",
                launch.s3_storage
            ));
            moto_url = Some(url);
            bucket_name = Some(bucket);
        }
        // The vault's own backups go to a directory of the run (vault_backup.rs),
        // or to a bucket of their own on moto.
        let mut backup_bucket = None;
        let target = if launch.backup_s3 {
            let url = match &moto_url {
                Some(url) => url.clone(),
                None => {
                    let (started, url) = Moto::start(&launch.work_dir)?;
                    moto = Some(started);
                    moto_url = Some(url.clone());
                    url
                }
            };
            let bucket = format!("vault-bench-backups-{}", std::process::id());
            let r = http.put(format!("{url}/{bucket}")).send().await?;
            if !r.status().is_success() {
                bail!("moto refused to create bucket {bucket}: {}", r.status());
            }
            backup_bucket = Some(bucket.clone());
            format!("s3://{bucket}/vault-repo")
        } else {
            backup_repository(&launch.work_dir).display().to_string()
        };
        config.push_str(&format!(
            "[backup]\ntarget = {target:?}\n{}",
            launch.backup_config
        ));
        let config_path = launch.work_dir.join("vault.toml");
        std::fs::write(&config_path, &config)?;
        let mut server = Server::spawn(
            &launch.binary,
            Place {
                config: config_path,
                data_dir,
                log: launch.work_dir.join("vault-server.log"),
                moto_url,
            },
            http,
        )
        .await?;
        server._moto = moto;
        server.bucket = bucket_name;
        server.backup_bucket = backup_bucket;
        server.operator_token = std::fs::read_to_string(server.data_dir.join("operator-token"))
            .context("read the operator token of the new vault")?
            .trim()
            .to_owned();
        server.metrics_token = std::fs::read_to_string(server.data_dir.join("metrics-token"))
            .context("read the metrics token of the new vault")?
            .trim()
            .to_owned();
        Ok(server)
    }

    /// Spawns the server at `place` and waits until it answers `/healthz`.
    async fn spawn(
        binary: &std::path::Path,
        place: Place,
        http: reqwest::Client,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        // Appended to: the log of a killed run stays for the post-mortem.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&place.log)?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&place.config)
            .arg("--data-dir")
            .arg(&place.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("BILLVAULT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if let Some(endpoint) = &place.moto_url {
            command.envs([
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let pid = child.id();
        let mut server = Server {
            child,
            _moto: None,
            url,
            pid,
            data_dir: place.data_dir.clone(),
            log: place.log.clone(),
            operator_token: String::new(),
            metrics_token: String::new(),
            http,
            bucket: None,
            backup_bucket: None,
            place,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.http.get(server.at("/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "vault-server exited with {status}; see {}",
                    server.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "vault-server did not become healthy in 60 s; see {}",
                    server.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// Another replica of this server's vault (S3 only): its own data directory
    /// under the run's, the same configuration, a copy of the root key file.
    pub async fn start_replica(&self, launch: &Launch, n: usize) -> anyhow::Result<Server> {
        self.start_replica_with(launch, n, str::to_owned).await
    }

    /// [`Server::start_replica`] with its configuration changed by `edit`.
    pub async fn start_replica_with(
        &self,
        launch: &Launch,
        n: usize,
        edit: impl FnOnce(&str) -> String,
    ) -> anyhow::Result<Server> {
        if self.place.moto_url.is_none() {
            bail!("--replicas needs --backend s3: replicas share a bucket");
        }
        let data_dir = launch
            .work_dir
            .join(format!("replica-{n}"))
            .join("vault-data");
        std::fs::create_dir_all(data_dir.join("keys"))?;
        let root_key = data_dir.join("keys/root.key");
        std::fs::copy(self.data_dir.join("keys/root.key"), &root_key)
            .context("copy the root key file to a replica")?;
        std::fs::set_permissions(
            &root_key,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let config = std::fs::read_to_string(&self.place.config)?;
        let config_path = launch.work_dir.join(format!("replica-{n}.toml"));
        std::fs::write(&config_path, edit(&config))?;
        let place = Place {
            config: config_path,
            data_dir,
            log: launch.work_dir.join(format!("replica-{n}.log")),
            moto_url: self.place.moto_url.clone(),
        };
        let mut replica = Server::spawn(&launch.binary, place, http_client()?).await?;
        replica.operator_token.clone_from(&self.operator_token);
        replica.metrics_token = std::fs::read_to_string(replica.data_dir.join("metrics-token"))
            .context("read a replica's metrics token")?
            .trim()
            .to_owned();
        Ok(replica)
    }

    /// Starts this (stopped) server again on its data directory.
    pub async fn restart(mut self, launch: &Launch) -> anyhow::Result<Server> {
        self.restart_in_place(launch).await?;
        Ok(self)
    }

    /// Stops this server and starts it again on its data directory, in place.
    pub async fn restart_in_place(&mut self, launch: &Launch) -> anyhow::Result<()> {
        self.stop();
        let mut again =
            Server::spawn(&launch.binary, self.place.clone(), self.http.clone()).await?;
        again.operator_token = std::mem::take(&mut self.operator_token);
        again.metrics_token = std::mem::take(&mut self.metrics_token);
        again.bucket = self.bucket.take();
        again._moto = self._moto.take();
        *self = again;
        Ok(())
    }

    /// A GET as the operator: the status must be 200.
    pub async fn operator_get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(self.at(path))
            .bearer_auth(&self.operator_token)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if status.as_u16() != 200 {
            bail!("GET {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// moto's URL (`Backend::S3`).
    pub fn moto_url(&self) -> Option<&str> {
        self.place.moto_url.as_deref()
    }

    /// Full URL of a path.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn operator_post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(self.at(path))
            .bearer_auth(&self.operator_token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if status.as_u16() != 201 {
            bail!("POST {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates a tenant with this key provider (`local` or `aws-kms`) and no
    /// retention period (the benchmark deletes its large upload).
    pub async fn create_tenant(&self, id: &str, key_provider: &str) -> anyhow::Result<()> {
        self.create_tenant_for(id, key_provider, None).await
    }

    /// [`Server::create_tenant`], planned for `expected_documents` (its blind
    /// tokens sized for them, so that filling it starts no re-plan).
    pub async fn create_tenant_for(
        &self,
        id: &str,
        key_provider: &str,
        expected_documents: Option<usize>,
    ) -> anyhow::Result<()> {
        let mut body = json!({"id": id, "key_provider": key_provider, "retention_days": 0});
        if let Some(documents) = expected_documents {
            body["expected_documents"] = json!(documents);
        }
        self.operator_post("/v1/admin/tenants", body)
            .await
            .map(drop)
    }

    /// Issues an API key with these roles and returns its secret.
    pub async fn api_key(&self, tenant: &str, roles: &[&str]) -> anyhow::Result<String> {
        let v = self
            .operator_post(
                &format!("/v1/admin/tenants/{tenant}/api-keys"),
                json!({"roles": roles}),
            )
            .await?;
        v["secret"]
            .as_str()
            .map(str::to_owned)
            .context("no secret in the API key answer")
    }

    /// One sample of `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(self.at("/metrics"))
            .bearer_auth(&self.metrics_token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        crate::metrics::sample_value(&text, name)
            .with_context(|| format!("metric {name} not in /metrics"))
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory the vault backs up to in a run (its backup benchmarks read it).
pub fn backup_repository(work: &std::path::Path) -> std::path::PathBuf {
    work.join("vault-repo")
}
