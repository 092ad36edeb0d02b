//! Real Redis for the tests (no mocks of it): Debian's `redis-server`, started on a free
//! loopback port and stopped when its handle drops.
//!
//! A machine without `redis-server` (a fresh one with only Rust) skips these tests, saying so,
//! unless `LIPACHAT_REQUIRE_REDIS=1` (CI sets it) makes that a failure: the README's test
//! command must pass there, and CI must not pass without them.
//!
//! Each server runs under a small `sh` watchdog that holds the write end of a pipe from this
//! test process: when the handle drops — or the test process dies, even by SIGKILL — the pipe
//! closes and the watchdog stops `redis-server`, so no server outlives its test.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::helpers::{EVENT_TIMEOUT, wait_until};

/// Set (to anything but `0`) where the Redis tests must run, as in CI.
pub(crate) const ENV_REQUIRE_REDIS: &str = "LIPACHAT_REQUIRE_REDIS";

/// Starts a Redis server (or cluster) for a test, or ends the test early when `redis-server`
/// is not installed and not required.
#[macro_export]
macro_rules! redis_or_skip {
    ($start:expr) => {
        match $start.await {
            Some(server) => server,
            None => return,
        }
    };
}

/// Whether `redis-server` can run here; when it cannot, says so, or fails if it is required.
fn redis_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if !available {
        let required = std::env::var(ENV_REQUIRE_REDIS).is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "redis-server is not installed and {ENV_REQUIRE_REDIS} is set (apt install redis-server)"
        );
        eprintln!("SKIPPED: redis-server is not installed (apt install redis-server)");
    }
    available
}

/// One `redis-server`.
pub(crate) struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// redis-server's own pid, stopped directly on drop.
    pid: Option<u32>,
}

/// A port that is free, and (for a Cluster node) whose bus port, +10000, is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = fastrand::u16(20_000..=29_999);
        if StdListener::bind(("127.0.0.1", port)).is_ok()
            && StdListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lipachat-relay-test-redis-{}-{tag}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl RedisServer {
    /// A standalone server on a free port; `None` when the test is to be skipped.
    pub(crate) async fn start() -> Option<Self> {
        Self::start_with(Vec::new(), "standalone").await
    }

    /// A server with extra `redis-server` arguments (`--requirepass`, `--cluster-enabled`...);
    /// `None` when the test is to be skipped.
    pub(crate) async fn start_with(extra: Vec<String>, tag: &str) -> Option<Self> {
        if !redis_available() {
            return None;
        }
        let mut server = Self {
            port: free_port_pair(),
            dir: scratch_dir(tag),
            extra,
            child: None,
            pid: None,
        };
        server.run().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            // The watchdog: redis in the background (its pid on stdout), then wait for our
            // pipe to close.
            .arg(r#"redis-server "$@" & pid=$!; echo "$pid"; read _ignored; kill "$pid"; wait "$pid""#)
            .arg("sh")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.to_str().unwrap(),
                "--logfile",
                "",
            ])
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Not kill_on_drop: killing the watchdog would orphan redis-server. Closing its pipe
        // makes it stop redis-server and exit by itself.
        let mut child = command
            .spawn()
            .expect("cannot run redis-server (apt install redis-server)");
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0; 1];
        while stdout.read(&mut byte).await.unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        self.pid = String::from_utf8_lossy(&line).trim().parse().ok();
        assert!(
            self.pid.is_some(),
            "the watchdog did not say redis-server's pid"
        );
        self.child = Some(child);
        self.wait_until_ready().await;
    }

    async fn wait_until_ready(&self) {
        let password = self
            .extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.extra.get(i + 1))
            .cloned();
        let ping = async {
            loop {
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await {
                    let mut request = String::new();
                    if let Some(password) = &password {
                        request.push_str(&format!("AUTH {password}\r\n"));
                    }
                    request.push_str("PING\r\n");
                    let mut answer = [0; 64];
                    if stream.write_all(request.as_bytes()).await.is_ok() {
                        let mut read = 0;
                        while let Ok(n) = stream.read(&mut answer[read..]).await {
                            if n == 0 {
                                break;
                            }
                            read += n;
                            if String::from_utf8_lossy(&answer[..read]).contains("PONG") {
                                return;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, ping)
            .await
            .expect("redis-server did not answer PING in time");
    }

    /// Stops the server (as an outage would) and waits until it has exited.
    pub(crate) async fn stop(&mut self) {
        self.pid = None;
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            tokio::time::timeout(EVENT_TIMEOUT, child.wait())
                .await
                .expect("redis-server did not stop")
                .unwrap();
        }
        // Wait until nothing answers on the port any more.
        let gone = async {
            while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(EVENT_TIMEOUT, gone).await.unwrap();
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub(crate) async fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .expect("cannot run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Stop redis-server now (the test process may exit right after this), then close the
        // watchdog's pipe so it exits too; tokio reaps it.
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters, no replicas, on loopback.
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters, joined; `None` when the test is to be skipped.
    pub(crate) async fn start() -> Option<Self> {
        let mut nodes = Vec::new();
        for index in 0..3 {
            let extra = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                format!("nodes-{index}.conf"),
                "--cluster-node-timeout".to_owned(),
                "5000".to_owned(),
            ];
            nodes.push(RedisServer::start_with(extra, &format!("cluster-{index}")).await?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("cannot run redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.wait_until_ok().await;
        Some(cluster)
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub(crate) async fn wait_until_ok(&self) {
        wait_until("every cluster node reports cluster_state:ok", || async {
            for node in &self.nodes {
                if !node
                    .cli(&["cluster", "info"])
                    .await
                    .contains("cluster_state:ok")
                {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// The seed-node list for `RELAY_REDIS_URL` (with `RELAY_REDIS_CLUSTER=true`).
    pub(crate) fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[tokio::test]
async fn the_harness_starts_stops_and_restarts_redis() {
    let mut server = redis_or_skip!(RedisServer::start());
    assert!(server.cli(&["ping"]).await.contains("PONG"));
    server.cli(&["set", "k", "v"]).await;
    server.restart().await;
    assert!(
        server.cli(&["get", "k"]).await.trim().is_empty(),
        "nothing persists"
    );
    server.stop().await;
    assert!(
        TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_harness_starts_a_three_master_cluster() {
    let cluster = redis_or_skip!(RedisCluster::start());
    assert_eq!(cluster.urls().split(',').count(), 3);
    assert!(cluster.urls().starts_with(&cluster.nodes[0].url()));
    let info = cluster.nodes[1].cli(&["cluster", "info"]).await;
    assert!(info.contains("cluster_known_nodes:3"), "{info}");
}
