//! TLS material: a local CA (10 years) and server certificate (1 year) created on first start
//! (safely when several services start at once), the server certificate renewed at start when it
//! has under 30 days left, the TLS 1.3-only server configuration, and the client configuration.

use crate::Error;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use svs_common::identity::{create_private_dir, write_secret_file};

/// Lifetime of a generated CA.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Lifetime of a generated server certificate.
pub const SERVER_VALIDITY_DAYS: i64 = 365;
/// A generated server certificate with less than this left is renewed at start.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// Certificates start a day in the past, for clients whose clocks run a little behind.
const BACKDATE_DAYS: i64 = 1;

/// Where certificates and keys live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients trust.
    pub ca_cert: PathBuf,
    /// Kept (0600) so the server certificate can be renewed under the same CA.
    pub ca_key: PathBuf,
    /// The server's certificate chain.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

impl TlsFiles {
    /// The generated layout under `<data_dir>/tls/`.
    pub fn generated(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
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

/// What `ensure_generated` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// The files were there and valid long enough.
    Kept,
    /// A new CA and server certificate (first start, or a CA that could not renew).
    Created,
    /// A new server certificate under the existing CA.
    Renewed,
}

/// Makes sure `<data_dir>/tls/` holds a CA and a server certificate for `names` that is valid for
/// at least `RENEW_BEFORE_DAYS` more, creating or renewing them under an exclusive file lock.
pub fn ensure_generated(data_dir: &Path, names: &[String]) -> Result<(TlsFiles, Generated), Error> {
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
    let now = time::OffsetDateTime::now_utc();
    let renew_by = now + time::Duration::days(RENEW_BEFORE_DAYS);
    if files.ca_cert.exists() && files.server_cert.exists() && files.server_key.exists() {
        let server_ok = not_after(&files.server_cert)? > renew_by;
        if server_ok {
            return Ok((files, Generated::Kept));
        }
        let ca_ok =
            not_after(&files.ca_cert)? > renew_by + time::Duration::days(SERVER_VALIDITY_DAYS);
        if ca_ok && files.ca_key.exists() {
            renew_server(&files, names)?;
            return Ok((files, Generated::Renewed));
        }
        tracing::warn!(ca = %files.ca_cert.display(),
            "the generated CA cannot renew the server certificate (expiring, or made before svs kept its key); creating a new CA: clients need the new ca.pem");
    }
    generate(&dir, &files, names)?;
    Ok((files, Generated::Created))
}

/// When the certificate in a PEM file stops being valid.
pub fn not_after(cert: &Path) -> Result<time::OffsetDateTime, Error> {
    let der = CertificateDer::from_pem_file(cert)
        .map_err(|e| Error::Tls(format!("reading {}: {e}", cert.display())))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::Tls(format!("parsing {}: {e}", cert.display())))?;
    Ok(parsed.validity().not_after.to_datetime())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(BACKDATE_DAYS);
    params.not_after = now + time::Duration::days(days);
}

/// The CA's parameters; the same each time, so a kept CA key can issue again.
fn ca_params() -> CertificateParams {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "svs local CA");
    validity(&mut ca_params, CA_VALIDITY_DAYS);
    ca_params
}

/// A server certificate for `names` signed by `issuer`; writes its key and certificate.
fn issue_server(
    files: &TlsFiles,
    names: &[String],
    issuer: &Issuer<'_, KeyPair>,
    days: i64,
) -> Result<(), Error> {
    let server_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "svs service");
    validity(&mut params, days);
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
    let server_cert = params.signed_by(&server_key, issuer).map_err(rcgen_err)?;
    write_secret_file(&files.server_key, server_key.serialize_pem().as_bytes())?;
    let tmp = files.server_cert.with_extension("pem.tmp");
    std::fs::write(&tmp, server_cert.pem())
        .and_then(|_| std::fs::rename(&tmp, &files.server_cert))
        .map_err(|e| Error::io(format!("writing {}", files.server_cert.display()), e))
}

