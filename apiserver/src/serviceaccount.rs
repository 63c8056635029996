//! ServiceAccount tokens: signed JWTs (ES256) that the API issues through the
//! TokenRequest API (`POST .../serviceaccounts/<name>/token`, `kubectl create token`) and
//! accepts as bearer tokens, as upstream's bound service account tokens.
//!
//! A token's claims are upstream's: `iss`, `sub` (`system:serviceaccount:<ns>:<name>`),
//! `aud`, `iat`, `nbf`, `exp`, and `kubernetes.io` (namespace, service account name and
//! uid, and for a token bound to a pod the pod's name and uid). A verified token is the
//! user `sub` in the groups `system:serviceaccounts`, `system:serviceaccounts:<ns>` and
//! `system:authenticated`.
//!
//! The signing key is the cluster's (`sa.key` in the PKI directory, made with the CA).
//! Signing and verifying are pure: the caller gives the time. A signature is not the
//! whole check: [`crate::auth::authenticate`] also requires that the ServiceAccount (and
//! the pod a token is bound to) still exists with the uid in the token, so a token dies
//! with its account or pod, before it expires (upstream's `validator`).
//!
//! Only tokens for the API's own audience ([`AUDIENCE_DEFAULT`]) authenticate to the API:
//! a token issued for another audience (a vault, say) is for that audience alone.
//!
//! How pods get tokens: the ServiceAccount admission ([`admit_pod`]) gives every pod a
//! projected volume `kube-api-access-<suffix>` (a bound token, the cluster CA from the
//! `kube-root-ca.crt` ConfigMap, and the namespace) mounted at [`MOUNT_PATH`]; the node
//! agent asks the TokenRequest API for the token, bound to the pod, and renews it.
//!
//! Left out: the token controller's legacy Secret-based tokens, and the
//! `--service-account-extend-token-expiration` year-long tokens (the agent renews
//! instead).

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

/// Where every pod's token, CA and namespace are mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The lifetime of the tokens the admission's volume asks for (upstream's: one hour and
/// seven seconds, telling them apart from hand-made one-hour tokens).
pub const POD_TOKEN_EXPIRATION_S: i64 = 3607;
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// What a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The pod a token is bound to (name and uid, in the account's namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

/// A token whose signature, time and audience hold: its user, and what must still exist
/// for it to be good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserInfo,
    pub subject: Subject,
    pub pod: Option<BoundPod>,
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

    /// A token for `subject` (bound to `pod` if given), valid from `now_s` (Unix
    /// seconds) for `expiration_s`.
    pub fn issue(
        &self,
        subject: &Subject,
        pod: Option<&BoundPod>,
        audiences: &[String],
        now_s: i64,
        expiration_s: i64,
    ) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let mut claims = json!({
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
        if let Some(pod) = pod {
            claims["kubernetes.io"]["pod"] = json!({"name": pod.name, "uid": pod.uid});
        }
        let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .key
            .sign(&rng, signed.as_bytes())
            .map_err(|e| format!("signing a token: {e}"))?;
        Ok(format!("{signed}.{}", B64.encode(sig.as_ref())))
    }

    /// What a token stands for at `now_s`, if it is one of ours, well formed, for the
    /// API's audience, and not expired.
    pub fn verify(&self, token: &str, now_s: i64) -> Option<Verified> {
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
            || !audience_is_api(&claims["aud"])
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
        let uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or_default().to_owned();
        let pod = match &k8s["pod"] {
            Value::Null => None,
            p => Some(BoundPod {
                name: p["name"].as_str()?.to_owned(),
                uid: p["uid"].as_str()?.to_owned(),
            }),
        };
        Some(Verified {
            user: UserInfo {
                name: user,
                uid: uid.clone(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    crate::rbac::ALL_AUTHENTICATED.into(),
                ],
            },
            subject: Subject {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid,
            },
            pod,
        })
    }
}

