//! Zero-downtime restarts: `shutdown_delay` keeps a stopping gateway serving while `/readyz`
//! already answers 503, in-process (the shutdown future of `run`) and as a rolling restart of
//! two real `gateway` processes behind the real Debian HAProxy.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::util::*;

/// Starts `run` on one plain listener; the returned sender is its shutdown signal.
async fn run_in_process(
    dir: &Path,
    yaml: &str,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut config = gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    harness_params(yaml, &mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listeners = gateway::Listeners {
        http: Some(listener),
        https: None,
        admin: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        gateway::run(listeners, config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    for _ in 0..500 {
        if let Ok(r) = get(&format!("http://{addr}/readyz")).await
            && r.status == 200
        {
            return (addr, tx, server);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway did not become ready");
}

/// Every `get` helper call opens a new connection, which is what the delay is about.
async fn delay_keeps_serving_while_not_ready(fast_path: bool) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The delay only needs to outlast the few local requests below; the slow request outlasts
    // the delay, so it is in flight when the drain starts.
    let yaml = format!(
        "version: 1\nshutdown_delay: 2s\nshutdown_grace: 10s\nadmin: {{listen: null}}\nlisten: {{http: 127.0.0.1:0, https: null, fast_path: {fast_path}}}\nroutes:\n  - {{path: /, upstream: '{}', auth: public}}\n",
        up.url()
    );
    let (addr, stop, server) = run_in_process(dir.path(), &yaml).await;
    let url = |p: &str| format!("http://{addr}{p}");
    stop.send(()).unwrap();

    // Not ready at once...
    let mut ready = 200;
    for _ in 0..100 {
        ready = get(&url("/readyz")).await.unwrap().status;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        ready, 503,
        "/readyz did not turn 503 after the shutdown signal"
    );
    // ...but new connections are still served, and the liveness probe still passes.
    let r = get(&url("/during/delay")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&url("/healthz")).await.unwrap().status, 200);
    let slow = tokio::spawn(get(url("/slow/3000").leak()));
    wait_until("the slow request to reach the upstream", || {
        up.requests().iter().any(|s| s.uri == "/slow/3000")
    })
    .await;
    assert_eq!(get(&url("/readyz")).await.unwrap().status, 503);

    // After the delay the listener closes; the request in flight still finishes (the drain).
    let mut closed = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "hang guard: the listener never closed");
    let r = guard(20, slow).await.unwrap().unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut: {}", r.text());
    guard(20, server).await.unwrap();
}

#[tokio::test]
async fn shutdown_delay_keeps_serving_with_readyz_503_then_drains() {
    delay_keeps_serving_while_not_ready(true).await;
}

#[tokio::test]
async fn shutdown_delay_keeps_serving_with_readyz_503_then_drains_without_fast_path() {
    delay_keeps_serving_while_not_ready(false).await;
}

#[tokio::test]
async fn without_a_delay_shutdown_stops_accepting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nadmin: {listen: null}\nlisten: {http: 127.0.0.1:0, https: null}\nroutes:\n  - {path: /, upstream: 'builtin:whoami', auth: public}\n";
    let (_addr, stop, server) = run_in_process(dir.path(), yaml).await;
    stop.send(()).unwrap();
    // The default delay is 0: run returns as soon as the (idle) connections are gone.
    guard(20, server).await.unwrap();
}

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// A `gateway serve` process; killed if the test ends early.
struct Replica {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rolling-restart test's delay: several HAProxy check intervals.
const DELAY: &str = "2s";

impl Replica {
    /// Starts the real binary on `port` (in `dir`, its own store) and waits until it is live.
    async fn start(dir: tempfile::TempDir, port: u16) -> Replica {
        match Replica::start_with(dir, port, DELAY).await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Replica::start`] with a shutdown delay; an error when the replica exits at start-up
    /// or does not become ready. Ready means this replica answers: the port was free when the
    /// test picked it, but another test's server may have taken it since, so readiness is
    /// asked on a route only this replica has.
    async fn start_with(dir: tempfile::TempDir, port: u16, delay: &str) -> Result<Replica, String> {
        let mark = format!(
            "/replica-{port}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let yaml = format!(
            "version: 1\nshutdown_delay: {delay}\nshutdown_grace: 10s\nadmin: {{listen: null}}\nlisten: {{http: 127.0.0.1:{port}, https: null}}\nroutes:\n  - {{path: {mark}, upstream: 'builtin:whoami', auth: public}}\n  - {{path: /, upstream: 'builtin:whoami', auth: public}}\n"
        );
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut replica = Replica { child, port, dir };
        for _ in 0..500 {
            if let Ok(r) = get(&format!("http://127.0.0.1:{port}{mark}")).await
                && r.status == 200
                && let Ok(r) = get(&format!("http://127.0.0.1:{port}/readyz")).await
                && r.status == 200
            {
                return Ok(replica);
            }
            if replica.child.try_wait().unwrap().is_some() {
                return Err(format!("the replica on port {port} exited at start-up"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("the replica on port {port} did not become ready"))
    }

    fn term(&self) {
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(term.success());
    }

    /// SIGTERM, wait for a clean exit, start again on the same port.
    async fn restart(mut self) -> Replica {
        self.term();
        let mut status = None;
        for _ in 0..1500 {
            status = self.child.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = status.expect("hang guard: the replica did not exit after SIGTERM");
        assert!(status.success(), "{status:?}");
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        Replica::start(dir, port).await
    }
}

#[tokio::test]
async fn a_second_signal_ends_the_shutdown_delay() {
    let mut replica = None;
    for _ in 0..5 {
        let [port] = free_ports(1)[..] else {
            unreachable!()
        };
        // A delay no test waits out: only the second signal can end it.
        let dir = tempfile::tempdir().unwrap();
        let started = tokio::time::timeout(
            Duration::from_secs(30),
            Replica::start_with(dir, port, "10min"),
        )
        .await;
        if let Ok(Ok(r)) = started {
            replica = Some(r);
            break;
        }
    }
    let mut replica = replica.expect("the replica did not start");
    let url = format!("http://127.0.0.1:{}/readyz", replica.port);
    replica.term();
    let mut ready = 200;
    for _ in 0..500 {
        ready = get(&url).await.unwrap().status;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503, "not draining after the first SIGTERM");
    assert!(replica.child.try_wait().unwrap().is_none());
    replica.term();
    let mut status = None;
    for _ in 0..2000 {
        status = replica.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = status.expect("hang guard: the second SIGTERM did not end the delay");
    assert!(status.success(), "{status:?}");
}

struct Haproxy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_binary() -> Option<&'static str> {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// The status HAProxy's CSV stats give each server of backend `gateways` (`UP`, `DOWN`, ...).
async fn server_states(stats_port: u16) -> Vec<(String, String)> {
    let Ok(r) = get(&format!("http://127.0.0.1:{stats_port}/stats;csv")).await else {
        return Vec::new();
    };
    r.text()
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols.first() == Some(&"gateways") && cols.get(1) != Some(&"BACKEND")).then(|| {
                (
                    cols[1].to_owned(),
                    (*cols.get(17).unwrap_or(&"")).to_owned(),
                )
            })
        })
        .collect()
}

async fn wait_all_up(stats_port: u16) {
    for _ in 0..1000 {
        let states = server_states(stats_port).await;
        if states.len() == 2 && states.iter().all(|(_, s)| s == "UP") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "HAProxy never saw both replicas up: {:?}",
        server_states(stats_port).await
    );
}

#[tokio::test]
async fn rolling_restart_behind_haproxy_loses_no_request() {
    let Some(bin) = haproxy_binary() else {
        // .ci/run installs HAProxy and sets this, so CI cannot skip the test.
        assert!(
            std::env::var_os("GATEWAY_REQUIRE_HAPROXY").is_none(),
            "HAProxy is required (GATEWAY_REQUIRE_HAPROXY is set) but not installed"
        );
        eprintln!("skipping: HAProxy is not installed (apt-get install haproxy)");
        return;
    };
    let [port_a, port_b, front, stats] = free_ports(4)[..] else {
        unreachable!()
    };
    let a = Replica::start(tempfile::tempdir().unwrap(), port_a).await;
    let b = Replica::start(tempfile::tempdir().unwrap(), port_b).await;

    // Checks every 100 ms, one failed check takes a replica out: well inside the 2 s delay.
    // No retries, like an L4 balancer or a Kubernetes Service: a replica that stopped accepting
    // while still in the pool shows as failed requests (with its default of 3 retries a second
    // apart, HAProxy would wait for the restarted replica instead and hide that).
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "global\n    maxconn 512\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n    retries 0\nfrontend http\n    bind 127.0.0.1:{front}\n    default_backend gateways\nfrontend stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\nbackend gateways\n    balance roundrobin\n    option httpchk\n    http-check send meth GET uri /readyz\n    http-check expect status 200\n    default-server check inter 100ms fall 1 rise 1\n    server a 127.0.0.1:{port_a}\n    server b 127.0.0.1:{port_b}\n    http-response set-header X-Served-By %[srv_name]\n"
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let haproxy = Haproxy {
        child: Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        _dir: dir,
    };
    wait_all_up(stats).await;

    // Four clients, each a fresh connection per request (the case the delay is for) mixed with
    // a keep-alive client, looping until both replicas have been restarted.
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served_by = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    for keep_alive in [false, false, false, true] {
        let (done, ok, failures, served_by) = (
            done.clone(),
            ok.clone(),
            failures.clone(),
            served_by.clone(),
        );
        clients.push(tokio::spawn(async move {
            let pooled =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let url = format!("http://127.0.0.1:{front}/app/x");
            while !done.load(Ordering::Relaxed) {
                let result = if keep_alive {
                    match pooled.get(url.parse().unwrap()).await {
                        Ok(r) => Ok((
                            r.status().as_u16(),
                            r.headers()
                                .get("x-served-by")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        )),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    get(&url)
                        .await
                        .map(|r| (r.status, r.header("x-served-by")))
                        .map_err(|e| e.to_string())
                };
                match result {
                    Ok((200, by)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if let Some(by) = by {
                            served_by.lock().unwrap().insert(by);
                        }
                    }
                    Ok((status, _)) => failures.lock().unwrap().push(format!("status {status}")),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }

    let a = a.restart().await;
    wait_all_up(stats).await;
    let b = b.restart().await;
    wait_all_up(stats).await;
    done.store(true, Ordering::Relaxed);
    for c in clients {
        guard(30, c).await.unwrap();
    }
    drop(haproxy);
    drop((a, b));

    let failures = failures.lock().unwrap();
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rolling restart: {:?}",
        failures.len(),
        failures.len() + ok,
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 0);
    let served_by = served_by.lock().unwrap();
    assert_eq!(
        served_by.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "both replicas served"
    );
}
