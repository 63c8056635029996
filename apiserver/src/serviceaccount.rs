//! ServiceAccount tokens: signed JWTs (ES256) that the API issues through the
//! TokenRequest API (`POST .../serviceaccounts/<name>/token`, `kubectl create token`) and
//! accepts as bearer tokens, as upstream's bound service account tokens.
//!
//! A token's claims are upstream's: `iss`, `sub` (`system:serviceaccount:<ns>:<name>`),
//! `aud`, `iat`, `nbf`, `exp`, and `kubernetes.io` (namespace, service account name and
//! uid). A verified token is the user `sub` in the groups `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>` and `system:authenticated`.
//!
//! The signing key is the cluster's (`sa.key` in the PKI directory, made with the CA).
//! Signing and verifying are pure: the caller gives the time.
//!
//! Left out so far (issue 10): the check that the ServiceAccount (and a bound pod) still
//! exists when a token is used (a deleted account's token stays good until it expires),
//! audiences other than the API's own being refused, the token controller's legacy
//! Secret-based tokens, and mounting tokens into pods (the node agent's projected volume).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};

use crate::rbac::UserInfo;

/// The issuer in every token (upstream's default `--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience a token gets when its request names none.
pub const AUDIENCE_DEFAULT: &str = ISSUER;
/// Upstream's default and bounds of `expirationSeconds`.
pub const EXPIRATION_DEFAULT_S: i64 = 3600;
pub const EXPIRATION_MIN_S: i64 = 600;
pub const EXPIRATION_MAX_S: i64 = 48 * 3600;
/// The longest token read (a header is bounded already; this bounds the work).
const TOKEN_BYTES_MAX: usize = 16 << 10;

/// The key tokens are signed and checked with.
pub struct TokenKey {
    key: EcdsaKeyPair,
    /// The key's id in token headers (`kid`): a digest of the public key.
    kid: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.kid)
    }
}

/// What a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl TokenKey {
    /// A P-256 key in PKCS#8 (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<TokenKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("the service account key: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(&digest.as_ref()[..16]);
        Ok(TokenKey { key, kid })
    }

    /// A token for `subject`, valid from `now_s` (Unix seconds) for `expiration_s`.
    pub fn issue(
        &self,
        subject: &Subject,
        audiences: &[String],
        now_s: i64,
        expiration_s: i64,
    ) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", subject.namespace, subject.name),
            "aud": audiences,
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + expiration_s,
            "kubernetes.io": {
                "namespace": subject.namespace,
                "serviceaccount": {"name": subject.name, "uid": subject.uid},
            },
        });
        let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .key
            .sign(&rng, signed.as_bytes())
            .map_err(|e| format!("signing a token: {e}"))?;
        Ok(format!("{signed}.{}", B64.encode(sig.as_ref())))
    }

    /// The user a token stands for at `now_s`, if it is one of ours, well formed, and
    /// not expired.
    pub fn verify(&self, token: &str, now_s: i64) -> Option<UserInfo> {
        if token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let public =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public.verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(c).ok()?).ok()?;
        if claims["iss"] != ISSUER
            || claims["exp"].as_i64()? <= now_s
            || claims["nbf"].as_i64().is_some_and(|nbf| nbf > now_s)
        {
            return None;
        }
        let k8s = &claims["kubernetes.io"];
        let namespace = k8s["namespace"].as_str()?;
        let name = k8s["serviceaccount"]["name"].as_str()?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        if claims["sub"] != user.as_str() {
            return None;
        }
        Some(UserInfo {
            name: user,
            uid: k8s["serviceaccount"]["uid"].as_str().unwrap_or_default().to_owned(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                crate::rbac::ALL_AUTHENTICATED.into(),
            ],
        })
    }
}

/// The `expirationSeconds` and audiences a TokenRequest asks for, checked as upstream
/// checks them.
pub fn requested(request: &Value) -> Result<(i64, Vec<String>), String> {
    let spec = &request["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => EXPIRATION_DEFAULT_S,
        v => v.as_i64().ok_or("spec.expirationSeconds: must be an integer")?,
    };
    if expiration < EXPIRATION_MIN_S {
        return Err("spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes".into());
    }
    if expiration > EXPIRATION_MAX_S {
        return Err("spec.expirationSeconds: Invalid value: may not specify a duration longer than 48 hours".into());
    }
    let audiences: Vec<String> = match &spec["audiences"] {
        Value::Array(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => vec![AUDIENCE_DEFAULT.to_owned()],
    };
    Ok((expiration, audiences))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
        TokenKey::from_pkcs8(pkcs8.as_ref()).expect("the key")
    }

    fn builder() -> Subject {
        Subject {
            namespace: "team".into(),
            name: "builder".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn a_token_is_its_service_account_until_it_expires() {
        let k = key();
        let token = k
            .issue(&builder(), &[AUDIENCE_DEFAULT.into()], 1_000, 600)
            .expect("a token");
        let user = k.verify(&token, 1_000).expect("valid");
        assert_eq!(user.name, "system:serviceaccount:team:builder");
        assert_eq!(user.uid, "u-1");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team",
                "system:authenticated"
            ]
        );
        assert!(k.verify(&token, 1_599).is_some());
        assert!(k.verify(&token, 1_600).is_none(), "expired");
        assert!(k.verify(&token, 999).is_none(), "not yet valid");
    }

    #[test]
    fn a_token_of_another_key_or_altered_is_refused() {
        let (k, other) = (key(), key());
        let token = other.issue(&builder(), &[], 1_000, 600).expect("a token");
        assert!(k.verify(&token, 1_000).is_none());
        let token = k.issue(&builder(), &[], 1_000, 600).expect("a token");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: Value = serde_json::from_slice(&B64.decode(&parts[1]).expect("b64")).expect("json");
        claims["kubernetes.io"]["namespace"] = json!("kube-system");
        claims["sub"] = json!("system:serviceaccount:kube-system:builder");
        parts[1] = B64.encode(claims.to_string());
        assert!(
            k.verify(&parts.join("."), 1_000).is_none(),
            "a changed claim breaks the signature"
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(TOKEN_BYTES_MAX + 1)] {
            assert!(k.verify(junk, 1_000).is_none(), "{junk:.20}");
        }
    }

    #[test]
    fn token_requests_are_bounded_as_upstream() {
        assert_eq!(
            requested(&json!({})).expect("defaults"),
            (EXPIRATION_DEFAULT_S, vec![AUDIENCE_DEFAULT.to_owned()])
        );
        assert_eq!(
            requested(&json!({"spec": {"expirationSeconds": 7200, "audiences": ["vault"]}})).expect("asked"),
            (7200, vec!["vault".to_owned()])
        );
        assert!(requested(&json!({"spec": {"expirationSeconds": 60}})).is_err());
        assert!(requested(&json!({"spec": {"expirationSeconds": 200_000}})).is_err());
    }
}
