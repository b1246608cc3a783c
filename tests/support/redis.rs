//! A real Redis Stack for tests: redis-server with the RediSearch module, from `.tools/redis/`
//! (installed by `make tools`), on 127.0.0.1, without persistence, optionally with TLS and a
//! password; stopped by pid when dropped. Shared by `tests/redis_cache.rs` and the e2e suite,
//! each of which uses part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the server is reached.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// Speak TLS only, with a certificate for 127.0.0.1 signed by a CA of the test's own
    /// ([`Redis::ca_file`]).
    pub tls: bool,
    /// Require this password.
    pub password: Option<String>,
}

/// A running redis-server.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    options: RedisOptions,
    dir: tempfile::TempDir,
}

fn tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/redis");
    assert!(
        dir.join("bin/redis-server").is_file() && dir.join("lib/redisearch.so").is_file(),
        "{} has no bin/redis-server and lib/redisearch.so: run `make tools` (hack/install-tools.sh)",
        dir.display()
    );
    dir
}

impl Redis {
    /// A plain server (no TLS, no password).
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// A server as `options` say.
    pub fn start_with(options: RedisOptions) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            child: None,
            port,
            options,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        if redis.options.tls {
            make_certs(redis.dir.path());
        }
        redis.restart();
        redis
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        let tools = tools();
        let dir = self.dir.path();
        let mut command = Command::new(tools.join("bin/redis-server"));
        command
            .env(
                "LD_LIBRARY_PATH",
                tools.join("ssl/usr/lib/x86_64-linux-gnu"),
            )
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--loadmodule")
            .arg(tools.join("lib/redisearch.so"));
        let port = self.port.to_string();
        if self.options.tls {
            command
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &port]);
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not listen on 127.0.0.1:{} within 10 s",
            self.port
        );
    }

    /// Kills it by pid and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:port`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (with TLS).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it (P-256 keys), in `dir`.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!(
            "req -x509 {key} -keyout ca.key -out ca.crt -days 2 -subj /CN=redis-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ),
        format!("req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
         -days 2 -extfile server.ext"
            .to_owned(),
    ];
    for step in steps {
        let out = Command::new("openssl")
            .args(step.split(' '))
            .current_dir(dir)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
