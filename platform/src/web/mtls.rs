//! Mutual TLS (RFC 8705): the client certificate a request came with, for client
//! authentication (`tls_client_auth`, `self_signed_tls_client_auth`) and certificate-bound
//! tokens (`cnf_x5t`).
//!
//! The certificate comes from one of two places, never both:
//! - this server's own TLS connection (`server.tls_cert_file`): [`server_config`] asks every
//!   client for a certificate without requiring one, and accepts any certificate whose private
//!   key the client proves in the handshake. What the certificate is worth is decided per use,
//!   not in the handshake: a self-signed certificate is worth exactly what a client registered
//!   (its thumbprint), and a certificate that chains to `server.client_ca_file` can
//!   authenticate a `tls_client_auth` client by subject DN. [`on_connect`] reads it once per
//!   connection.
//! - a trusted proxy's header (`server.client_cert_header`), only when the TCP peer is one of
//!   `server.trusted_proxies`; from any other peer the header is ignored. From a trusted proxy
//!   the header is the whole truth: the proxy's own TLS certificate is not the client's.

use std::any::Any;
use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use actix_web::http::header::HeaderMap;
use actix_web::web;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

use crate::Platform;

/// Certificates larger than this are not looked at (a client certificate is 1-2 KB).
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Intermediates read from a proxy's chain header.
const MAX_CHAIN: usize = 4;

/// The client certificate of a request, as far as this server could judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// RFC 8705 `x5t#S256`: base64url SHA-256 of the DER encoding.
    pub thumbprint: String,
    /// The subject DN (RFC 4514 string).
    pub subject_dn: Option<String>,
    /// The certificate chains to `server.client_ca_file`, is valid now and allowed for client
    /// authentication: only then does its subject DN authenticate a `tls_client_auth` client.
    pub chain_trusted: bool,
}

/// The base64url SHA-256 of a certificate's DER encoding (RFC 8705 `x5t#S256`).
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// The RFC 4514 string of a certificate's subject.
fn subject_dn(der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

/// A subject DN as `tls_client_auth_subject_dn` is compared: parsed as RFC 4514 and written back
/// (one spelling of each attribute type, escapes normalised). Attribute types may be written in
/// any case and separators may be followed by spaces (`cn=app, o=Fintech Ltd`), as tools print
/// them. `Err` when it is not a DN.
pub fn canonical_dn(dn: &str) -> Result<String, String> {
    use std::str::FromStr;
    if dn.trim().is_empty() || dn.len() > 1024 {
        return Err("must be a distinguished name of at most 1024 characters".into());
    }
    // Split at separators that are not escaped; trim each attribute; upper-case its type.
    let mut parts = Vec::new();
    let (mut current, mut escaped) = (String::new(), false);
    for c in dn.chars() {
        match c {
            ',' | '+' if !escaped => {
                parts.push((std::mem::take(&mut current), c));
            }
            _ => {
                escaped = c == '\\' && !escaped;
                current.push(c);
            }
        }
    }
    parts.push((current, ','));
    let mut tidy = String::with_capacity(dn.len());
    for (i, (part, separator)) in parts.iter().enumerate() {
        let part = part.trim_start();
        // A trailing space is part of the value only when escaped.
        let part = match part.strip_suffix(' ') {
            Some(_) if !part.ends_with("\\ ") => part.trim_end(),
            _ => part,
        };
        let (kind, value) = part
            .split_once('=')
            .ok_or("every attribute needs a type and a value")?;
        tidy.push_str(&kind.trim().to_ascii_uppercase());
        tidy.push('=');
        tidy.push_str(value.trim_start());
        if i + 1 < parts.len() {
            tidy.push(*separator);
        }
    }
    let parsed = x509_cert::name::RdnSequence::from_str(&tidy)
        .map_err(|_| "is not an RFC 4514 distinguished name (such as CN=app,O=Fintech Ltd,C=GB)")?;
    Ok(parsed.to_string())
}

/// Whether a certificate's subject is the registered DN (both canonical, case-insensitive).
pub fn subject_matches(presented: &str, registered: &str) -> bool {
    match (canonical_dn(presented), canonical_dn(registered)) {
        (Ok(a), Ok(b)) => a.eq_ignore_ascii_case(&b),
        _ => false,
    }
}

/// The thumbprints of the certificates a `self_signed_tls_client_auth` client registered: the
/// first `x5c` entry of each key of its JWK Set (RFC 8705 section 2.2). `Err` names what is
/// wrong with the set.
pub fn registered_certificates(jwks: &serde_json::Value) -> Result<Vec<String>, String> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("must be a JWK Set: {\"keys\": [...]}")?;
    if keys.is_empty() || keys.len() > 10 {
        return Err("must hold 1 to 10 keys".into());
    }
    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
            .iter()
            .any(|m| key.get(*m).is_some())
        {
            return Err(format!("key {i} holds private or symmetric key material"));
        }
        let first = key
            .get("x5c")
            .and_then(|c| c.as_array())
            .and_then(|c| c.first())
            .and_then(|c| c.as_str())
            .ok_or_else(|| format!("key {i} has no x5c certificate"))?;
        if first.len() > MAX_CERT_LEN.div_ceil(3) * 4 {
            return Err(format!("key {i}: the certificate is too large"));
        }
        let der = STANDARD
            .decode(first)
            .map_err(|_| format!("key {i}: x5c must be standard base64 of a DER certificate"))?;
        if der.len() > MAX_CERT_LEN {
            return Err(format!("key {i}: the certificate is too large"));
        }
        x509_cert::Certificate::from_der(&der)
            .map_err(|_| format!("key {i}: x5c[0] is not an X.509 certificate"))?;
        out.push(thumbprint(&der));
    }
    Ok(out)
}

