//! JSON Web Tokens (compact JWS) verified and signed with openssl. Only RS256 and ES256 are
//! accepted; `none` and every HMAC algorithm are refused before any key is looked at.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a token was refused. Each message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the bearer token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token's algorithm '{0}' is not accepted (only RS256 and ES256)")]
    Algorithm(String),
    #[error("no key with kid '{0}' is published by the token's issuer")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token expired at {0}")]
    Expired(i64),
    #[error("the token is not valid before {0}")]
    NotYetValid(i64),
    #[error("the token's issuer '{0}' is not trusted")]
    Issuer(String),
    #[error("the token's audience does not include '{0}'")]
    Audience(String),
    #[error("the token has no '{0}' claim")]
    MissingClaim(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// A JSON Web Key (public part), as published in a JWKS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A verification key from a JWK.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Alg,
    key: PKey<Public>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyKey({:?}, {})", self.kid, self.alg.name())
    }
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| e.to_string())
}

fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl VerifyKey {
    /// Keys of types other than RSA and EC P-256, and keys not for signing, are skipped.
    pub fn from_jwk(jwk: &Jwk) -> Result<Option<VerifyKey>, String> {
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let part = |v: &Option<String>, name: &str| -> Result<BigNum, String> {
            let raw = v
                .as_deref()
                .ok_or_else(|| format!("JWK without '{name}'"))?;
            BigNum::from_slice(&b64(raw)?).map_err(|e| e.to_string())
        };
        match jwk.kty.as_str() {
            "RSA" => {
                if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
                    return Ok(None);
                }
                let rsa = Rsa::from_public_components(part(&jwk.n, "n")?, part(&jwk.e, "e")?)
                    .map_err(|e| e.to_string())?;
                let key = PKey::from_rsa(rsa).map_err(|e| e.to_string())?;
                Ok(Some(VerifyKey {
                    kid: jwk.kid.clone(),
                    alg: Alg::Rs256,
                    key,
                }))
            }
            "EC" if jwk.crv.as_deref() == Some("P-256") => {
                let group =
                    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
                let (x, y) = (part(&jwk.x, "x")?, part(&jwk.y, "y")?);
                let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                    .map_err(|e| e.to_string())?;
                let key = PKey::from_ec_key(ec).map_err(|e| e.to_string())?;
                Ok(Some(VerifyKey {
                    kid: jwk.kid.clone(),
                    alg: Alg::Es256,
                    key,
                }))
            }
            _ => Ok(None),
        }
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match self.alg {
            Alg::Rs256 => Verifier::new(MessageDigest::sha256(), &self.key)
                .and_then(|mut v| {
                    v.update(input)?;
                    v.verify(sig)
                })
                .unwrap_or(false),
            Alg::Es256 => {
                if sig.len() != 64 {
                    return false;
                }
                let (Ok(r), Ok(s)) = (
                    BigNum::from_slice(&sig[..32]),
                    BigNum::from_slice(&sig[32..]),
                ) else {
                    return false;
                };
                let (Ok(sig), Ok(ec), Ok(digest)) = (
                    EcdsaSig::from_private_components(r, s),
                    self.key.ec_key(),
                    hash(MessageDigest::sha256(), input),
                ) else {
                    return false;
                };
                sig.verify(&digest, &ec).unwrap_or(false)
            }
        }
    }
}

/// The parts of a compact JWS, before verification.
#[derive(Debug)]
pub struct Unverified {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Value,
    input: String,
    signature: Vec<u8>,
}

/// Splits and decodes a token; refuses `none`, HMAC and anything but RS256 / ES256.
pub fn decode(token: &str) -> Result<Unverified, JwtError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err(JwtError::Malformed(format!(
            "expected 3 dot-separated parts, found {}",
            parts.len()
        )));
    };
    let header: Value =
        serde_json::from_slice(&b64(h).map_err(|e| JwtError::Malformed(format!("header: {e}")))?)
            .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Alg::Rs256,
        Some("ES256") => Alg::Es256,
        Some(other) => return Err(JwtError::Algorithm(other.to_owned())),
        None => return Err(JwtError::Malformed("header has no 'alg'".into())),
    };
    let claims: Value =
        serde_json::from_slice(&b64(c).map_err(|e| JwtError::Malformed(format!("claims: {e}")))?)
            .map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
    if !claims.is_object() {
        return Err(JwtError::Malformed("claims are not a JSON object".into()));
    }
    let signature = b64(s).map_err(|e| JwtError::Malformed(format!("signature: {e}")))?;
    Ok(Unverified {
        alg,
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        claims,
        input: format!("{h}.{c}"),
        signature,
    })
}

/// What the claims must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub now: i64,
    pub leeway: i64,
}

impl Unverified {
    /// Checks the signature with the key named by `kid` (or the only key of the right type),
    /// then `iss`, `aud`, `exp` and `nbf`.
    pub fn verify(self, keys: &[VerifyKey], expect: &Expect<'_>) -> Result<Value, JwtError> {
        let candidates: Vec<&VerifyKey> = keys.iter().filter(|k| k.alg == self.alg).collect();
        let key = match &self.kid {
            Some(kid) => candidates
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .copied()
                .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?,
            None => match candidates.as_slice() {
                [only] => *only,
                _ => return Err(JwtError::UnknownKey("(none given)".into())),
            },
        };
        if !key.verify(self.input.as_bytes(), &self.signature) {
            return Err(JwtError::Signature);
        }
        check_claims(&self.claims, expect)?;
        Ok(self.claims)
    }
}

