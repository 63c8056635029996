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
//!
//! Keys are written with mode 0600. Left out so far (issue 10): certificates for the etcd
//! API and the Raft peers, and generation by `capstan up` and `capstan master` on first
//! start.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Hosts one certificate may name.
const HOSTS_MAX: usize = 64;
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
}

pub fn run(args: CertsArgs) -> Result<(), String> {
    let hosts: Vec<String> = args
        .hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() || hosts.len() > HOSTS_MAX {
        return Err(format!("--hosts: give 1 to {HOSTS_MAX} names or addresses"));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let (ca_pem, issuer) = ca(&args.dir)?;
    if let Some(user) = &args.user {
        let groups: Vec<&str> = args.group.as_deref().into_iter().collect();
        client(&args.dir, &issuer, user, &groups)?;
        println!(
            "wrote {}.crt and {user}.key in {}",
            file_name(user)?,
            args.dir.display()
        );
        return Ok(());
    }
    // The first administrator: cluster-admin through the system:masters group.
    client(&args.dir, &issuer, "admin", &["system:masters"])?;
    let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
    let mut params = CertificateParams::new(hosts.clone()).map_err(|e| format!("--hosts: {e}"))?;
    params.distinguished_name = name("kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut params, SERVING_DAYS);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("issuing the API server's certificate: {e}"))?;
    write(
        &args.dir.join("apiserver.crt"),
        &format!("{}{ca_pem}", cert.pem()),
        false,
    )?;
    write(&args.dir.join("apiserver.key"), &key.serialize_pem(), true)?;
    println!(
        "wrote {} (CA ca.crt; API server apiserver.crt for {}; client admin.crt, group system:masters)",
        args.dir.display(),
        hosts.join(", ")
    );
    Ok(())
}

/// A user's name as a file name: refused if it could leave the directory.
fn file_name(user: &str) -> Result<&str, String> {
    if user.is_empty() || user.contains('/') || user.starts_with('.') || user.len() > 200 {
        return Err(format!("--user {user:?}: not usable as a file name"));
    }
    Ok(user)
}

/// `<user>.crt` and `<user>.key`: a client certificate for `user` (the CN) in `groups`
/// (each an O), issued by the CA.
fn client(dir: &Path, issuer: &Issuer<'static, KeyPair>, user: &str, groups: &[&str]) -> Result<(), String> {
    let file = file_name(user)?;
    let key = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = name(user);
    // One each: a second push of a type replaces the first (rcgen's distinguished name
    // is a map).
    assert!(groups.len() <= 1, "invariant: one group per certificate");
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut params, SERVING_DAYS);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| format!("issuing {user}'s certificate: {e}"))?;
    write(&dir.join(format!("{file}.crt")), &cert.pem(), false)?;
    write(&dir.join(format!("{file}.key")), &key.serialize_pem(), true)
}

/// The CA's certificate (PEM) and an issuer of certificates it verifies: read from `dir`
/// if both files are there, else made and written.
fn ca(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), String> {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if crt.exists() && key.exists() {
        let pem = std::fs::read_to_string(&crt).map_err(|e| format!("reading {}: {e}", crt.display()))?;
        let key_pem = std::fs::read_to_string(&key).map_err(|e| format!("reading {}: {e}", key.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
        // A certificate it issues names the CA's subject and is signed by its key: the
        // same parameters as when it was made give both, without parsing the file.
        return Ok((pem, Issuer::new(ca_params()?, key)));
    }
    let key_pair = KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
    let params = ca_params()?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| format!("making the CA: {e}"))?;
    write(&crt, &cert.pem(), false)?;
    write(&key, &key_pair.serialize_pem(), true)?;
    Ok((cert.pem(), Issuer::new(params, key_pair)))
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

/// Writes `text` to `path`; `secret`: mode 0600 from the start (never readable by others,
/// not even for a moment).
fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
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
