//! The certificates a TLS listener serves: read from PEM files and checked
//! at load (the key matches, the certificate is in its validity period), and
//! chosen per handshake by the name the client asks for (SNI).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::tls::CertificateFiles;

/// A certificate expiring sooner than this gets a warning at load.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// One listener's certificates; the first serves clients whose name none
/// of them has.
#[derive(Debug)]
pub struct CertificateSet {
    certificates: Vec<Certificate>,
}

/// One loaded certificate chain with its key.
#[derive(Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names it is valid for, lowercase; `*.example.com` for wildcards.
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// The certificates loaded, with warnings by index; or each pair's problem
/// by index.
pub type Loaded = Result<(CertificateSet, Vec<(usize, String)>), Vec<(usize, LoadError)>>;

/// A file that could not be used: the field (`cert` or `key`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub field: &'static str,
    pub message: String,
}

impl CertificateSet {
    /// Loads every pair of `files` (relative to `base`); problems come back
    /// by index, with the field at fault. Warnings say which certificates
    /// expire within `EXPIRY_WARNING`.
    pub fn load(files: &[CertificateFiles], base: &Path, now: SystemTime) -> Loaded {
        let mut certificates = Vec::new();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for (i, pair) in files.iter().enumerate() {
            match Certificate::load(pair, base, now) {
                Ok((certificate, warning)) => {
                    warnings.extend(warning.map(|w| (i, w)));
                    certificates.push(certificate);
                }
                Err(error) => problems.push((i, error)),
            }
        }
        if problems.is_empty() {
            Ok((Self { certificates }, warnings))
        } else {
            Err(problems)
        }
    }

    /// The certificate for a client that asked for `name` (SNI) and can
    /// check `schemes`: one with the exact name, then one whose wildcard
    /// matches, then the first of all; at each step only those whose key
    /// the client can check (an RSA and an ECDSA one for one name, say).
    /// If none of those can be checked, the first that has the name, or
    /// the first of all: the handshake then fails with the client's reason.
    pub fn choose(
        &self,
        name: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let name = name.map(normalise);
        let exact = |c: &Certificate| name.as_ref().is_some_and(|n| c.names.contains(n));
        let wildcard = |c: &Certificate| {
            name.as_ref()
                .is_some_and(|n| c.names.iter().any(|p| wildcard_matches(p, n)))
        };
        let usable = |c: &Certificate| c.key.key.choose_scheme(schemes).is_some();
        let all = &self.certificates;
        all.iter()
            .find(|c| exact(c) && usable(c))
            .or_else(|| all.iter().find(|c| wildcard(c) && usable(c)))
            .or_else(|| all.iter().find(|c| usable(c)))
            .or_else(|| all.iter().find(|c| exact(c) || wildcard(c)))
            .or_else(|| all.first())
            .map(|c| c.key.clone())
    }

    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }
}

impl Certificate {
    fn load(
        files: &CertificateFiles,
        base: &Path,
        now: SystemTime,
    ) -> Result<(Self, Option<String>), LoadError> {
        let cert_path = base.join(&files.cert);
        let certified = read_pair(&cert_path, &base.join(&files.key))?;
        let cert_error = |message: String| LoadError {
            field: "cert",
            message,
        };
        let leaf = Leaf::parse(&certified.cert[0])
            .map_err(|e| cert_error(format!("{}: {e}", cert_path.display())))?;
        let now = unix_seconds(now);
        if now > leaf.not_after {
            return Err(cert_error(format!(
                "{} expired on {}",
                cert_path.display(),
                leaf.not_after_text
            )));
        }
        if now < leaf.not_before {
            return Err(cert_error(format!(
                "{} is not valid before {}",
                cert_path.display(),
                leaf.not_before_text
            )));
        }
        let warning = (leaf.not_after - now < EXPIRY_WARNING.as_secs() as i64).then(|| {
            format!(
                "{} expires on {} (in {} days); renew it",
                cert_path.display(),
                leaf.not_after_text,
                (leaf.not_after - now) / 86_400
            )
        });
        Ok((
            Self {
                key: Arc::new(certified),
                names: leaf.names,
                not_after: leaf.not_after,
            },
            warning,
        ))
    }
}

