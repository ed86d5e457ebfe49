//! A throwaway certificate authority with one server and one client certificate, for TLS servers.
//!
//! The certificates are for tests on loopback only: the keys sit unencrypted in the server's
//! temporary directory and the certificates never expire in practice.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::TestkitError;

/// The PEM files of a TLS server: its CA, its own certificate and a client certificate it accepts.
///
/// The server requires TLS and verifies client certificates against `ca_cert`,
/// so a client connects with `ca_cert` as its root and `client_cert`/`client_key` as its identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The self-signed certificate authority that signed both other certificates.
    pub ca_cert: PathBuf,
    /// The client certificate, signed by the CA, for client authentication.
    pub client_cert: PathBuf,
    /// The client certificate's private key (PKCS#8).
    pub client_key: PathBuf,
    /// The server certificate, valid for `127.0.0.1` and `localhost`.
    pub server_cert: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub server_key: PathBuf,
}

/// Generates a CA, a server and a client certificate and writes them as PEM files into `dir`.
pub(crate) fn generate(dir: &Path) -> Result<TlsFiles, TestkitError> {
    let ca_key = KeyPair::generate().map_err(cert_error("ca"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error("ca"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "celerity-testkit ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error("ca"))?;
    let ca = Issuer::new(ca_params, ca_key);

    let server = Leaf {
        which: "server",
        common_name: "celerity-testkit server",
        subject_alt_names: &["127.0.0.1", "localhost"],
        usage: ExtendedKeyUsagePurpose::ServerAuth,
    }
    .sign(&ca)?;
    let client = Leaf {
        which: "client",
        common_name: "celerity-testkit client",
        subject_alt_names: &[],
        usage: ExtendedKeyUsagePurpose::ClientAuth,
    }
    .sign(&ca)?;

    let files = TlsFiles {
        ca_cert: dir.join("ca-cert.pem"),
        client_cert: dir.join("client-cert.pem"),
        client_key: dir.join("client-key.pem"),
        server_cert: dir.join("server-cert.pem"),
        server_key: dir.join("server-key.pem"),
    };
    write_pem(&files.ca_cert, &ca_cert.pem())?;
    write_pem(&files.server_cert, &server.0.pem())?;
    write_pem(&files.server_key, &server.1.serialize_pem())?;
    write_pem(&files.client_cert, &client.0.pem())?;
    write_pem(&files.client_key, &client.1.serialize_pem())?;
    Ok(files)
}

/// The parts that differ between the server and the client certificate.
struct Leaf<'a> {
    which: &'static str,
    common_name: &'a str,
    subject_alt_names: &'a [&'a str],
    usage: ExtendedKeyUsagePurpose,
}

impl Leaf<'_> {
    fn sign(self, ca: &Issuer<'_, KeyPair>) -> Result<(Certificate, KeyPair), TestkitError> {
        let key = KeyPair::generate().map_err(cert_error(self.which))?;
        let names: Vec<String> = self
            .subject_alt_names
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let mut params = CertificateParams::new(names).map_err(cert_error(self.which))?;
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![self.usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, ca).map_err(cert_error(self.which))?;
        Ok((cert, key))
    }
}

fn cert_error(which: &'static str) -> impl FnOnce(rcgen::Error) -> TestkitError {
    move |source| TestkitError::Cert { which, source }
}

fn write_pem(path: &Path, pem: &str) -> Result<(), TestkitError> {
    std::fs::write(path, pem).map_err(TestkitError::io(format!(
        "write certificate file {}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_all_five_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        for (path, marker) in [
            (&files.ca_cert, "BEGIN CERTIFICATE"),
            (&files.server_cert, "BEGIN CERTIFICATE"),
            (&files.client_cert, "BEGIN CERTIFICATE"),
            (&files.server_key, "PRIVATE KEY"),
            (&files.client_key, "PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.contains(marker), "{}: {text}", path.display());
        }
    }
}