fn renew_server(files: &TlsFiles, names: &[String]) -> Result<(), Error> {
    let key_pem = std::fs::read_to_string(&files.ca_key)
        .map_err(|e| Error::io(format!("reading {}", files.ca_key.display()), e))?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(rcgen_err)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    issue_server(files, names, &issuer, SERVER_VALIDITY_DAYS)?;
    tracing::info!(cert = %files.server_cert.display(), days = SERVER_VALIDITY_DAYS, "renewed the server certificate under the local CA");
    Ok(())
}

fn rcgen_err(e: rcgen::Error) -> Error {
    Error::Tls(e.to_string())
}

fn generate(dir: &Path, files: &TlsFiles, names: &[String]) -> Result<(), Error> {
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let ca_cert = ca_params().self_signed(&ca_key).map_err(rcgen_err)?;
    write_secret_file(&files.ca_key, ca_key.serialize_pem().as_bytes())?;
    let issuer = Issuer::new(ca_params(), ca_key);
    issue_server(files, names, &issuer, SERVER_VALIDITY_DAYS)?;
    // The CA certificate is written last: its presence says the set is complete.
    let tmp = dir.join(".ca.pem.tmp");
    std::fs::write(&tmp, ca_cert.pem())
        .and_then(|_| std::fs::rename(&tmp, &files.ca_cert))
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
            let (files, generated) = ensure_generated(data_dir, &names)?;
            if generated == Generated::Created {
                tracing::info!(ca = %files.ca_cert.display(), ?names, "created a local CA and server certificate; clients need --ca {}", files.ca_cert.display());
            } else {
                tracing::info!(ca = %files.ca_cert.display(), "using the local CA");
            }
            (files.server_cert, files.server_key)
        }
    };
    Ok(Some(server_config(&cert, &key)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    fn days_left(path: &Path) -> i64 {
        (not_after(path).unwrap() - time::OffsetDateTime::now_utc()).whole_days()
    }

    #[test]
    fn lifetimes_are_bounded_and_an_expiring_server_certificate_is_renewed_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let (files, generated) = ensure_generated(dir.path(), &names).unwrap();
        assert_eq!(generated, Generated::Created);
        assert!((CA_VALIDITY_DAYS - 1..=CA_VALIDITY_DAYS).contains(&days_left(&files.ca_cert)));
        assert!(
            (SERVER_VALIDITY_DAYS - 1..=SERVER_VALIDITY_DAYS)
                .contains(&days_left(&files.server_cert))
        );
        assert_eq!(
            ensure_generated(dir.path(), &names).unwrap().1,
            Generated::Kept
        );

        // A server certificate with 10 days left is renewed; the CA stays.
        let ca_before = std::fs::read(&files.ca_cert).unwrap();
        let key_pem = std::fs::read_to_string(&files.ca_key).unwrap();
        let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&key_pem).unwrap());
        issue_server(&files, &names, &issuer, 10).unwrap();
        assert!(days_left(&files.server_cert) < RENEW_BEFORE_DAYS);
        assert_eq!(
            ensure_generated(dir.path(), &names).unwrap().1,
            Generated::Renewed
        );
        assert!(days_left(&files.server_cert) >= SERVER_VALIDITY_DAYS - 1);
        assert_eq!(std::fs::read(&files.ca_cert).unwrap(), ca_before, "same CA");
        // The renewed certificate chains to that CA: a server config loads and verifies it.
        assert!(server_config(&files.server_cert, &files.server_key).is_ok());
        let renewed = std::fs::read_to_string(&files.server_cert).unwrap();
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_before).unwrap();
        let cert_der =
            rustls::pki_types::CertificateDer::from_pem_slice(renewed.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_server_cert(
                &cert_der,
                &[],
                &"localhost".try_into().unwrap(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("the renewed certificate verifies under the CA clients already trust");
    }
}
