//! What a guest may reach outside its own memory: by default nothing (no
//! environment, no files, no sockets), and only what its spec grants.

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx};

use super::GuestError;
use crate::spec::Grants;

/// The WASI context of a job with `grants`.
pub(super) fn wasi_ctx(grants: &Grants) -> Result<WasiCtx, GuestError> {
    let mut builder = WasiCtx::builder();
    for (key, value) in &grants.env {
        builder.env(key, value);
    }
    for dir in &grants.dirs {
        builder
            .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly)
            .map_err(|e| GuestError::Dir {
                dir: dir.host.clone(),
                cause: e.into(),
            })?;
    }
    if grants.network {
        let grants = grants.clone();
        builder
            .socket_addr_check(move |address, usage| {
                // Outbound only: the implicit bind of a connect or send, and
                // connections and datagrams to what the grant reaches. No
                // listening, no explicit binds.
                let permitted = match usage {
                    SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                        address.ip().is_unspecified() && address.port() == 0
                    }
                    SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                        grants.reaches(address.ip())
                    }
                    SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
                };
                Box::pin(async move { permitted })
            })
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    }
    Ok(builder.build())
}
