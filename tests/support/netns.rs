//! A real LAN on one Linux host: a bridge in the host's namespace and one
//! network namespace per node, each joined to the bridge by a veth pair,
//! with one `iarnet` binary running inside. Multicast (mDNS) crosses the
//! bridge like on a switch. Root only; [`unavailable`] says why not.
//!
//! Everything is removed by `Drop` (also on a panic): the nodes, a
//! partition's rules, the namespaces, the bridge and the iptables rule that
//! lets bridged frames through Docker's FORWARD policy (DROP).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gRPC and HTTP ports every node binds inside its own namespace.
pub const GRPC_PORT: u16 = 50051;
pub const HTTP_PORT: u16 = 8083;

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not root: network namespaces need root".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is missing"));
        }
    }
    None
}

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[track_caller]
fn must(cmd: &[&str]) {
    if let Err(e) = run(cmd) {
        panic!("setting up the LAN failed: {e}");
    }
}

/// One namespace on the bridge.
pub struct Ns {
    pub name: String,
    pub ip: String,
    host_end: String,
}

/// One `iarnet` process in a namespace.
pub struct Node {
    child: Child,
    pub id: String,
    pub ip: String,
    pub log: PathBuf,
}

impl Node {
    pub fn grpc(&self) -> String {
        format!("{}:{GRPC_PORT}", self.ip)
    }

    fn http(&self) -> SocketAddr {
        format!("{}:{HTTP_PORT}", self.ip)
            .parse()
            .expect("an IP and a port")
    }

    /// The body of `GET path` on the node's HTTP API, if it answered 200.
    pub fn get(&self, path: &str) -> Option<String> {
        match self.request("GET", path, "")? {
            (200, body) => Some(body),
            _ => None,
        }
    }

    /// `POST path` with a JSON `body` (may be empty): the status and the
    /// body, if the node answered.
    pub fn post(&self, path: &str, body: &str) -> Option<(u16, String)> {
        self.request("POST", path, body)
    }