/// The authorities `tls_client_auth` certificates must chain to (`server.client_ca_file`).
#[derive(Clone, Default)]
pub struct CertificateTrust {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for CertificateTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateTrust")
            .field("authorities", &self.verifier.is_some())
            .finish()
    }
}

/// TLS could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertificateTrust {
    /// From the PEM file of `server.client_ca_file`; no file: no authority (nothing chains).
    pub fn load(ca_file: Option<&std::path::Path>) -> Result<Self, TlsError> {
        let Some(path) = ca_file else {
            return Ok(Self::default());
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
        }
        Self::from_roots(roots)
    }

    /// From authorities already parsed.
    pub fn from_roots(roots: RootCertStore) -> Result<Self, TlsError> {
        if roots.is_empty() {
            return Err(TlsError("the client CA file holds no certificate".into()));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError(e.to_string()))?;
        Ok(Self {
            verifier: Some(verifier),
        })
    }

    /// Judges a presented chain (end entity first); `None` when the end entity is not an X.509
    /// certificate.
    pub fn judge(&self, chain: &[CertificateDer<'_>]) -> Option<ClientCertificate> {
        let (end_entity, intermediates) = chain.split_first()?;
        if end_entity.len() > MAX_CERT_LEN {
            return None;
        }
        // A chain longer than a real one only buys an attacker signature checks.
        let intermediates = &intermediates[..intermediates.len().min(MAX_CHAIN)];
        let subject_dn = Some(subject_dn(end_entity)?);
        let chain_trusted = self.verifier.as_ref().is_some_and(|v| {
            v.verify_client_cert(end_entity, intermediates, UnixTime::now())
                .is_ok()
        });
        Some(ClientCertificate {
            thumbprint: thumbprint(end_entity),
            subject_dn,
            chain_trusted,
        })
    }
}

/// Accepts any client certificate whose key the client proves in the handshake, and none at all:
/// what a certificate is worth is decided where it is used (see the module documentation).
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a self-signed certificate is as welcome as one from an authority.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS configuration of `serve` (`server.tls_cert_file`, `server.tls_key_file`): TLS 1.2
/// and 1.3 with rustls' safe defaults, the ring provider, client certificates asked for.
pub fn server_config(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<rustls::ServerConfig, TlsError> {
    let read =
        |e: &dyn std::fmt::Display, p: &std::path::Path| TlsError(format!("{}: {e}", p.display()));
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| read(&e, cert_file))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(&e, cert_file))?;
    if certs.is_empty() {
        return Err(read(&"no certificate", cert_file));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| read(&e, key_file))?;
    let provider = provider();
    rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(e.to_string()))
}

/// For `HttpServer::on_connect`: keeps the client certificate of a TLS connection, judged once,
/// in the connection's data (read by [`presented_certificate`]).
pub fn on_connect(trust: CertificateTrust) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync {
    move |conn: &dyn Any, data: &mut Extensions| {
        type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
        let Some(tls) = conn.downcast_ref::<Tls>() else {
            return;
        };
        let (_, session) = tls.get_ref();
        if let Some(cert) = session.peer_certificates().and_then(|c| trust.judge(c)) {
            data.insert(cert);
        }
    }
}

