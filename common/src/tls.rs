//! TLS material: a local CA and server certificate created on first start (safely when several
//! services start at once), the TLS 1.3-only server configuration, and the client configuration.

use crate::Error;
use crate::identity::{create_private_dir, write_secret_file};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where certificates and keys live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    /// The generated layout under `<data_dir>/tls/`.
    pub fn generated(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// The names every generated server certificate is valid for, plus `extra`.
pub fn default_server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Makes sure `<data_dir>/tls/` holds a CA and a server certificate for `names`, creating them
/// under an exclusive file lock if missing. Returns the paths and whether they were created.
pub fn ensure_generated(data_dir: &Path, names: &[String]) -> Result<(TlsFiles, bool), Error> {
    let files = TlsFiles::generated(data_dir);
    let dir = data_dir.join("tls");
    create_private_dir(&dir)?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    // Two services starting at once: the second waits here, then finds the files.
    lock.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    if files.ca_cert.exists() && files.server_cert.exists() && files.server_key.exists() {
        return Ok((files, false));
    }
    generate(&dir, &files, names)?;
    Ok((files, true))
}

fn rcgen_err(e: rcgen::Error) -> Error {
    Error::Tls(e.to_string())
}

fn generate(dir: &Path, files: &TlsFiles, names: &[String]) -> Result<(), Error> {
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "svs local CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rcgen_err)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "svs service");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(rcgen_err),
        })
        .collect::<Result<_, _>>()?;
    let server_cert = params.signed_by(&server_key, &issuer).map_err(rcgen_err)?;

    // The CA key signs nothing after this; keeping it only widens what a stolen data dir gives away.
    write_secret_file(&files.server_key, server_key.serialize_pem().as_bytes())?;
    let write_public = |path: &Path, pem: String| {
        std::fs::write(path, pem).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    };
    write_public(&files.server_cert, server_cert.pem())?;
    // The CA certificate is written last: its presence says the set is complete.
    write_public(&dir.join(".ca.pem.tmp"), ca_cert.pem())?;
    std::fs::rename(dir.join(".ca.pem.tmp"), &files.ca_cert)
        .map_err(|e| Error::io(format!("writing {}", files.ca_cert.display()), e))
}

/// A rustls server configuration: TLS 1.3 only, ALPN h2.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("reading {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("reading {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// TLS flags shared by both services. With neither --tls-cert nor --plaintext, a local CA and
/// server certificate are created in <data-dir>/tls/.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsOptions {
    /// Serve without TLS. For debugging only: tokens and metadata travel in the clear.
    #[arg(long, env = "SVS_PLAINTEXT")]
    pub plaintext: bool,
    /// PEM certificate chain to serve instead of the generated one.
    #[arg(long, env = "SVS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SVS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for a generated server certificate (repeatable, or comma-separated).
    #[arg(long = "tls-san", env = "SVS_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
}

/// The server TLS configuration the flags ask for: explicit files, generated ones, or none.
pub fn server_tls(
    data_dir: &Path,
    options: &TlsOptions,
) -> Result<Option<Arc<rustls::ServerConfig>>, Error> {
    if options.plaintext {
        tracing::warn!(
            "serving WITHOUT TLS (--plaintext): tokens and metadata travel in the clear; use only for debugging"
        );
        return Ok(None);
    }
    let (cert, key) = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let names = default_server_names(&options.tls_san);
            let (files, created) = ensure_generated(data_dir, &names)?;
            if created {
                tracing::info!(ca = %files.ca_cert.display(), ?names, "created a local CA and server certificate; clients need --ca {}", files.ca_cert.display());
            } else {
                tracing::info!(ca = %files.ca_cert.display(), "using the local CA");
            }
            (files.server_cert, files.server_key)
        }
    };
    Ok(Some(server_config(&cert, &key)?))
}
