//! HTTPS for the HTTP listener (`http.tls_cert`, `http.tls_key`): a rustls acceptor (ring
//! provider) whose certificate is read from PEM files at start and again on
//! [`CertStore::reload`] (the gateway calls it on SIGHUP), so a renewed certificate is
//! served without a restart. A reload that fails keeps the certificate in use.
//!
//! Owns the current certificate only; accepting and serving connections is
//! `output::shared::http_serve`'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The certificate the HTTPS listener serves, replaceable while it runs.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Reads the certificate chain at `cert` and the private key at `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertStore>> {
        let current = read_pair(cert, key)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again; on success new handshakes use the new certificate.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// An acceptor that serves this store's current certificate (HTTP/2 or HTTP/1.1, as
    /// ALPN agrees, over TLS 1.2 or 1.3).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        // h2 first: a page over https plays many HTTP-FLV streams on one connection (a
        // browser opens at most six HTTP/1.1 connections per host); a WebSocket (wss://)
        // asks for http/1.1 (no RFC 8441 WebSockets over HTTP/2 here)
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The chain at `cert` and the key at `key`, checked to belong together.
fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("reading http.tls_cert {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("http.tls_cert {}: not a PEM certificate", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("http.tls_cert {}: no certificate in it", cert.display());
    }
    let key_pem =
        std::fs::read(key).with_context(|| format!("reading http.tls_key {}", key.display()))?;
    // the error names the file, never its content
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| anyhow::anyhow!("http.tls_key {}: no PEM private key in it", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| anyhow::anyhow!("http.tls_key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| anyhow::anyhow!("http.tls_key does not belong to http.tls_cert: {e}"))?;
    Ok(Arc::new(certified))
}
