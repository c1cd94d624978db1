//! Server-side CPU cost of rustls 0.23 with the `ring` vs `aws-lc-rs` crypto providers.
//!
//! Everything is in memory: a `ServerConnection` and a `ClientConnection` are driven by
//! moving TLS bytes between them through `Vec<u8>` / `Cursor` (no sockets, no threads).
//! Only the server-side calls (`ServerConnection::new`, `read_tls`, `process_new_packets`,
//! `write_tls`, `writer().write_all`, `reader().read`, drop) are inside the timed regions;
//! the client's work is excluded.
//!
//! Usage: `cargo run --release -- [HANDSHAKES] [RECORDS] [ROUNDS]`
//! (defaults 2000 handshakes per scenario, 200000 records per direction, 3 rounds; the
//! median over rounds is reported).

use std::io::{Cursor, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ProducesTickets;
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind,
    ProtocolVersion, ServerConfig, ServerConnection, SignatureScheme,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Prov {
    Ring,
    AwsLc,
}

impl Prov {
    /// The provider's default_provider(), restricted to X25519 key exchange (aws-lc-rs'
    /// default would otherwise prefer the X25519MLKEM768 hybrid, ring has no ML-KEM).
    fn provider(self, suite: Option<CipherSuite>) -> CryptoProvider {
        let mut p = match self {
            Prov::Ring => {
                // Deprecated in rustls 0.23.48 ("no support for post-quantum algorithms"),
                // still the provider the gateway uses today.
                #[allow(deprecated)]
                let mut p = rustls::crypto::ring::default_provider();
                p.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
                p
            }
            Prov::AwsLc => {
                let mut p = rustls::crypto::aws_lc_rs::default_provider();
                p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
                p
            }
        };
        if let Some(s) = suite {
            p.cipher_suites.retain(|cs| cs.suite() == s);
            assert_eq!(p.cipher_suites.len(), 1, "suite {s:?} not in provider");
        }
        p
    }

    fn ticketer(self) -> Arc<dyn ProducesTickets> {
        match self {
            Prov::Ring => rustls::crypto::ring::Ticketer::new().expect("ring ticketer"),
            Prov::AwsLc => rustls::crypto::aws_lc_rs::Ticketer::new().expect("aws-lc ticketer"),
        }
    }
}

/// Certificate verifier for the (untimed) client: accepts exactly the pinned end-entity
/// certificate, but really verifies the handshake signatures with the provider.
#[derive(Debug)]
struct PinnedVerifier {
    cert: CertificateDer<'static>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unexpected server certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

struct Identity {
    cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

fn make_identity(key: rcgen::KeyPair) -> Identity {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    Identity { cert: cert.der().clone(), key_pkcs8: key.serialize_der() }
}

fn ecdsa_identity() -> Identity {
    make_identity(rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
}

/// RSA-2048: rcgen cannot generate RSA keys with its `ring` backend
/// (Error::KeyGenerationUnavailable), so fall back to `openssl genpkey` into a temp dir.
fn rsa_identity() -> (Identity, &'static str) {
    match rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256) {
        Ok(k) => (make_identity(k), "rcgen"),
        Err(e) => {
            let dir = std::env::temp_dir().join(format!("tlsprov-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("rsa2048.pem");
            let st = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&path)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("running openssl");
            assert!(st.success(), "openssl genpkey failed");
            let pem = std::fs::read_to_string(&path).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            let k = rcgen::KeyPair::from_pem(&pem).unwrap();
            eprintln!("note: rcgen RSA keygen with ring: {e}; used openssl genpkey (temp dir, deleted)");
            (make_identity(k), "openssl genpkey")
        }
    }
}

fn server_config(
    p: Prov,
    id: &Identity,
    tls13: bool,
    suite: Option<CipherSuite>,
) -> Arc<ServerConfig> {
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if tls13 { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS12] };
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(p.provider(suite)))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone())),
        )
        .unwrap();
    if tls13 {
        // Stateless tickets; rustls' default send_tls13_tickets (2 per handshake) is kept.
        cfg.ticketer = p.ticketer();
    }
    Arc::new(cfg)
}

fn client_config(
    p: Prov,
    id: &Identity,
    tls13: bool,
    resume: bool,
    suite: Option<CipherSuite>,
) -> Arc<ClientConfig> {
    let prov = p.provider(suite);
    let algs = prov.signature_verification_algorithms;
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if tls13 { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS12] };
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(prov))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier { cert: id.cert.clone(), algs }))
        .with_no_client_auth();
    if !resume {
        cfg.resumption = Resumption::disabled();
    } // else: the default in-memory resumption store
    Arc::new(cfg)
}

