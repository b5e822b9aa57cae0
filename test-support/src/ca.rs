//! A private certificate authority made at test time (nothing committed), and the
//! server certificates it signs, for the TLS tests of the API, PostgreSQL and NATS.

/// A CA certificate and its key.
pub struct TestCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate and its key, as PEM, and the certificate's DER.
#[derive(Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate: String,
    /// Its private key, PEM (PKCS#8).
    pub key: String,
    /// The certificate, DER (what a TLS peer is served).
    pub der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA, `CN=ledger test CA`.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ledger test CA");
        let certificate = params.self_signed(&key).expect("CA certificate");
        TestCa { certificate, key }
    }

    /// The CA's certificate, PEM (what a client's CA file holds).
    pub fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// The CA's certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.certificate.der().to_vec()
    }

    /// A server certificate for `hosts` (names or IP addresses) named `name`, valid from
    /// 1 January of `not_before` to 1 January of `not_after`.
    pub fn issue_for(&self, hosts: &[&str], name: &str, not_before: i32, not_after: i32) -> Issued {
        let key = rcgen::KeyPair::generate().expect("server key");
        let hosts = hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(hosts).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(not_before, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("server certificate");
        Issued {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
            der: certificate.der().to_vec(),
        }
    }

    /// [`TestCa::issue_for`] localhost and 127.0.0.1.
    pub fn issue(&self, name: &str, not_before: i32, not_after: i32) -> Issued {
        self.issue_for(&["localhost", "127.0.0.1"], name, not_before, not_after)
    }

    /// A certificate for localhost and 127.0.0.1, valid now.
    pub fn current(&self, name: &str) -> Issued {
        self.issue(name, 2020, 2200)
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
