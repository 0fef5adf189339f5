//! TLS to PostgreSQL, chosen by the connection string's `sslmode` as libpq reads it:
//! `disable`, `prefer` (the default) and `allow` connect in cleartext; `require` encrypts
//! (checking the server's certificate against `sslrootcert` when one is given, as libpq
//! does); `verify-ca` checks the chain against `sslrootcert`; `verify-full` checks the chain
//! and that the certificate names the host. tokio-postgres parses neither `verify-*` nor
//! `sslrootcert`, so they are taken out of the string here and applied with rustls.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cleartext,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A connection string without the TLS parameters tokio-postgres cannot read, and the
/// connector those parameters ask for.
pub struct PgTls {
    pub url: String,
    pub ssl_mode: SslMode,
    pub connector: MakeRustlsConnect,
}

fn mode_of(value: &str) -> Result<Mode, StoreError> {
    match value {
        "disable" | "allow" | "prefer" => Ok(Mode::Cleartext),
        "require" => Ok(Mode::Require),
        "verify-ca" => Ok(Mode::VerifyCa),
        "verify-full" => Ok(Mode::VerifyFull),
        other => Err(StoreError::Unavailable(format!(
            "invalid sslmode \"{other}\" in the database URL: use disable, prefer, require, verify-ca or verify-full"
        ))),
    }
}

/// Take `sslmode` and `sslrootcert` out of a URL (`postgres://…?sslmode=…`) or a
/// `key=value` connection string.
fn split_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_string());
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None, None) };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, &percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return (rest, mode, root);
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            !take(k, v.trim_matches('\''))
        })
        .collect();
    (kept.join(" "), mode, root)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(path: &str) -> Result<rustls::RootCertStore, StoreError> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::Unavailable(format!("read sslrootcert {path}: {e}")))?;
    for cert in certs {
        store.add(cert).map_err(|e| StoreError::Unavailable(format!("sslrootcert {path}: {e}")))?;
    }
    if store.is_empty() {
        return Err(StoreError::Unavailable(format!("sslrootcert {path} holds no certificate")));
    }
    Ok(store)
}

/// The connector and mode a connection string asks for.
pub fn from_url(url: &str) -> Result<PgTls, StoreError> {
    let (rest, mode, root) = split_params(url);
    let mode = mode.as_deref().map(mode_of).transpose()?.unwrap_or(Mode::Cleartext);
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS: {e}")))?;
    let config = match (mode, &root) {
        (Mode::Cleartext, _) | (Mode::Require, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient { chain: None }))
            .with_no_client_auth(),
        (Mode::VerifyFull, Some(root)) => builder.with_root_certificates(roots(root)?).with_no_client_auth(),
        (Mode::VerifyCa | Mode::Require, Some(root)) => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root)?), provider())
                .build()
                .map_err(|e| StoreError::Unavailable(format!("TLS: {e}")))?;
            let lenient = Lenient { chain: Some(inner) };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(lenient)).with_no_client_auth()
        }
        (Mode::VerifyCa | Mode::VerifyFull, None) => {
            return Err(StoreError::Unavailable(
                "sslmode=verify-ca and verify-full need sslrootcert=PATH (the CA that signed the server's certificate)"
                    .into(),
            ));
        }
    };
    let ssl_mode = if mode == Mode::Cleartext { SslMode::Disable } else { SslMode::Require };
    Ok(PgTls { url: rest, ssl_mode, connector: MakeRustlsConnect::new(config) })
}

/// The lenient checks libpq's modes ask for: `chain: None` (`require` without a root)
/// accepts any certificate, encrypting without authenticating; `Some` (`verify-ca`, or
/// `require` with a root) checks the chain but not the name. Signatures are always checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_both_forms() {
        let (rest, mode, root) =
            split_params("postgres://u@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = split_params("host=h user=u sslmode=require sslrootcert='/ca.pem'");
        assert_eq!(rest, "host=h user=u");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert_eq!(split_params("postgres://u@h/db").0, "postgres://u@h/db");
        assert_eq!(split_params("postgres://u@h/db?sslmode=disable").0, "postgres://u@h/db");
    }

    #[test]
    fn modes_are_checked() {
        assert!(
            from_url("postgres://u@h/db?sslmode=verify-full").is_err_and(|e| e.to_string().contains("sslrootcert"))
        );
        assert!(from_url("postgres://u@h/db?sslmode=bogus").is_err_and(|e| e.to_string().contains("verify-full")));
        assert_eq!(from_url("postgres://u@h/db").unwrap().ssl_mode, SslMode::Disable);
        assert_eq!(from_url("postgres://u@h/db?sslmode=require").unwrap().ssl_mode, SslMode::Require);
    }
}
