//! A real `redis-server` for the tests (and the `redis_bench` example), started on a free
//! loopback port and killed when dropped.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The environment variable that turns "redis-server is missing" from a skip into a failure.
pub const REQUIRE: &str = "MISAR_REQUIRE_SERVICES";

/// Whether `redis-server` can be run. When it cannot: prints a notice and returns `false`
/// (the test passes without doing anything), or panics if `MISAR_REQUIRE_SERVICES=1`.
pub fn available(test: &str) -> bool {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return true;
    }
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{test}: redis-server is not installed and {REQUIRE}=1");
    }
    eprintln!(
        "notice: {test} skipped: redis-server is not installed \
         (apt-get install redis-server; set {REQUIRE}=1 to make this a failure)"
    );
    false
}

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Arguments beyond the defaults (cluster mode, a working directory).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub async fn start() -> RedisServer {
        Self::start_with(Vec::new()).await
    }

    /// [`start`](Self::start) with more `redis-server` arguments.
    pub async fn start_with(extra: Vec<String>) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            child: None,
            extra,
        };
        server.launch().await;
        server
    }

    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to the clients) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    async fn launch(&mut self) {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "notice",
            ])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server");
        let stdout = child.stdout.take().expect("redis-server's stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Event-driven readiness: redis-server says so on stdout.
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            ready,
            Ok(true),
            "redis-server did not start on port {}",
            self.port
        );
        // Keep reading its log, so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A plain connection for poking at Redis directly (what a foreign publisher would do).
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// A Redis Cluster of `masters` masters and no replicas, started from the Debian packages the
/// way an operator would: `redis-server --cluster-enabled yes` per node, then
/// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Holds each node's `nodes.conf` (a node restarted on it rejoins with its slots).
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for index in 0..masters {
            let node_dir = dir.path().join(index.to_string());
            std::fs::create_dir_all(&node_dir).expect("a node directory");
            nodes.push(
                RedisServer::start_with(vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                    "--dir".into(),
                    node_dir.display().to_string(),
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_ok().await;
        cluster
    }

    /// The seed URLs, comma-separated (what `RedisConfig { cluster: true, .. }` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every node says `cluster_state:ok` (all slots served).
    pub async fn wait_ok(&self) {
        let all_ok = async {
            loop {
                let mut ok = true;
                for node in &self.nodes {
                    let info: String = match redis::Client::open(node.url())
                        .expect("url")
                        .get_multiplexed_async_connection()
                        .await
                    {
                        Ok(mut connection) => redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query_async(&mut connection)
                            .await
                            .unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    ok &= info.contains("cluster_state:ok");
                }
                if ok {
                    return;
                }
                // The state converges through the cluster bus: ask again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all_ok)
            .await
            .expect("the cluster did not reach cluster_state:ok");
    }

    /// `key`'s slot.
    pub async fn slot_of(&self, key: &[u8]) -> u16 {
        let mut connection = raw(&self.nodes[0].url()).await;
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// Moves `slot` from node `from` to node `to`, keys included, the way `redis-cli
    /// --cluster reshard` does: IMPORTING / MIGRATING, `MIGRATE` the keys, then `SETSLOT
    /// NODE` on every node.
    pub async fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let mut source = raw(&self.nodes[from].url()).await;
        let mut target = raw(&self.nodes[to].url()).await;
        let id = |connection: &mut redis::aio::MultiplexedConnection| {
            let mut connection = connection.clone();
            async move {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query_async::<String>(&mut connection)
                    .await
                    .expect("CLUSTER MYID")
            }
        };
        let (source_id, target_id) = (id(&mut source).await, id(&mut target).await);
        let setslot =
            |connection: &mut redis::aio::MultiplexedConnection, state: &str, node: &str| {
                let mut connection = connection.clone();
                let (state, node) = (state.to_owned(), node.to_owned());
                async move {
                    let () = redis::cmd("CLUSTER")
                        .arg("SETSLOT")
                        .arg(slot)
                        .arg(state)
                        .arg(node)
                        .query_async(&mut connection)
                        .await
                        .expect("CLUSTER SETSLOT");
                }
            };
        setslot(&mut target, "IMPORTING", &source_id).await;
        setslot(&mut source, "MIGRATING", &target_id).await;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut source)
                .await
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(keys)
                .query_async(&mut source)
                .await
                .expect("MIGRATE");
        }
        for node in &self.nodes {
            let mut connection = raw(&node.url()).await;
            setslot(&mut connection, "NODE", &target_id).await;
        }
    }

    /// The index of the node serving `key`'s slot.
    pub async fn owner_of(&self, key: &[u8]) -> usize {
        let mut connection = raw(&self.nodes[0].url()).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("CLUSTER KEYSLOT");
        let shards: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .expect("CLUSTER SLOTS");
        let redis::Value::Array(ranges) = shards else {
            panic!("CLUSTER SLOTS: {shards:?}")
        };
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (fields.first(), fields.get(1))
            else {
                continue;
            };
            if (*start..=*end).contains(&i64::from(slot)) {
                let Some(redis::Value::Array(master)) = fields.get(2) else {
                    continue;
                };
                let Some(redis::Value::Int(port)) = master.get(1) else {
                    continue;
                };
                return self
                    .nodes
                    .iter()
                    .position(|node| i64::from(node.port()) == *port)
                    .expect("a node of ours");
            }
        }
        panic!("no owner for slot {slot}");
    }
}

/// A TCP relay to a Redis that delays what the client sends by `delay` (what comes back is
/// not delayed): a slow link for one node, so its commands reach Redis late.
pub struct SlowLink {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    pub async fn start(target: u16, delay: Duration) -> SlowLink {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        if n == 0
                            || tx
                                .send((tokio::time::Instant::now() + delay, buffer[..n].to_vec()))
                                .is_err()
                        {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((due, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(due).await;
                        if server_write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        SlowLink { port, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
