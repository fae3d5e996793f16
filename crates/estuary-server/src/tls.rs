//! TLS on the server's own port (rustls), with the certificate and key
//! reloaded in place: connections already open keep the session they
//! negotiated, the next handshake uses the new pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What went wrong loading a certificate and key; see [`TlsError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The certificate file cannot be read, or is not PEM.
    Certificate,
    /// The certificate file holds no certificate.
    NoCertificate,
    /// The key file cannot be read, or holds no PEM private key.
    Key,
    /// rustls refused the pair (the key does not match the certificate,
    /// or is of a kind it does not support).
    Mismatch,
}

/// A certificate and key that could not be loaded: which file, and why.
///
/// ```
/// use estuary_server::{TlsErrorKind, TlsFiles};
///
/// let error = TlsFiles::load("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
/// assert_eq!(error.kind(), TlsErrorKind::Certificate);
/// assert!(error.to_string().contains("/nonexistent/cert.pem"), "{error}");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", describe(*kind), file.display())]
pub struct TlsError {
    kind: TlsErrorKind,
    file: PathBuf,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

fn describe(kind: TlsErrorKind) -> &'static str {
    match kind {
        TlsErrorKind::Certificate => "cannot read the TLS certificate (PEM)",
        TlsErrorKind::NoCertificate => "no certificate in the TLS certificate file",
        TlsErrorKind::Key => "cannot read the TLS private key (PEM: PKCS#8, PKCS#1 or SEC1)",
        TlsErrorKind::Mismatch => "the TLS private key does not go with the certificate",
    }
}

impl TlsError {
    /// What went wrong.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }

    /// The file it is about.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn new(kind: TlsErrorKind, file: &Path, source: impl Into<Option<rustls::Error>>) -> Self {
        Self {
            kind,
            file: file.to_owned(),
            source: source.into().map(|e| Box::new(e) as _),
        }
    }
}

/// A certificate chain and its key, read from PEM files, as the server's
/// TLS configuration; [`reload`](Self::reload) reads the files again
/// (after a renewal) without a restart. Clones share the configuration.
///
/// ```no_run
/// use estuary_server::{Server, ServerConfig, TlsFiles};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = TlsFiles::load("/etc/estuary/cert.pem", "/etc/estuary/key.pem")?;
/// let config = ServerConfig { tls: Some(tls.clone()), ..ServerConfig::default() };
/// let server = Server::bind("0.0.0.0:443".parse()?).await?.with_config(config);
/// // On SIGHUP: tls.reload()?; the next handshake uses the new files.
/// # let _ = server; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Mutex<Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the certificate chain (`cert`, PEM, the server's certificate
    /// first) and its private key (`key`, PEM).
    pub fn load(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_owned(), key.as_ref().to_owned());
        let config = read(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: Arc::new(Mutex::new(Arc::new(config))),
        })
    }

    /// Reads the files again. On success the next handshake uses them;
    /// on error the previous pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = read(&self.cert, &self.key)?;
        *estuary_core::sync::lock(&self.current) = Arc::new(config);
        Ok(())
    }

    /// The acceptor for the next handshake.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(estuary_core::sync::lock(&self.current).clone())
    }
}

fn read(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|_| TlsError::new(TlsErrorKind::Certificate, cert, None))?;
    if chain.is_empty() {
        return Err(TlsError::new(TlsErrorKind::NoCertificate, cert, None));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::new(TlsErrorKind::Key, key, None))?;
    // ring, not rustls's default aws-lc-rs: it builds with a C compiler
    // alone (aws-lc-rs wants cmake and a long C build). rustls 0.23.48
    // deprecates it for lacking post-quantum key exchange
    // (X25519MLKEM768); classical X25519 and P-256 remain.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(TlsErrorKind::Mismatch, key, e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::new(TlsErrorKind::Mismatch, key, e))?;
    // HTTP/1.1 only: WebSocket upgrades are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