fn feed_server(s: &mut ServerConnection, data: &[u8]) {
    let mut c = Cursor::new(data);
    while (c.position() as usize) < data.len() {
        s.read_tls(&mut c).unwrap();
        s.process_new_packets().unwrap();
    }
}

fn feed_client(cl: &mut ClientConnection, data: &[u8]) {
    let mut c = Cursor::new(data);
    while (c.position() as usize) < data.len() {
        cl.read_tls(&mut c).unwrap();
        cl.process_new_packets().unwrap();
    }
}

/// Move bytes both ways until neither side has anything to send. Server time -> `st`.
fn pump(s: &mut ServerConnection, c: &mut ClientConnection, st: &mut Duration, buf: &mut Vec<u8>) {
    loop {
        let mut progressed = false;
        buf.clear();
        while c.wants_write() {
            c.write_tls(buf).unwrap();
        }
        if !buf.is_empty() {
            progressed = true;
            let t = Instant::now();
            feed_server(s, buf);
            *st += t.elapsed();
        }
        buf.clear();
        let t = Instant::now();
        while s.wants_write() {
            s.write_tls(buf).unwrap();
        }
        *st += t.elapsed();
        if !buf.is_empty() {
            progressed = true;
            feed_client(c, buf);
        }
        if !progressed {
            break;
        }
    }
    assert!(!s.is_handshaking() && !c.is_handshaking(), "handshake did not complete");
}

/// One handshake; returns server-side time.
fn handshake(
    scfg: &Arc<ServerConfig>,
    ccfg: &Arc<ClientConfig>,
    expect: HandshakeKind,
    buf: &mut Vec<u8>,
) -> (Duration, ServerConnection, ClientConnection) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut st = Duration::ZERO;
    let t = Instant::now();
    let mut s = ServerConnection::new(scfg.clone()).unwrap();
    st += t.elapsed();
    let mut c = ClientConnection::new(ccfg.clone(), name).unwrap();
    pump(&mut s, &mut c, &mut st, buf);
    assert_eq!(c.handshake_kind(), Some(expect));
    (st, s, c)
}

#[derive(Clone, Copy)]
enum Hs {
    Tls13Ecdsa,
    Tls13Rsa,
    Tls13Resumed,
    Tls12Ecdsa,
}

/// µs per handshake (server side), plus the negotiated suite/version for the record.
fn bench_handshakes(p: Prov, kind: Hs, ecdsa: &Identity, rsa: &Identity, n: usize) -> (f64, String) {
    let (id, tls13, resume) = match kind {
        Hs::Tls13Ecdsa => (ecdsa, true, false),
        Hs::Tls13Rsa => (rsa, true, false),
        Hs::Tls13Resumed => (ecdsa, true, true),
        Hs::Tls12Ecdsa => (ecdsa, false, false),
    };
    let scfg = server_config(p, id, tls13, None);
    let ccfg = client_config(p, id, tls13, resume, None);
    let expect = if resume { HandshakeKind::Resumed } else { HandshakeKind::Full };
    let mut buf = Vec::with_capacity(16 * 1024);
    if resume {
        // Prime the client's resumption store with tickets from a full handshake.
        let (_, _, c) = handshake(&scfg, &ccfg, HandshakeKind::Full, &mut buf);
        drop(c);
    }
    let warm = (n / 10).max(10);
    let mut desc = String::new();
    for _ in 0..warm {
        let (_, s, _) = handshake(&scfg, &ccfg, expect, &mut buf);
        desc = format!(
            "{:?} {:?}",
            s.protocol_version().unwrap(),
            s.negotiated_cipher_suite().unwrap().suite()
        );
    }
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let (st, s, c) = handshake(&scfg, &ccfg, expect, &mut buf);
        let t = Instant::now();
        drop(s);
        total += st + t.elapsed();
        drop(c);
    }
    (total.as_secs_f64() * 1e6 / n as f64, desc)
}

const REC: usize = 1024;
const BATCH: usize = 8; // 8 KiB in flight, below rustls' 16 KiB received-plaintext limit

