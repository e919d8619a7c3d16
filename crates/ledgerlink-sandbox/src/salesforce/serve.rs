//! The Salesforce sandbox's own HTTP(S) server loop.
//!
//! Layout: [`Tls`] generates the certificates at start — a self-signed authority and the server certificate it signs
//! (SANs `127.0.0.1` and `localhost`) — writes the authority's PEM where clients can trust it and builds the rustls
//! acceptor (ring provider). OpenSSL-based clients (Python's `requests`) refuse a bare self-signed leaf as a trust
//! anchor, which is why the pair is an authority and a leaf, like any private PKI. [`serve`] accepts connections on the
//! listener, optionally wraps them in TLS and hands each to hyper with the axum router as its service. Every request
//! carries a [`DropConnection`] handle in its extensions: a handler that fires it makes the connection task drop the
//! socket without writing an answer, which is how the `Drop` fault reaches the client as a connection error rather
//! than as a malformed response. `axum::serve` offers no such hook, hence this loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Fired by a handler to close its connection without an answer.
#[derive(Clone, Debug)]
pub struct DropConnection(Arc<Notify>);

impl DropConnection {
    /// Closes the connection; the caller should then never complete (the connection task drops it).
    pub async fn drop_now(&self) -> ! {
        self.0.notify_one();
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes")
    }
}

/// The TLS side: the acceptor and where the certificate's PEM was written.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub cert_pem_path: PathBuf,
}

impl Tls {
    /// Fresh certificates for `127.0.0.1` and `localhost`; the authority's PEM is written to `pem_path`.
    pub fn generate(pem_path: &Path) -> anyhow::Result<Tls> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let fail = |e: rcgen::Error| {
            anyhow::anyhow!("salesforce sandbox: cannot generate the TLS certificate: {e}")
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ledgerlink Salesforce sandbox CA");
        let ca_key = KeyPair::generate().map_err(fail)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(fail)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(fail)?;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(fail)?;
        std::fs::write(pem_path, ca_cert.pem()).map_err(|e| {
            anyhow::anyhow!(
                "salesforce sandbox: cannot write the certificate to {}: {e}",
                pem_path.display()
            )
        })?;
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("salesforce sandbox: TLS protocol versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| anyhow::anyhow!("salesforce sandbox: TLS certificate rejected: {e}"))?;
        // Only HTTP/1.1 is served; saying so keeps HTTP/2-capable clients from trying h2 over ALPN.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert_pem_path: pem_path.to_path_buf(),
        })
    }
}

/// Salesforce answers `…/sobjects/Account/` like `…/sobjects/Account` (simple-salesforce always sends the slash, and
/// the change feeds are documented as `updated/`), so one trailing slash is dropped before routing.
pub fn trim_trailing_slash<B>(req: &mut hyper::Request<B>) {
    let uri = req.uri();
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = path.trim_end_matches('/');
    let new = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    if let Ok(parsed) = new.parse() {
        *req.uri_mut() = parsed;
    }
}

/// Accepts connections until `shutdown` fires, then closes the open ones.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "salesforce sandbox: accept failed");
                        continue;
                    }
                };
                let router = router.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => serve_connection(s, router).await,
                            Err(e) => tracing::debug!(error = %e, "salesforce sandbox: TLS handshake failed"),
                        },
                        None => serve_connection(stream, router).await,
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection<S>(io: S, router: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let handle = DropConnection(kill.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        trim_trailing_slash(&mut req);
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        served = conn => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "salesforce sandbox: connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket with nothing written.
        _ = kill.notified() => {}
    }
}