/// Why rustls refused a certificate, in the words an operator acts on.
fn unusable_certificate(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))
            if format!("{other:?}").contains("UnsupportedCertVersion") =>
        {
            "an X.509 v1 certificate; TLS needs v3 (with openssl, sign it with an -extfile giving subjectAltName)".into()
        }
        other => format!("not a usable certificate ({other})"),
    }
}

/// What is wrong with a PEM file, without the bytes of its markers.
fn pem_problem(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { .. } => "a PEM block has no END line (a cut-off file?)".into(),
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        other => other.to_string(),
    }
}

/// A certificate chain and its private key, read from PEM files, the key
/// checked to belong to the certificate (a listener's, or the client
/// certificate the gateway shows upstreams).
pub fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, LoadError> {
    let cert_error = |message: String| LoadError {
        field: "cert",
        message,
    };
    let key_error = |message: String| LoadError {
        field: "key",
        message,
    };
    let chain = read_chain(cert_path).map_err(cert_error)?;
    let key = read_key(key_path).map_err(key_error)?;
    let key = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(format!("{}: {e}", key_path.display())))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(key_error(format!(
                "the key in {} does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            )))
        }
        // The certificate itself could not be read as TLS needs it.
        Err(error) => Err(cert_error(format!(
            "{}: {}",
            cert_path.display(),
            unusable_certificate(&error)
        ))),
    }
}

/// A PEM certificate chain, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{}: not a PEM certificate file: {}",
                path.display(),
                pem_problem(&e)
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no `BEGIN CERTIFICATE` block",
            path.display()
        ));
    }
    Ok(chain)
}

/// A PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no `BEGIN ... PRIVATE KEY` block", path.display())
        }
        e => format!(
            "{}: not a PEM private key: {}",
            path.display(),
            pem_problem(&e)
        ),
    })
}

/// Certificate and key files are small; a bound keeps a wrong path (a
/// log file, a device) from being read whole.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    Ok(bytes)
}

/// What the gateway reads of a certificate itself.
struct Leaf {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    not_before_text: String,
    not_after_text: String,
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not a readable X.509 certificate ({e})"))?;
        let mut names: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some(normalise(dns)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            // Old certificates name their host only in the subject's CN.
            names.extend(
                cert.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(normalise),
            );
        }
        let validity = cert.validity();
        Ok(Self {
            names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_before_text: validity.not_before.to_string(),
            not_after_text: validity.not_after.to_string(),
        })
    }
}