/// (µs per KiB server encrypt+write_tls, µs per KiB server read_tls+decrypt+read)
fn bench_bulk(p: Prov, suite: CipherSuite, id: &Identity, records: usize) -> (f64, f64) {
    let scfg = server_config(p, id, true, Some(suite));
    let ccfg = client_config(p, id, true, false, Some(suite));
    let mut buf = Vec::with_capacity(64 * 1024);
    let (_, mut s, mut c) = handshake(&scfg, &ccfg, HandshakeKind::Full, &mut buf);
    assert_eq!(s.negotiated_cipher_suite().unwrap().suite(), suite);
    assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    let payload = vec![0x5au8; REC];
    let mut rbuf = vec![0u8; REC * BATCH];
    let batches = records / BATCH;
    let warm = (batches / 20).max(10);
    let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
    for i in 0..warm + batches {
        // server -> client
        buf.clear();
        let t = Instant::now();
        for _ in 0..BATCH {
            s.writer().write_all(&payload).unwrap();
        }
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let e = t.elapsed();
        feed_client(&mut c, &buf);
        c.reader().read_exact(&mut rbuf).unwrap();
        // client -> server
        buf.clear();
        for _ in 0..BATCH {
            c.writer().write_all(&payload).unwrap();
        }
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let t = Instant::now();
        feed_server(&mut s, &buf);
        s.reader().read_exact(&mut rbuf).unwrap();
        let d = t.elapsed();
        if i >= warm {
            enc += e;
            dec += d;
        }
    }
    let n = (batches * BATCH) as f64; // KiB
    (enc.as_secs_f64() * 1e6 / n, dec.as_secs_f64() * 1e6 / n)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arg")).collect();
    let handshakes = *args.first().unwrap_or(&2000);
    let records = *args.get(1).unwrap_or(&200_000);
    let rounds = *args.get(2).unwrap_or(&3);

    let ecdsa = ecdsa_identity();
    let (rsa, rsa_src) = rsa_identity();
    println!(
        "rustls server-side CPU cost, in-memory; {handshakes} handshakes/scenario, {records} x 1 KiB records/direction, median of {rounds} rounds; RSA key from {rsa_src}"
    );

    let hs_rows: [(&str, Hs); 4] = [
        ("TLS1.3 full, X25519, ECDSA P-256", Hs::Tls13Ecdsa),
        ("TLS1.3 full, X25519, RSA-2048", Hs::Tls13Rsa),
        ("TLS1.3 resumed (ticket), X25519", Hs::Tls13Resumed),
        ("TLS1.2 full, ECDHE X25519, ECDSA P-256", Hs::Tls12Ecdsa),
    ];
    let suites = [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let provs = [Prov::Ring, Prov::AwsLc];

    // rows: (label, unit, samples[prov][round], note)
    let mut rows: Vec<(String, &str, [Vec<f64>; 2], String)> = Vec::new();
    for (l, _) in &hs_rows {
        rows.push((l.to_string(), "us/handshake", [vec![], vec![]], String::new()));
    }
    for s in &suites {
        rows.push((format!("bulk {s:?}: server encrypt"), "us/KiB", [vec![], vec![]], String::new()));
        rows.push((format!("bulk {s:?}: server decrypt"), "us/KiB", [vec![], vec![]], String::new()));
    }

    for round in 0..rounds {
        // Alternate which provider goes first to cancel ordering/thermal effects.
        let order: Vec<usize> = if round % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for (i, (_, kind)) in hs_rows.iter().enumerate() {
            for &pi in &order {
                let (us, desc) = bench_handshakes(provs[pi], *kind, &ecdsa, &rsa, handshakes);
                rows[i].2[pi].push(us);
                rows[i].3 = desc;
            }
        }
        for (j, s) in suites.iter().enumerate() {
            for &pi in &order {
                let (e, d) = bench_bulk(provs[pi], *s, &ecdsa, records);
                rows[4 + 2 * j].2[pi].push(e);
                rows[4 + 2 * j + 1].2[pi].push(d);
            }
        }
        eprintln!("round {} done", round + 1);
    }

    println!(
        "{:<58} {:>12} {:>12} {:>8}  {}",
        "operation (server side)", "ring", "aws-lc-rs", "aws/ring", "unit / negotiated (default suites)"
    );
    for (label, unit, samples, note) in rows.iter_mut() {
        let raw = format!("{:.2?} | {:.2?}", samples[0], samples[1]);
        let r = median(&mut samples[0]);
        let a = median(&mut samples[1]);
        println!("{label:<58} {r:>12.3} {a:>12.3} {:>8.3}  {unit} {note}", a / r);
        println!("{:<58} raw ring|aws: {raw}", "");
    }
}