/// Where a request's certificate is to be read (see the module documentation).
enum Source<'a> {
    /// A trusted proxy's header, with the authorities to judge it by.
    Header(&'a str, &'a CertificateTrust),
    /// This server's own TLS connection.
    Connection,
}

fn source(req: &HttpRequest) -> Option<Source<'_>> {
    let platform = req.app_data::<web::Data<Platform>>()?;
    let server = &platform.settings.server;
    if let Some(header) = &server.client_cert_header {
        let peer = req.peer_addr().map(|a| a.ip());
        if peer.is_some_and(|ip| server.trusted_proxies.contains(ip)) {
            return Some(Source::Header(header, &platform.certificate_trust));
        }
    }
    Some(Source::Connection)
}

/// The client certificate `req` came with (see the module documentation), judged, or `None`.
pub fn presented_certificate(req: &HttpRequest) -> Option<ClientCertificate> {
    match source(req)? {
        Source::Header(name, trust) => from_header(req.headers(), name, trust),
        Source::Connection => req.conn_data::<ClientCertificate>().cloned(),
    }
}

/// Only the thumbprint of the certificate `req` came with, for checking a token's `cnf_x5t`:
/// behind a proxy, no chain is verified and nothing is parsed for it (a resource request pays
/// one base64 decode and one SHA-256; a certificate-bound token was only ever minted for a
/// certificate that authenticated its client).
pub fn presented_thumbprint(req: &HttpRequest) -> Option<String> {
    match source(req)? {
        Source::Header(name, _) => {
            let value = req.headers().get(name)?.to_str().ok()?.trim();
            (value.len() <= MAX_CERT_LEN * 3)
                .then(|| decode_one(value))
                .flatten()
                .map(|der| thumbprint(&der))
        }
        Source::Connection => req
            .conn_data::<ClientCertificate>()
            .map(|c| c.thumbprint.clone()),
    }
}

/// A proxy's certificate header: RFC 9440 (`:<base64>:`, chain in `Client-Cert-Chain`) or a
/// URL-encoded PEM (nginx `$ssl_client_escaped_cert`). Anything unreadable is no certificate.
pub fn from_header(
    headers: &HeaderMap,
    name: &str,
    trust: &CertificateTrust,
) -> Option<ClientCertificate> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    if value.is_empty() || value.len() > MAX_CERT_LEN * 3 {
        return None;
    }
    let mut chain = vec![decode_one(value)?];
    let parts = headers
        .get_all("client-cert-chain")
        .filter_map(|item| item.to_str().ok())
        .flat_map(|item| item.split(','))
        .take(MAX_CHAIN);
    for part in parts {
        chain.push(decode_one(part.trim())?);
    }
    trust.judge(&chain)
}