    /// One HTTP/1.0 request to the node's HTTP API: the status and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.http(), Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: iarnet\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// The ids this node sees alive (itself included), if it answered.
    pub fn alive(&self) -> Option<BTreeSet<String>> {
        let body = self.get("/peer/nodes")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(
            v["nodes"]
                .as_array()?
                .iter()
                .filter(|n| n["state"] == "alive")
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect(),
        )
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A bridge, its namespaces and their nodes.
pub struct Lan {
    pub bridge: String,
    /// The first three octets of the LAN's /24.
    pub prefix: String,
    tag: String,
    pub namespaces: Vec<Ns>,
    pub nodes: Vec<Node>,
    forward_rule: Vec<String>,
    /// The partition's rules: a namespace and an INPUT rule inside it.
    cut: Vec<(String, Vec<String>)>,
    dir: tempfile::TempDir,
}

impl Lan {
    /// A LAN for `case` (0..=9): its names and subnet differ from other
    /// cases' and from other processes' (by pid).
    pub fn new(case: u32) -> Lan {
        assert!(case < 10, "case is one digit");
        let pid = std::process::id();
        let tag = format!("{}{case}", pid % 1000);
        let bridge = format!("iarbr{tag}");
        let prefix = format!("10.{}.{}", 100 + case, pid % 250);
        let forward_rule: Vec<String> = ["FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let lan = Lan {
            bridge: bridge.clone(),
            prefix: prefix.clone(),
            tag,
            namespaces: Vec::new(),
            nodes: Vec::new(),
            forward_rule,
            cut: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let _ = run(&["ip", "link", "del", &bridge]); // left by a killed run
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let _ = run(&[
            "ip",
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{prefix}.1/24"),
            "dev",
            &bridge,
        ]);
        must(&["ip", "link", "set", &bridge, "up"]);
        let mut insert = vec!["iptables", "-I"];
        insert.extend(lan.forward_rule.iter().map(String::as_str));
        must(&insert);
        lan
    }

    /// A namespace whose LAN interface is called `ifname` (`lan0`, or
    /// `docker0` to test the exclude list), with address prefix.(10+i).
    pub fn add_namespace(&mut self, ifname: &str) -> usize {
        let i = self.namespaces.len();
        let name = format!("iar{}n{i}", self.tag);
        let host_end = format!("iv{}x{i}", self.tag);
        let temp = format!("ip{}x{i}", self.tag);
        let ip = format!("{}.{}", self.prefix, 10 + i);
        let _ = run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        // Pushed first so Drop removes it even if a step below fails.
        self.namespaces.push(Ns {
            name: name.clone(),
            ip: ip.clone(),
            host_end: host_end.clone(),
        });
        must(&[
            "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &temp, "netns", &name,
        ]);
        must(&["ip", "link", "set", &host_end, "master", &self.bridge]);
        must(&["ip", "link", "set", &host_end, "up"]);
        let inside = |cmd: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", &name];
            full.extend_from_slice(cmd);
            must(&full);
        };
        inside(&["ip", "link", "set", &temp, "name", ifname]);
        inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", ifname]);
        inside(&["ip", "link", "set", ifname, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "route", "add", "224.0.0.0/4", "dev", ifname]);
        i
    }

    /// Drops mDNS (UDP 5353) in and out of namespace `ns`.
    pub fn drop_mdns(&self, ns: usize) {
        let name = &self.namespaces[ns].name;
        for chain in [["INPUT", "--dport"], ["OUTPUT", "--dport"]] {
            must(&[
                "ip", "netns", "exec", name, "iptables", "-A", chain[0], "-p", "udp", chain[1],
                "5353", "-j", "DROP",
            ]);
        }
    }

    /// Cuts the namespaces `a` off from the namespaces `b`, both ways:
    /// each drops every packet from the other side's addresses in its own
    /// INPUT chain, so calls across time out like on a broken link, while
    /// the host still reaches every node. [`Lan::heal`] (or `Drop`) undoes it.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for (side, other) in [(a, b), (b, a)] {
            for &n in side {
                for &o in other {
                    let ns = self.namespaces[n].name.clone();
                    let rule: Vec<String> = ["INPUT", "-s", &self.namespaces[o].ip, "-j", "DROP"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    let mut insert = vec!["ip", "netns", "exec", &ns, "iptables", "-I"];
                    insert.extend(rule.iter().map(String::as_str));
                    // Remembered first so Drop removes it even if this panics.
                    self.cut.push((ns.clone(), rule.clone()));
                    must(&insert);
                }
            }
        }
    }

    /// Removes every rule [`Lan::partition`] added.
    pub fn heal(&mut self) {
        for (ns, rule) in self.cut.drain(..) {
            let mut delete = vec!["ip", "netns", "exec", &ns, "iptables", "-D"];
            delete.extend(rule.iter().map(String::as_str));
            let _ = run(&delete);
        }
    }

    /// Starts `iarnet` in namespace `ns` as node `id`, with the shipped
    /// config, fast gossip, no internal provider and `env` on top.
    pub fn spawn(&mut self, ns: usize, id: &str, env: &[(&str, &str)]) -> usize {
        let Ns { name, ip, .. } = &self.namespaces[ns];
        let data = self.dir.path().join(id);
        let log = self.dir.path().join(format!("{id}.log"));
        let log_file = std::fs::File::create(&log).expect("node log file");
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let child = Command::new("ip")
            .args(["netns", "exec", name, env!("CARGO_BIN_EXE_iarnet")])
            .arg("--config")
            .arg(config)
            .args(["--peer-listen-addr", &format!("{ip}:{GRPC_PORT}")])
            .args(["--listen-addr", &format!("{ip}:{HTTP_PORT}")])
            .args(["--node-id", id, "--data-dir"])
            .arg(data)
            .env("IARNET_GOSSIP_INTERVAL", "200ms")
            .env("IARNET_DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("ip netns exec iarnet starts");
        self.nodes.push(Node {
            child,
            id: id.to_string(),
            ip: ip.clone(),
            log,
        });
        self.nodes.len() - 1
    }

    /// Every node's log tail, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.id, n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `check` every 50 ms until it returns `Ok`; panics after
    /// `timeout` with `what`, the last thing seen and the nodes' logs.
    #[track_caller]
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Lan) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(seen) if Instant::now() >= deadline => {
                    panic!(
                        "waited {timeout:?} for {what}; last seen: {seen}\n{}",
                        self.logs()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Checks `check` every 100 ms for `window`; panics the first time it fails.
    #[track_caller]
    pub fn hold(
        &self,
        what: &str,
        window: Duration,
        mut check: impl FnMut(&Lan) -> Result<(), String>,
    ) {
        let end = Instant::now() + window;
        while Instant::now() < end {
            if let Err(seen) = check(self) {
                panic!(
                    "expected {what} for {window:?}, but: {seen}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `n` sees at least the nodes `ids` alive.
    pub fn sees(&self, n: usize, ids: &[&str]) -> Result<(), String> {
        let node = &self.nodes[n];
        match node.alive() {
            Some(alive) if ids.iter().all(|id| alive.contains(*id)) => Ok(()),
            Some(alive) => Err(format!("{} sees {alive:?}", node.id)),
            None => Err(format!("{} did not answer /peer/nodes", node.id)),
        }
    }

    /// Node `n` answers and does not see `id` alive.
    pub fn does_not_see(&self, n: usize, id: &str) -> Result<(), String> {
        let node = &self.nodes[n];
        match node.alive() {
            Some(alive) if !alive.contains(id) => Ok(()),
            Some(alive) => Err(format!("{} sees {alive:?}", node.id)),
            None => Err(format!("{} did not answer /peer/nodes", node.id)),
        }
    }

    /// Stops every node (SIGKILL) and waits for them.
    pub fn stop_nodes(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        self.nodes.clear();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.stop_nodes();
        self.heal();
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", &ns.name]);
            let _ = run(&["ip", "link", "del", &ns.host_end]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
        let mut delete = vec!["iptables", "-D"];
        delete.extend(self.forward_rule.iter().map(String::as_str));
        let _ = run(&delete);
    }
}