/// Names compare without case and without a final dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `*.example.com` matches one label in front of `example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    name.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// The file paths a listener's certificates are read from, for watching.
pub fn files(pairs: &[CertificateFiles], base: &Path) -> Vec<PathBuf> {
    pairs
        .iter()
        .flat_map(|p| [base.join(&p.cert), base.join(&p.key)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, valid from `days_from` to
    /// `days_to` days from now, written to `dir` as NAME.pem and NAME.key.
    fn issue(dir: &Path, file: &str, names: &[&str], days: (i64, i64)) -> CertificateFiles {
        issue_with(dir, file, names, days, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn issue_with(
        dir: &Path,
        file: &str,
        names: &[&str],
        days: (i64, i64),
        algorithm: &'static rcgen::SignatureAlgorithm,
    ) -> CertificateFiles {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let shift = |days: i64| {
            let at = unix_seconds(SystemTime::now()) + days * 86_400;
            epoch + std::time::Duration::from_secs(at as u64)
        };
        params.not_before = shift(days.0);
        params.not_after = shift(days.1);
        let key = rcgen::KeyPair::generate_for(algorithm).expect("key");
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("write");
        CertificateFiles {
            cert: format!("{file}.pem").into(),
            key: format!("{file}.key").into(),
        }
    }

    const SCHEMES: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];

    /// The names of the certificate a client asking for `sni` gets.
    fn names_of(set: &CertificateSet, sni: Option<&str>) -> Vec<String> {
        names_checked_with(set, sni, SCHEMES)
    }

    /// The same, for a client that can check `schemes`.
    fn names_checked_with(
        set: &CertificateSet,
        sni: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Vec<String> {
        let chosen = set.choose(sni, schemes).expect("a certificate");
        let found = set
            .certificates()
            .iter()
            .find(|c| Arc::ptr_eq(&c.key, &chosen))
            .expect("one of the set");
        found.names.clone()
    }

    #[test]
    fn the_name_asked_for_chooses_the_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let files = [
            issue(dir.path(), "default", &["default.test"], (-1, 90)),
            issue(dir.path(), "api", &["api.example.com"], (-1, 90)),
            issue(dir.path(), "wild", &["*.example.com"], (-1, 90)),
        ];
        let (set, warnings) =
            CertificateSet::load(&files, dir.path(), SystemTime::now()).expect("loads");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            names_of(&set, Some("API.example.com.")),
            ["api.example.com"]
        );
        assert_eq!(names_of(&set, Some("www.example.com")), ["*.example.com"]);
        assert_eq!(names_of(&set, Some("a.b.example.com")), ["default.test"]);
        assert_eq!(names_of(&set, Some("unknown.test")), ["default.test"]);
        assert_eq!(names_of(&set, None), ["default.test"]);
    }

    #[test]
    fn a_certificate_the_client_cannot_check_gives_way_to_one_it_can() {
        let dir = tempfile::tempdir().expect("dir");
        let files = [
            issue(dir.path(), "default", &["default.test"], (-1, 90)),
            issue(dir.path(), "api", &["api.example.com"], (-1, 90)),
            issue_with(
                dir.path(),
                "wild",
                &["*.example.com"],
                (-1, 90),
                &rcgen::PKCS_ED25519,
            ),
        ];
        let (set, _) = CertificateSet::load(&files, dir.path(), SystemTime::now()).expect("loads");
        let chosen = |schemes| names_checked_with(&set, Some("api.example.com"), schemes);
        assert_eq!(chosen(SCHEMES), ["api.example.com"]);
        assert_eq!(chosen(&[SignatureScheme::ED25519]), ["*.example.com"]);
        // Nothing it can check: the named one, and the handshake fails.
        assert_eq!(
            chosen(&[SignatureScheme::RSA_PSS_SHA256]),
            ["api.example.com"]
        );
    }

    #[test]
    fn unusable_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let good = issue(dir.path(), "good", &["a.test"], (-1, 90));
        let other = issue(dir.path(), "other", &["b.test"], (-1, 90));
        let expired = issue(dir.path(), "old", &["a.test"], (-90, -1));
        let future = issue(dir.path(), "future", &["a.test"], (2, 90));
        let soon = issue(dir.path(), "soon", &["a.test"], (-1, 5));
        std::fs::write(dir.path().join("junk.pem"), "not pem").expect("write");
        let load = |cert: &str, key: &str| {
            let pair = CertificateFiles {
                cert: cert.into(),
                key: key.into(),
            };
            CertificateSet::load(&[pair], dir.path(), SystemTime::now())
        };
        let error = |cert: &str, key: &str| match load(cert, key) {
            Err(problems) => problems[0].1.clone(),
            Ok(_) => panic!("{cert} with {key} loaded"),
        };
        let missing = error("missing.pem", "good.key");
        assert_eq!(missing.field, "cert");
        assert!(missing.message.contains("cannot read"), "{missing:?}");
        let mismatch = error("good.pem", other.key.to_str().expect("utf-8"));
        assert_eq!(mismatch.field, "key");
        assert!(mismatch.message.contains("does not match"), "{mismatch:?}");
        let old = error("old.pem", "old.key");
        assert!(old.message.contains("expired on"), "{old:?}");
        assert!(
            error("future.pem", "future.key")
                .message
                .contains("not valid before")
        );
        assert!(
            error("junk.pem", "good.key")
                .message
                .contains("no `BEGIN CERTIFICATE`")
        );
        assert!(error("good.pem", "junk.pem").message.contains("no `BEGIN"));
        let (_, warnings) = load("soon.pem", "soon.key").expect("loads");
        assert!(
            warnings.len() == 1 && warnings[0].1.contains("renew"),
            "{warnings:?}"
        );
        let _ = (good, expired, future, soon);
    }
}
