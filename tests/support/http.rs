//! A blocking HTTP GET over std TCP, for readiness polls outside an async runtime (reqwest's
//! blocking client is not built). Shared by the e2e stack and the benchmarks.

use std::io::{Read, Write};
use std::time::Duration;

/// Whether `GET url` (plain `http://host:port/path`) answers 2xx within 2 s.
pub fn blocking_get_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 2")
}