fn decode_one(value: &str) -> Option<CertificateDer<'static>> {
    let der = match value.strip_prefix(':').and_then(|v| v.strip_suffix(':')) {
        Some(b64) => STANDARD.decode(b64).ok()?,
        None => {
            let pem = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .ok()?;
            CertificateDer::from_pem_slice(pem.as_bytes())
                .ok()?
                .to_vec()
        }
    };
    (der.len() <= MAX_CERT_LEN).then(|| CertificateDer::from(der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName as Dn, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };

    type Ca = rcgen::CertifiedIssuer<'static, KeyPair>;

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = Dn::new();
        params.distinguished_name.push(DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn client_params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        // ASN.1 order O, CN: written (RFC 4514, reversed) as `CN=...,O=...`.
        params.distinguished_name = Dn::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Fintech, Ltd");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    fn trust_of(ca: &Ca) -> CertificateTrust {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        CertificateTrust::from_roots(roots).unwrap()
    }

    /// The bank's client CA, the trust it makes, and a key with its certificate for `app1`
    /// (`CN=app1,O=Fintech\, Ltd`) issued by that CA.
    struct Issued {
        bank_ca: Ca,
        trust: CertificateTrust,
        key: KeyPair,
        cert: rcgen::Certificate,
    }

    fn issued_by_bank_ca() -> Issued {
        let bank_ca = ca("Bank client CA");
        let trust = trust_of(&bank_ca);
        let key = KeyPair::generate().unwrap();
        let cert = client_params("app1").signed_by(&key, &bank_ca).unwrap();
        Issued {
            bank_ca,
            trust,
            key,
            cert,
        }
    }

    #[test]
    fn a_certificate_from_the_authority_is_trusted_and_names_its_subject() {
        let Issued {
            bank_ca,
            trust,
            key,
            cert,
        } = issued_by_bank_ca();
        let judged = trust.judge(&[cert.der().clone()]).unwrap();
        assert!(judged.chain_trusted);
        assert_eq!(judged.thumbprint, thumbprint(cert.der()));
        let dn = judged.subject_dn.unwrap();
        assert!(subject_matches(&dn, "CN=app1,O=Fintech\\, Ltd"), "{dn}");
        assert!(subject_matches(&dn, "cn=app1, o=Fintech\\, Ltd"), "{dn}");
        assert!(!subject_matches(&dn, "CN=app2,O=Fintech\\, Ltd"));
        assert!(!subject_matches(&dn, "CN=app1"));
        // RDN order is part of the name (RFC 4517 distinguishedNameMatch).
        assert!(!subject_matches(&dn, "O=Fintech\\, Ltd,CN=app1"));

        // Another authority's certificate with the same subject is not trusted; nor is a
        // self-signed one; nor anything without an authority configured.
        let other = ca("Someone else");
        let forged = client_params("app1").signed_by(&key, &other).unwrap();
        assert!(!trust.judge(&[forged.der().clone()]).unwrap().chain_trusted);
        let own = client_params("app1").self_signed(&key).unwrap();
        assert!(!trust.judge(&[own.der().clone()]).unwrap().chain_trusted);
        let none = CertificateTrust::default();
        assert!(!none.judge(&[cert.der().clone()]).unwrap().chain_trusted);
        // A certificate for servers only (no clientAuth usage) is not a client certificate.
        let mut server_only = client_params("app1");
        server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_only = server_only.signed_by(&key, &bank_ca).unwrap();
        assert!(
            !trust
                .judge(&[server_only.der().clone()])
                .unwrap()
                .chain_trusted
        );
    }

    #[test]
    fn proxy_headers_are_read_in_both_forms_and_garbage_is_no_certificate() {
        let Issued { trust, cert, .. } = issued_by_bank_ca();
        let name = "client-cert";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static("client-cert"),
                HeaderValue::from_str(v).unwrap(),
            );
            h
        };
        let rfc9440 = format!(":{}:", STANDARD.encode(cert.der()));
        let judged = from_header(&with(&rfc9440), name, &trust).unwrap();
        assert!(judged.chain_trusted);
        assert_eq!(judged.thumbprint, thumbprint(cert.der()));
        let escaped: String =
            percent_encoding::utf8_percent_encode(&cert.pem(), percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(from_header(&with(&escaped), name, &trust), Some(judged));
        for garbage in [":not base64!:", "::", "%2D%2D%2D", "hello", ":AAAA:"] {
            assert_eq!(from_header(&with(garbage), name, &trust), None, "{garbage}");
        }
        assert_eq!(from_header(&HeaderMap::new(), name, &trust), None);
    }

    #[test]
    fn subject_dns_are_checked_when_registered() {
        assert!(canonical_dn("CN=app,O=Fintech Ltd,C=GB").is_ok());
        for bad in ["", "   ", "not a dn", "CN", "=x"] {
            assert!(canonical_dn(bad).is_err(), "{bad:?}");
        }
        assert!(canonical_dn(&"CN=a,".repeat(300)).is_err());
    }

    #[test]
    fn registered_certificates_come_from_x5c() {
        let key = KeyPair::generate().unwrap();
        let cert = client_params("app1").self_signed(&key).unwrap();
        let jwks =
            serde_json::json!({"keys": [{"kty": "EC", "x5c": [STANDARD.encode(cert.der())]}]});
        assert_eq!(
            registered_certificates(&jwks).unwrap(),
            vec![thumbprint(cert.der())]
        );
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"keys": []}),
            serde_json::json!({"keys": [{"kty": "EC"}]}),
            serde_json::json!({"keys": [{"x5c": ["%%%"]}]}),
            serde_json::json!({"keys": [{"x5c": ["AAAA"]}]}),
            serde_json::json!({"keys": [{"x5c": [STANDARD.encode(cert.der())], "d": "AAAA"}]}),
        ] {
            assert!(registered_certificates(&bad).is_err(), "{bad}");
        }
    }
}