fn check_claims(c: &Value, expect: &Expect<'_>) -> Result<(), JwtError> {
    let iss = c
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingClaim("iss"))?;
    if iss != expect.issuer {
        return Err(JwtError::Issuer(iss.to_owned()));
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a == expect.audience),
        _ => return Err(JwtError::MissingClaim("aud")),
    };
    if !aud_ok {
        return Err(JwtError::Audience(expect.audience.to_owned()));
    }
    let exp = c
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::MissingClaim("exp"))?;
    if expect.now > exp + expect.leeway {
        return Err(JwtError::Expired(exp));
    }
    if let Some(nbf) = c.get("nbf").and_then(Value::as_i64) {
        if expect.now + expect.leeway < nbf {
            return Err(JwtError::NotYetValid(nbf));
        }
    }
    Ok(())
}

/// A signing key (RS256) with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    key: PKey<Private>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// A fresh 2048-bit RSA key.
    pub fn generate(kid: &str) -> Result<Self, String> {
        let rsa = Rsa::generate(2048).map_err(|e| e.to_string())?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            key: PKey::from_rsa(rsa).map_err(|e| e.to_string())?,
        })
    }

    /// An RSA private key from PEM.
    pub fn from_pem(kid: &str, pem: &[u8]) -> Result<Self, String> {
        let key = PKey::private_key_from_pem(pem).map_err(|e| e.to_string())?;
        key.rsa()
            .map_err(|_| "the signing key must be an RSA key".to_string())?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            key,
        })
    }

    pub fn public_jwk(&self) -> Jwk {
        let rsa = self.key.rsa().ok();
        Jwk {
            kty: "RSA".into(),
            kid: Some(self.kid.clone()),
            alg: Some("RS256".into()),
            use_: Some("sig".into()),
            n: rsa.as_ref().map(|r| b64e(&r.n().to_vec())),
            e: rsa.as_ref().map(|r| b64e(&r.e().to_vec())),
            crv: None,
            x: None,
            y: None,
        }
    }

    /// Signs `claims` as an RS256 compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64e(header.to_string().as_bytes()),
            b64e(claims.to_string().as_bytes())
        );
        let mut signer =
            Signer::new(MessageDigest::sha256(), &self.key).map_err(|e| e.to_string())?;
        signer.update(input.as_bytes()).map_err(|e| e.to_string())?;
        let sig = signer.sign_to_vec().map_err(|e| e.to_string())?;
        Ok(format!("{input}.{}", b64e(&sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(now: i64) -> Expect<'static> {
        Expect {
            issuer: "iss",
            audience: "aud",
            now,
            leeway: 30,
        }
    }

    #[test]
    fn sign_verify_and_claim_checks() {
        let k = SigningKey::generate("k1").expect("key");
        let keys = vec![VerifyKey::from_jwk(&k.public_jwk())
            .expect("jwk")
            .expect("usable")];
        let good = k
            .sign(&json!({"iss": "iss", "aud": ["x", "aud"], "exp": 1000, "nbf": 900}))
            .expect("sign");
        assert!(decode(&good)
            .expect("decode")
            .verify(&keys, &expect(950))
            .is_ok());
        assert_eq!(
            decode(&good).expect("decode").verify(&keys, &expect(1031)),
            Err(JwtError::Expired(1000))
        );
        assert_eq!(
            decode(&good).expect("decode").verify(&keys, &expect(869)),
            Err(JwtError::NotYetValid(900))
        );
        let wrong_iss = k
            .sign(&json!({"iss": "other", "aud": "aud", "exp": 1000}))
            .expect("sign");
        assert_eq!(
            decode(&wrong_iss)
                .expect("decode")
                .verify(&keys, &expect(950)),
            Err(JwtError::Issuer("other".into()))
        );
        // A different key with the same kid: the signature fails.
        let forged = SigningKey::generate("k1")
            .expect("key")
            .sign(&json!({"iss": "iss", "aud": "aud", "exp": 1000}))
            .expect("sign");
        assert_eq!(
            decode(&forged).expect("decode").verify(&keys, &expect(950)),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn none_and_hmac_are_refused() {
        let h = b64e(br#"{"alg":"none"}"#);
        let c = b64e(br#"{"iss":"iss"}"#);
        assert_eq!(
            decode(&format!("{h}.{c}.")).err(),
            Some(JwtError::Algorithm("none".into()))
        );
        let h = b64e(br#"{"alg":"HS256"}"#);
        assert_eq!(
            decode(&format!("{h}.{c}.abc")).err(),
            Some(JwtError::Algorithm("HS256".into()))
        );
        assert!(matches!(decode("abc"), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn es256_verifies() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        let ec = EcKey::generate(&group).expect("ec");
        let mut ctx = openssl::bn::BigNumContext::new().expect("ctx");
        let (mut x, mut y) = (BigNum::new().expect("x"), BigNum::new().expect("y"));
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .expect("coords");
        let pad = |b: &openssl::bn::BigNumRef| b.to_vec_padded(32).expect("pad");
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("e1".into()),
            alg: Some("ES256".into()),
            use_: None,
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(b64e(&pad(&x))),
            y: Some(b64e(&pad(&y))),
        };
        let keys = vec![VerifyKey::from_jwk(&jwk).expect("jwk").expect("usable")];
        let input = format!(
            "{}.{}",
            b64e(br#"{"alg":"ES256","kid":"e1"}"#),
            b64e(br#"{"iss":"iss","aud":"aud","exp":1000}"#)
        );
        let digest = hash(MessageDigest::sha256(), input.as_bytes()).expect("hash");
        let sig = EcdsaSig::sign(&digest, &ec).expect("sign");
        let mut raw = pad(sig.r());
        raw.extend(pad(sig.s()));
        let token = format!("{input}.{}", b64e(&raw));
        assert!(decode(&token)
            .expect("decode")
            .verify(&keys, &expect(950))
            .is_ok());
    }
}
