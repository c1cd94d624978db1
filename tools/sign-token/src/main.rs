//! `cargo run -p sign-token -- ALG KEY [KID] [CLAIMS]`: prints a JWT.
//!
//! `KEY` is a private key PEM file (RS*, PS*, ES*, EdDSA) or, for HS*, a
//! file holding the secret. `CLAIMS` is a JSON object; `exp` defaults to an
//! hour from now and `sub` to `demo`.
//!
//! ```sh
//! cargo run -q -p sign-token -- RS256 tests/keys/rsa-private.pem rsa '{"sub":"ann","scope":"orders:read"}'
//! ```

use std::process::ExitCode;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sign-token: {error}\nusage: sign-token ALG KEY_FILE [KID] [CLAIMS_JSON]");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let (Some(alg), Some(key_file)) = (args.first(), args.get(1)) else {
        return Err("ALG and KEY_FILE are needed".into());
    };
    let alg: Algorithm = alg
        .parse()
        .map_err(|_| format!("`{alg}` is not an algorithm"))?;
    let key = std::fs::read(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(String::from_utf8_lossy(&key).trim().as_bytes())
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&key),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&key),
        _ => EncodingKey::from_rsa_pem(&key),
    }
    .map_err(|e| format!("{key_file}: {e}"))?;
    let mut header = Header::new(alg);
    header.kid = args.get(2).filter(|kid| !kid.is_empty()).cloned();
    let mut claims: serde_json::Map<String, serde_json::Value> = match args.get(3) {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("CLAIMS: {e}"))?,
        None => serde_json::Map::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    claims.entry("exp").or_insert((now + 3600).into());
    claims.entry("sub").or_insert("demo".into());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}
