//! A real 3-member etcd 3.4 cluster on loopback for the integration tests: free ports, a
//! temp dir, every member killed and reaped on drop. etcd missing fails the test (never a
//! skip): `scripts/test.sh` installs it.
#![allow(dead_code)] // each test file uses a part

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::{Mutex, MutexGuard};

/// Three etcd members per test on a 2-core machine: tests running side by side starve each
/// other's raft heartbeats into spurious elections, so they take turns.
pub static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::const_new(());

pub async fn serial() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().await
}

pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A 3-member etcd cluster in a temp dir; every member is killed and reaped on drop.
pub struct Cluster {
    bin: String,
    dir: PathBuf,
    initial_cluster: String,
    members: Vec<Member>,
}

impl Cluster {
    pub async fn start(test: &str) -> Cluster {
        let bin = std::env::var("FERRY_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        match Command::new(&bin).arg("--version").output() {
            Ok(output) if output.status.success() => {}
            other => panic!(
                "etcd is required for these tests and `{bin} --version` failed ({other:?}); \
                 install etcd-server (apt-get install etcd-server) or set FERRY_ETCD_BIN"
            ),
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("ferry-etcd-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the cluster's temp dir");
        // All six ports are held at once so that no two are the same.
        let listeners: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr").port())
            .collect();
        drop(listeners);
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client_port: ports[i],
                peer_port: ports[i + 3],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            bin,
            dir,
            initial_cluster,
            members,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_for_leader(&[0, 1, 2]).await;
        cluster
    }

    pub fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let log = self.dir.join(format!("{}.log", member.name));
        // A restart reuses the data dir; etcd then ignores the initial-cluster flags.
        let child = Command::new(&self.bin)
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "t"])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", member.name, self.bin));
        self.members[i].child = Some(child);
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..3).map(|i| self.endpoint(i)).collect()
    }

    pub fn index_of(&self, endpoint: &str) -> usize {
        (0..3)
            .find(|&i| self.endpoint(i) == endpoint)
            .expect("endpoint of this cluster")
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.members[i].child.as_ref().expect("member running").id()
    }

    pub fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(i).to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.members[i].name);
    }

    /// kill -9 and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Until each of `members` reports a leader, bounded.
    pub async fn wait_for_leader(&self, members: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &i in members {
            loop {
                let mut status = None;
                if let Ok(client) = Client::connect([self.endpoint(i)], None).await {
                    status = tokio::time::timeout(
                        Duration::from_millis(500),
                        client.maintenance_client().status(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok);
                }
                if status.is_some_and(|s| s.leader() != 0) {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(
                        self.dir.join(format!("{}.log", self.members[i].name)),
                    )
                    .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "etcd {} has no leader after 20 s; log tail:\n{}",
                        self.members[i].name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// `etcdctl` against every member, e.g. `compact <rev>`; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            output.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
