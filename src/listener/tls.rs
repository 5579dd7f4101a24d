//! HTTPS for the listeners (`--tls-dir` with `tls.crt` and `tls.key`, as a `kubernetes.io/tls`
//! Secret mounts them). The certificate is re-read every minute, so a renewed one is served
//! without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

const RELOAD_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn load(dir: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let crt = dir.join("tls.crt");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", crt.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no certificate", crt.display())));
    }
    let key_path = dir.join("tls.key");
    // The error of a key file never quotes its contents.
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|_| TlsError(format!("{}: not a PEM private key", key_path.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| TlsError(format!("{}: unsupported private key", key_path.display())))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

#[derive(Debug)]
struct ReloadingCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The TLS acceptor of `--tls-dir`; the certificate is re-read every minute. Handshakes run
/// in the listener's connection tasks, bounded by its header-read timeout.
pub fn acceptor(dir: PathBuf) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = Arc::new(ReloadingCert(ArcSwap::new(load(&dir, &provider)?)));
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            match load(&dir, &provider) {
                Ok(k) => cert.0.store(k),
                Err(e) => tracing::warn!(error = %e, "keeping the previous TLS certificate"),
            }
        }
    });
    Ok(TlsAcceptor::from(Arc::new(config)))
}
