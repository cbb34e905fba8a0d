//! `zerogate revoke`: refuse a credential (an OIDC token, a session, any credential id the audit
//! log names) or a principal (every credential of a user, device, workload or API client) from
//! the next request on, in every gateway on this data directory. Certificates and access keys
//! have their own commands (`ca revoke`, `ca access-key revoke`); this covers what no CA issued.
#![allow(clippy::print_stdout, reason = "this module is the command's output")]

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use zerogate_control::Origin;
use zerogate_control::server::unix_now;
use zerogate_store::RevokedKind;

use crate::identity_cmd::{DataDirArg, service, when};

/// `zerogate revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// A credential id as the audit log names it: `jti:…` (an OIDC token), `sid:…` (a session),
    /// either from any issuer or scoped to one (`jti:…@https://issuer`), `sub:…@issuer`,
    /// `serial:…`, `akid:…`.
    #[arg(long, conflicts_with_all = ["principal", "list"])]
    credential: Option<String>,
    /// A principal as a Cedar uid, e.g. 'Zerogate::User::"alice"': every credential of theirs.
    #[arg(long, conflicts_with = "list")]
    principal: Option<String>,
    /// Why (kept in the store and the event log).
    #[arg(long, default_value = "unspecified")]
    reason: String,
    /// List what is revoked instead.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// Runs `zerogate revoke`.
pub fn run(args: RevokeArgs) -> Result<ExitCode> {
    let dir = args.data_dir.get();
    let service = service(&dir)?;
    let (kind, id) = match (args.credential, args.principal) {
        (Some(id), None) => (RevokedKind::Credential, id),
        (None, Some(id)) => (RevokedKind::Principal, id),
        _ if args.list => {
            for revoked in service.revoked_access()? {
                println!("{}\t{}\t{}\t{}", when(revoked.revoked_at), revoked.kind.as_str(), revoked.id, revoked.reason);
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => bail!("give --credential ID or --principal UID (or --list)"),
    };
    if service.revoke_access(kind, &id, &args.reason, unix_now(), Origin::default())? {
        println!("revoked {} {id}: refused from the next request on", kind.as_str());
    } else {
        println!("{} {id} was already revoked", kind.as_str());
    }
    Ok(ExitCode::SUCCESS)
}