/// Whether a token's `aud` claim (a string or a list) names the API.
fn audience_is_api(aud: &Value) -> bool {
    match aud {
        Value::String(a) => a == AUDIENCE_DEFAULT,
        Value::Array(list) => list.iter().any(|a| a == AUDIENCE_DEFAULT),
        _ => false,
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

/// The prefix of the token volume's name (upstream's `kube-api-access-`).
pub const VOLUME_PREFIX: &str = "kube-api-access-";

/// The ServiceAccount admission of a new pod, as upstream's plugin (the lookup of the
/// account is the caller's; `account` is None only when the caller has decided to admit
/// without one): `serviceAccountName` defaults to `default`, and unless the pod or its
/// account opts out (`automountServiceAccountToken: false`, the pod's word first), a
/// projected volume `kube-api-access-<suffix>` is added and mounted read-only at
/// [`MOUNT_PATH`] in every container and init container that has nothing mounted there.
/// A pod that already has such a volume mounted is left as it is.
pub fn admit_pod(pod: &mut Value, account: Option<&Value>, suffix: &str) {
    let spec = &mut pod["spec"];
    if spec["serviceAccountName"].as_str().is_none_or(str::is_empty) {
        let legacy = spec["serviceAccount"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        spec["serviceAccountName"] = json!(legacy);
    }
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account.and_then(|a| a["automountServiceAccountToken"].as_bool()))
        .unwrap_or(true);
    if !automount {
        return;
    }
    let token_volumes: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            v["projected"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["serviceAccountToken"].is_object()))
        })
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let mounted_at = |c: &Value, pred: &dyn Fn(&Value) -> bool| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == MOUNT_PATH && pred(m)))
    };
    let containers = ["initContainers", "containers"];
    let already = containers.iter().any(|list| {
        spec[*list].as_array().into_iter().flatten().any(|c| {
            mounted_at(c, &|m| {
                m["name"].as_str().is_some_and(|n| token_volumes.iter().any(|t| t == n))
            })
        })
    });
    if already {
        return;
    }
    let name = format!("{VOLUME_PREFIX}{suffix}");
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": POD_TOKEN_EXPIRATION_S, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match spec["volumes"].as_array_mut() {
        Some(list) => list.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    for list in containers {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if mounted_at(c, &|_| true) {
                continue;
            }
            let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
        }
    }
}

/// Upstream's random suffix alphabet (`utilrand.String`: no vowels, no look-alikes).
pub fn volume_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("invariant: the system's random source works");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
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
            .issue(&builder(), None, &[AUDIENCE_DEFAULT.into()], 1_000, 600)
            .expect("a token");
        let verified = k.verify(&token, 1_000).expect("valid");
        assert_eq!(verified.subject, builder());
        assert_eq!(verified.pod, None);
        let user = verified.user;
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
        let api = [AUDIENCE_DEFAULT.to_owned()];
        let token = other.issue(&builder(), None, &api, 1_000, 600).expect("a token");
        assert!(k.verify(&token, 1_000).is_none());
        let token = k.issue(&builder(), None, &api, 1_000, 600).expect("a token");
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
    fn only_tokens_for_the_api_authenticate_and_a_bound_pod_is_kept() {
        let k = key();
        let vault = k
            .issue(&builder(), None, &["vault".into()], 1_000, 600)
            .expect("a token");
        assert!(k.verify(&vault, 1_000).is_none(), "another audience's token");
        let pod = BoundPod {
            name: "web-1".into(),
            uid: "p-1".into(),
        };
        let both = [String::from("vault"), AUDIENCE_DEFAULT.into()];
        let bound = k.issue(&builder(), Some(&pod), &both, 1_000, 600).expect("a token");
        let verified = k.verify(&bound, 1_000).expect("valid");
        assert_eq!(verified.pod, Some(pod));
    }

    #[test]
    fn admission_mounts_a_token_volume_in_every_container_once() {
        let account = json!({"metadata": {"name": "default", "uid": "sa-1"}});
        let mut pod = json!({"metadata": {"name": "p", "namespace": "team"}, "spec": {
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [{"name": "a", "image": "x"},
                           {"name": "b", "image": "x", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}],
            "volumes": [{"name": "own", "emptyDir": {}}]}});
        admit_pod(&mut pod, Some(&account), "ab1cd");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[1]["name"], "kube-api-access-ab1cd");
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"expirationSeconds": POD_TOKEN_EXPIRATION_S, "path": "token"})
        );
        let mounts = |c: &Value| c["volumeMounts"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            mounts(&pod["spec"]["initContainers"][0])[0]["name"],
            "kube-api-access-ab1cd"
        );
        assert_eq!(mounts(&pod["spec"]["containers"][0])[0]["mountPath"], MOUNT_PATH);
        assert_eq!(
            mounts(&pod["spec"]["containers"][1]).len(),
            1,
            "its own mount there is kept"
        );
        // Admitting again (an update through the same code) adds nothing.
        let before = pod.clone();
        admit_pod(&mut pod, Some(&account), "zzzzz");
        assert_eq!(pod, before);

        // Opting out, in the pod or in the account (the pod wins).
        for (pod_says, account_says, mounted) in [
            (Some(false), None, false),
            (None, Some(false), false),
            (Some(true), Some(false), true),
        ] {
            let mut pod = json!({"spec": {"containers": [{"name": "a"}]}});
            if let Some(v) = pod_says {
                pod["spec"]["automountServiceAccountToken"] = json!(v);
            }
            let mut account = account.clone();
            if let Some(v) = account_says {
                account["automountServiceAccountToken"] = json!(v);
            }
            admit_pod(&mut pod, Some(&account), "ab1cd");
            assert_eq!(
                pod["spec"]["volumes"].is_array(),
                mounted,
                "{pod_says:?} {account_says:?}"
            );
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
