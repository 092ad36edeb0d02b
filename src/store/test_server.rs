//! Real Redis for the unit tests that need one (no mocks of it): `redis-server` on a free
//! loopback port, or three of them joined into a Cluster with `redis-cli`, stopped when the
//! handle drops (at the end of the test, or when it panics).
//!
//! As in `tests/api/redis_server.rs`: without `redis-server` these tests print `SKIPPED` and
//! pass, unless `LIPACHAT_REQUIRE_REDIS=1` (CI sets it) makes that a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, KeyRequirement};
use crate::metrics::Metrics;
use crate::store::SharedStore;

/// Set (to anything but `0`) where the Redis tests must run.
const ENV_REQUIRE_REDIS: &str = "LIPACHAT_REQUIRE_REDIS";
/// How long a server may take to answer, or a cluster to agree.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server`, or the nodes of one Cluster.
pub(crate) struct TestRedis {
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
    cluster: bool,
}

impl TestRedis {
    /// A standalone server; `None` when the test is to be skipped.
    pub(crate) fn start() -> Option<Self> {
        Self::start_nodes(1, false)
    }

    /// A Cluster of three masters; `None` when the test is to be skipped.
    pub(crate) fn cluster() -> Option<Self> {
        let cluster = Self::start_nodes(3, true)?;
        let addresses: Vec<String> = cluster.ports().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let started = Instant::now();
        while !cluster
            .ports()
            .all(|port| cli(port, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(started.elapsed() < READY_TIMEOUT, "the cluster is not ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    fn start_nodes(count: usize, cluster: bool) -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "lipachat-relay-unit-redis-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            nodes: Vec::new(),
            dir,
            cluster,
        };
        for index in 0..count {
            let port = free_port();
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--logfile", ""])
                .args(["--dir", server.dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if cluster {
                command
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{index}.conf")]);
            }
            let child = command.spawn().expect("cannot run redis-server");
            server.nodes.push((port, child));
            wait_for_ping(port);
        }
        Some(server)
    }

    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().map(|(port, _)| *port)
    }

    /// A store on this server (or Cluster), with a prefix of its own.
    pub(crate) fn store(&self) -> SharedStore {
        let urls: Vec<String> = self
            .ports()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        let prefix = format!("t{:x}", fastrand::u32(..));
        let vars = [
            ("RELAY_REDIS_URL", urls.join(",")),
            ("RELAY_REDIS_CLUSTER", self.cluster.to_string()),
            ("RELAY_REDIS_PREFIX", prefix),
            // A loaded two-core test machine, and a Cluster's first connection.
            ("RELAY_REDIS_TIMEOUT_MS", "3000".to_owned()),
        ];
        let config = Config::from_vars(vars, KeyRequirement::Optional).unwrap();
        SharedStore::new(&config.redis, Arc::new(Metrics::new()))
            .unwrap()
            .unwrap()
    }

    /// `redis-cli` against the (first) server; its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        cli(self.ports().next().unwrap(), args)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `redis-server` runs here; when it does not, says so, or fails if it is required.
fn available() -> bool {
    let available = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
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

/// A free port whose Cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..=29_999);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

fn wait_for_ping(port: u16) {
    let started = Instant::now();
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut answer = [0; 16];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream
                    .read(&mut answer)
                    .is_ok_and(|n| answer[..n].starts_with(b"+PONG"))
            {
                return;
            }
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "redis-server on {port} did not answer PING"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("cannot run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
