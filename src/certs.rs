//! `capstan certs`: a cluster CA and a serving certificate for the Kubernetes API, as
//! kubeadm's `certs` phase writes them (ECDSA P-256 keys, rcgen):
//!
//! - `ca.crt`, `ca.key`: the cluster CA (`CN=capstan-ca`), valid for ten years; kept if it
//!   exists, so certificates can be issued again from the same CA;
//! - `apiserver.crt`, `apiserver.key`: the API server's certificate (`CN=kube-apiserver`,
//!   server auth) for the given hosts (IP addresses and DNS names), valid for one year,
//!   issued by the CA; `apiserver.crt` holds the CA after it, so the kubeconfig the server
//!   writes (`--write-kubeconfig`) trusts the CA.
//!
//! - `admin.crt`, `admin.key`: a client certificate for the user `admin` in the group
//!   `system:masters` (cluster-admin by the default binding);
//! - with `--user NAME [--group G]`, only `NAME.crt` and `NAME.key`: a client certificate
//!   for that user (the CN) in that group (the O), from the existing CA. One group: rcgen
//!   keeps one value per attribute type.
//! - with `--node NAME`, only `NAME-agent-serving.crt` and `NAME-agent-serving.key`: the
//!   serving certificate of node NAME's agent port (`capstan agent --tls-cert-file`), for
//!   `--hosts` and the node's name, as the kubelet's (`CN=system:node:NAME`,
//!   `O=system:nodes`, server auth), with the CA after it.
//!
//! Certificates and keys are written with mode 0600. `capstan store --apiserver-listen`,
//! `capstan master` and `capstan up` use the same [`Ca`] to make their PKI on first start
//! (see `SecureFlags` in main.rs): there the API server also gets, in memory, its client
//! certificate for the agents' ports ([`KUBELET_CLIENT_USER`] in `system:masters`, as
//! kubeadm's `apiserver-kubelet-client`), and each agent a serving certificate
//! ([`Ca::agent_serving`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Hosts one certificate may name.
const HOSTS_MAX: usize = 64;
/// The API server's user on the node agents' ports (kubeadm's name for it).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
const CA_DAYS: i64 = 3650;
const SERVING_DAYS: i64 = 365;

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Directory to write the files to (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// The names and addresses the API server is reached by, comma separated.
    #[arg(long, default_value = "127.0.0.1,localhost")]
    hosts: String,
    /// Instead of the API server's certificate, issue a client certificate for this user
    /// (`<user>.crt`, `<user>.key`; the CN), for `capstan apiserver --client-ca-file`.
    #[arg(long)]
    user: Option<String>,
    /// The client certificate's group (its O). One: rcgen writes one value per attribute
    /// type (the API server reads any number of O values).
    #[arg(long, requires = "user")]
    group: Option<String>,
    /// Instead of the API server's certificate, issue the serving certificate of this
    /// node's agent port (`<node>-agent-serving.crt`, `.key`) for --hosts (the node's
    /// addresses; its name is added), for `capstan agent --tls-cert-file`.
    #[arg(long, conflicts_with = "user")]
    node: Option<String>,
}

pub fn run(args: CertsArgs) -> Result<(), String> {
    let hosts: Vec<String> = args
        .hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    private_dir(&args.dir)?;
    let ca = Ca::load_or_create(&args.dir)?;
    if let Some(node) = &args.node {
        let file = file_name("--node", node)?;
        let (chain, key) = ca.agent_serving(node, &agent_hosts(node, &hosts))?;
        write(&args.dir.join(format!("{file}-agent-serving.crt")), &chain, true)?;
        write(&args.dir.join(format!("{file}-agent-serving.key")), &key, true)?;
        println!(
            "wrote {file}-agent-serving.crt and {file}-agent-serving.key in {}",
            args.dir.display()
        );
        return Ok(());
    }
    if let Some(user) = &args.user {
        let file = file_name("--user", user)?;
        let (cert, key) = ca.client(user, args.group.as_deref())?;
        write(&args.dir.join(format!("{file}.crt")), &cert, true)?;
        write(&args.dir.join(format!("{file}.key")), &key, true)?;
        println!("wrote {file}.crt and {file}.key in {}", args.dir.display());
        return Ok(());
    }
    // The first administrator: cluster-admin through the system:masters group.
    let (cert, key) = ca.client("admin", Some("system:masters"))?;
    write(&args.dir.join("admin.crt"), &cert, true)?;
    write(&args.dir.join("admin.key"), &key, true)?;
    let (chain, key) = ca.serving(&hosts)?;
    write(&args.dir.join("apiserver.crt"), &chain, true)?;
    write(&args.dir.join("apiserver.key"), &key, true)?;
    println!(
        "wrote {} (CA ca.crt; API server apiserver.crt for {}; client admin.crt, group system:masters)",
        args.dir.display(),
        hosts.join(", ")
    );
    Ok(())
}

/// A user's (or node's) name as a file name: refused if it could leave the directory.
fn file_name<'a>(flag: &str, name: &'a str) -> Result<&'a str, String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.len() > 200 {
        return Err(format!("{flag} {name:?}: not usable as a file name"));
    }
    Ok(name)
}

