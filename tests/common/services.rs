//! Real services for multi-instance tests: Debian's `redis-server` and nginx, installed with
//! apt when missing (once, under a lock file, so parallel test binaries do not race) and
//! started on free loopback ports as children that are stopped by their own PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::{collect_stderr, start_listening, wait_for_port, Proc};

/// Installs a Debian package providing `binary` unless it is already there; returns its path.
fn ensure(binary: &str, packages: &[&str]) -> PathBuf {
    let find = || {
        ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(binary))
            .find(|p| p.exists())
    };
    if let Some(found) = find() {
        return found;
    }
    // One installer at a time across test binaries; apt's own lock waits for other users.
    let script = format!(
        "command -v {binary} >/dev/null || [ -x /usr/sbin/{binary} ] || {{ \
           apt-get -o DPkg::Lock::Timeout=300 update -qq && \
           for p in {pkgs}; do DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
             install -y -qq --no-install-recommends $p && break; done; }}",
        pkgs = packages.join(" ")
    );
    let out = Command::new("flock")
        .args(["/tmp/aigw-test-apt.lock", "sh", "-c", &script])
        .output()
        .expect("run flock/apt-get");
    find().unwrap_or_else(|| {
        panic!(
            "installing {packages:?} for {binary} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn redis_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ensure("redis-server", &["redis-server"]))
}

pub fn nginx_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ensure("nginx", &["nginx-light", "nginx"]))
}

/// A private Redis (no persistence) on a free port, or on `port` (a restart, which must get
/// that port back: it is not moved).
pub fn start_redis_on(port: Option<u16>) -> Proc {
    let listen = |port: u16| ["--port".to_string(), port.to_string()];
    let Some(port) = port else {
        return start_listening("redis-server", |port| spawn_redis(&listen(port)));
    };
    let mut child = spawn_redis(&listen(port));
    let log = collect_stderr(&mut child);
    wait_for_port(port, &mut child, "redis-server");
    Proc { child, port, log }
}

/// Debian's redis-server on 127.0.0.1 without persistence; `listen` says on which port(s). It
/// logs to stdout (a port it cannot bind, too), which is collected with its stderr.
fn spawn_redis(listen: &[String]) -> Child {
    Command::new(redis_server_bin())
        .args(listen)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redis-server")
}

/// nginx round-robining between `backends` (loopback ports), as one process without a master.
pub fn start_nginx(backends: &[u16]) -> Proc {
    start_listening("nginx", |port| spawn_nginx(port, backends))
}

fn spawn_nginx(port: u16, backends: &[u16]) -> Child {
    let dir = std::env::temp_dir().join(format!("aigw-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let servers: String = backends
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p};\n"))
        .collect();
    let d = dir.display();
    let user = if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        "user root root;"
    } else {
        ""
    };
    let conf = format!(
        "{user}
worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream gateways {{
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering off;
      proxy_read_timeout 120s;
    }}
  }}
}}
"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    Command::new(nginx_bin())
        .args(["-e", &format!("{d}/error.log"), "-p", &format!("{d}")])
        .args(["-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx")
}

/// A private Redis speaking TLS only, its certificate (for 127.0.0.1) signed by a private CA
/// made here by `openssl`; returns the server and the CA's certificate (PEM), which is in no
/// trust store unless a test puts it in one.
pub fn start_redis_tls() -> (Proc, PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("aigw-redis-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (ca, ca_key, csr) = (dir.join("ca.pem"), dir.join("ca.key"), dir.join("csr.pem"));
    let extensions = dir.join("server.ext");
    std::fs::write(
        &extensions,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    // A fresh machine may lack the openssl command (it comes with ca-certificates, usually).
    let openssl = ensure("openssl", &["openssl"]);
    let run = |args: &[&std::ffi::OsStr]| {
        let made = Command::new(&openssl)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            made.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    let arg = |s: &'static str| std::ffi::OsStr::new(s);
    let rsa = ["-newkey", "rsa:2048", "-nodes"].map(arg);
    run(&[
        &[arg("req"), arg("-x509"), arg("-days"), arg("1")],
        &rsa[..],
        &[arg("-subj"), arg("/CN=aigw test CA"), arg("-keyout")],
        &[ca_key.as_os_str(), arg("-out"), ca.as_os_str()],
    ]
    .concat());
    run(&[
        &[arg("req")][..],
        &rsa[..],
        &[arg("-subj"), arg("/CN=127.0.0.1"), arg("-keyout")],
        &[key.as_os_str(), arg("-out"), csr.as_os_str()],
    ]
    .concat());
    run(&[
        arg("x509"),
        arg("-req"),
        arg("-days"),
        arg("1"),
        arg("-in"),
        csr.as_os_str(),
        arg("-CA"),
        ca.as_os_str(),
        arg("-CAkey"),
        ca_key.as_os_str(),
        arg("-CAcreateserial"),
        arg("-extfile"),
        extensions.as_os_str(),
        arg("-out"),
        cert.as_os_str(),
    ]);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let redis = start_listening("redis-server (TLS)", |port| {
        let port = port.to_string();
        let listen = [
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-auth-clients",
            "no",
        ];
        spawn_redis(&listen.map(String::from))
    });
    (redis, ca)
}
