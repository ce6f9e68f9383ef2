//! `iarnet cert`: create the mesh CA and node certificates for mutual TLS.

use std::path::{Path, PathBuf};

use crate::security::certs::{self, Pem, Validity};

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// A new cluster CA: DIR/ca.pem and DIR/ca-key.pem (keep the key offline).
    Ca {
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A name for the mesh, shown in the CA's subject.
        #[arg(long, default_value = "iarnet")]
        cluster: String,
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// A node certificate signed by the CA: DIR/node.pem, DIR/node-key.pem
    /// and a copy of DIR/ca.pem, ready for tls.cert_file, tls.key_file and tls.ca_file.
    Node {
        /// The directory holding ca.pem and ca-key.pem.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The node id: the certificate's common name, which peers match
        /// against the id in the node's gossip.
        #[arg(long)]
        id: String,
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The mesh's tls.server_name, carried by every node certificate.
        #[arg(long, default_value = "iarnet")]
        server_name: String,
        /// More DNS names or IPs clients may verify (repeatable).
        #[arg(long = "san", value_name = "NAME|IP")]
        sans: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

/// Runs the command; returns the files written.
pub fn run(cmd: CertCommand) -> Result<Vec<PathBuf>, String> {
    match cmd {
        CertCommand::Ca { out, cluster, days } => {
            let ca = certs::new_ca(&cluster, Validity::days(days)).map_err(|e| e.to_string())?;
            write_pair(&out, "ca", &ca)
        }
        CertCommand::Node {
            ca_dir,
            id,
            out,
            server_name,
            sans,
            days,
        } => {
            let read = |name: &str| {
                let path = ca_dir.join(name);
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "cannot read {}: {e} (create the CA with `iarnet cert ca --out DIR`)",
                        path.display()
                    )
                })
            };
            let ca = Pem {
                cert: read("ca.pem")?,
                key: read("ca-key.pem")?,
            };
            let node = certs::node_cert(&ca, &id, &server_name, &sans, Validity::days(days))
                .map_err(|e| e.to_string())?;
            let mut written = write_pair(&out, "node", &node)?;
            let ca_copy = out.join("ca.pem");
            if ca_copy != ca_dir.join("ca.pem") {
                write(&ca_copy, &ca.cert, false)?;
                written.push(ca_copy);
            }
            Ok(written)
        }
    }
}

fn write_pair(dir: &Path, stem: &str, pem: &Pem) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    write(&cert, &pem.cert, false)?;
    write(&key, &pem.key, true)?;
    Ok(vec![cert, key])
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