/// What a node agent's serving certificate names: `hosts` (its addresses, which the API
/// server dials), then the node's name, once each.
pub fn agent_hosts(node: &str, hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(hosts.len() + 1);
    for h in hosts.iter().map(String::as_str).chain([node]) {
        if !h.is_empty() && !out.iter().any(|o| o == h) {
            out.push(h.to_owned());
        }
    }
    out
}

/// The cluster CA: its certificate and what issues certificates it verifies.
pub struct Ca {
    /// The CA's certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// The CA of `dir` (`ca.crt`, `ca.key`): read if both files are there, else made and
    /// written (the key with mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Ca, String> {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let pem = std::fs::read_to_string(&crt).map_err(|e| format!("reading {}: {e}", crt.display()))?;
            let key_pem = std::fs::read_to_string(&key).map_err(|e| format!("reading {}: {e}", key.display()))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
            // A certificate it issues names the CA's subject and is signed by its key: the
            // same parameters as when it was made give both, without parsing the file.
            return Ok(Ca {
                pem,
                issuer: Issuer::new(ca_params()?, key),
            });
        }
        let key_pair = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
        let params = ca_params()?;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| format!("making the CA: {e}"))?;
        write(&crt, &cert.pem(), true)?;
        write(&key, &key_pair.serialize_pem(), true)?;
        Ok(Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key_pair),
        })
    }

    /// The admin's client certificate and key (group system:masters), PEM: kept in `dir`
    /// (admin.crt, admin.key), made if missing.
    pub fn admin(&self, dir: &Path) -> Result<(String, String), String> {
        let (crt, key) = (dir.join("admin.crt"), dir.join("admin.key"));
        if crt.exists() && key.exists() {
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()));
            return Ok((read(&crt)?, read(&key)?));
        }
        let (cert_pem, key_pem) = self.client("admin", Some("system:masters"))?;
        write(&crt, &cert_pem, true)?;
        write(&key, &key_pem, true)?;
        Ok((cert_pem, key_pem))
    }

    /// A client certificate for `user` (the CN) in `group` (the O), and its key: PEM.
    /// One group: rcgen's distinguished name keeps one value per attribute type.
    pub fn client(&self, user: &str, group: Option<&str>) -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        let mut dn = name(user);
        if let Some(g) = group {
            dn.push(DnType::OrganizationName, g);
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        validity(&mut params, SERVING_DAYS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("issuing {user}'s certificate: {e}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The API server's certificate for `hosts` (IP addresses and DNS names) with the CA
    /// after it, and its key: PEM.
    pub fn serving(&self, hosts: &[String]) -> Result<(String, String), String> {
        self.for_hosts(name("kube-apiserver"), hosts, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A store member's peer certificate: it serves its peers and dials them with it.
    pub fn peer(&self, hosts: &[String]) -> Result<(String, String), String> {
        self.for_hosts(
            name("kube-apiserver"),
            hosts,
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// Node `node`'s agent port certificate for `hosts` (see [`agent_hosts`]), named as
    /// the kubelet's serving certificate (`system:node:<node>` in `system:nodes`), with
    /// the CA after it, and its key: PEM.
    pub fn agent_serving(&self, node: &str, hosts: &[String]) -> Result<(String, String), String> {
        let mut dn = name(&format!("system:node:{node}"));
        dn.push(DnType::OrganizationName, "system:nodes");
        self.for_hosts(dn, hosts, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    fn for_hosts(
        &self,
        subject: DistinguishedName,
        hosts: &[String],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<(String, String), String> {
        if hosts.is_empty() || hosts.len() > HOSTS_MAX {
            return Err(format!(
                "give 1 to {HOSTS_MAX} names or addresses for a serving certificate"
            ));
        }
        let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| format!("the hosts {hosts:?}: {e}"))?;
        params.distinguished_name = subject;
        params.extended_key_usages = usages.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        validity(&mut params, SERVING_DAYS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("issuing a certificate for {hosts:?}: {e}"))?;
        Ok((format!("{}{}", cert.pem(), self.pem), key.serialize_pem()))
    }
}

fn ca_params() -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = name("capstan-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_DAYS);
    Ok(params)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// From an hour ago (clocks a little apart) for `days`.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// The key ServiceAccount tokens are signed with (`sa.key` in `dir`, P-256, made if
/// missing), as PKCS#8 DER.
pub fn service_account_key(dir: &Path) -> Result<Vec<u8>, String> {
    let path = dir.join("sa.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
            write(&path, &key.serialize_pem(), true)?;
            key
        }
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    Ok(key.serialize_der())
}

/// Creates `dir` (and its parents) if missing, readable by its owner only.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes `text` to `path`; `secret`: mode 0600 from the start (never readable by others,
/// not even for a moment). Every certificate and key is written so; a kubeconfig
/// without a key need not be.
pub fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    options.mode(if secret { 0o600 } else { 0o644 });
    let mut f = options
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_certificate_names_its_addresses_then_its_node_once() {
        let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            agent_hosts("n1", &hosts(&["10.0.0.21", "", "10.0.0.21", "n1"])),
            hosts(&["10.0.0.21", "n1"])
        );
        assert_eq!(agent_hosts("n1", &[]), hosts(&["n1"]));
        assert!(file_name("--node", "../x").is_err());
        assert_eq!(file_name("--node", "worker1"), Ok("worker1"));
    }
}
