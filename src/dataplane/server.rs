//! Serving: the ext_proc gRPC server with health and optional TLS, and the admin HTTP server,
//! both stopping gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::admin::{self, AdminState};
use super::extproc::ExtProc;

/// TLS for the ext_proc port: a server certificate, and a client CA that turns on mTLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA whose certificates clients must present.
    pub client_ca: Option<PathBuf>,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("ext_proc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

/// Binds a listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves ext_proc and gRPC health on `listener` until `shutdown` flips, then lets open
/// streams finish for up to `grace`. Health reports SERVING once `generation` is above 0.
pub async fn serve_extproc(
    listener: TcpListener,
    service: ExtProc,
    tls: Option<TlsFiles>,
    mut generation: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let ext_proc = ExternalProcessorServer::new(service);
    tokio::spawn(async move {
        if generation.wait_for(|g| *g > 0).await.is_ok() {
            reporter
                .set_serving::<ExternalProcessorServer<ExtProc>>()
                .await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
        }
    });

    let mut builder =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls_config(&tls).await?)?;
    }
    // serve_with_incoming ignores the builder's tcp_nodelay: set it on the incoming stream, or
    // Nagle and delayed ACKs stall small ext_proc messages for tens of milliseconds.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = {
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|s| *s).await;
        }
    };
    let server = builder
        .add_service(health)
        .add_service(ext_proc)
        .serve_with_incoming_shutdown(incoming, stop);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        _ = shutdown.wait_for(|s| *s) => {}
    }
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "ext_proc streams still open after the grace period; closing"
            );
            Ok(())
        }
    }
}

async fn tls_config(tls: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    let read = |path: PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|source| ServeError::TlsFile { path, source })
    };
    let identity = Identity::from_pem(read(tls.cert.clone()).await?, read(tls.key.clone()).await?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca.clone()).await?));
    }
    Ok(config)
}

/// Serves the admin port until `shutdown` flips.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    axum::serve(listener, admin::router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .map_err(ServeError::Admin)
}
