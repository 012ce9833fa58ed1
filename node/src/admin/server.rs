//! The admin gRPC service inside the daemon. Reads of contracts go straight
//! to the index; everything that touches live state is a command to the
//! event loop, answered on a oneshot, so the loop stays the only writer.
//! The same service answers on the Unix socket (its mode is the access
//! check) and, when configured, on loopback TCP behind a bearer token.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use fulcrum_proto::v1 as wire;
use fulcrum_proto::v1::admin_server::{Admin, AdminServer};
use fulcrum_protocol::ids::{ContractId, PlacementId};
use fulcrum_protocol::messages::TerminationReason;
use fulcrum_protocol::placement::PlacementState;
use futures::Stream;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{BroadcastStream, TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use super::token::{AdminToken, RequireToken};
use crate::daemon::{AdminCommand, Handles, contract_view, now_ms};
use crate::placement::placement_view;
use crate::store::backup::write_backup;
use crate::store::export::write_export;

/// Bytes per chunk of a streamed export.
const EXPORT_CHUNK: usize = 256 * 1024;

/// Sends what is written as export chunks; fails once the client is gone.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<wire::ExportChunk, Status>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        self.tx
            .blocking_send(Ok(wire::ExportChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct AdminService {
    handles: Handles,
}

impl AdminService {
    /// A service over the daemon's handles.
    pub fn new(handles: Handles) -> AdminService {
        AdminService { handles }
    }

    /// The admin view of one indexed contract.
    fn view(&self, id: ContractId) -> Result<wire::ContractView, Status> {
        let entry = self
            .handles
            .index
            .contract(&id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no contract {id}")))?;
        contract_view(id, &entry, now_ms()).map_err(Status::internal)
    }

    /// The admin view of one indexed placement.
    fn placement(&self, id: PlacementId) -> Result<wire::PlacementView, Status> {
        let index = &self.handles.index;
        let entry = index
            .placement(&id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no placement {id}")))?;
        placement_view(index, &entry, now_ms()).map_err(Status::internal)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> AdminCommand) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.handles.commands.send(make(tx)).await.map_err(|_| Status::unavailable("daemon is shutting down"))?;
        rx.await.map_err(|_| Status::unavailable("daemon is shutting down"))
    }
}

fn contract_id(bytes: &[u8]) -> Result<ContractId, Status> {
    ContractId::from_slice(bytes).ok_or_else(|| Status::invalid_argument("contract id must be 32 bytes"))
}

fn placement_id(bytes: &[u8]) -> Result<PlacementId, Status> {
    PlacementId::from_slice(bytes).ok_or_else(|| Status::invalid_argument("placement id must be 16 bytes"))
}

fn failed(message: String) -> Status {
    Status::failed_precondition(message)
}

/// Terminates each of a placement's `contracts` with `terminate`, going on
/// after a failure; the error names every contract not terminated, and why.
async fn terminate_each<F, T>(placement: PlacementId, contracts: &[ContractId], mut terminate: F) -> Result<(), Status>
where
    F: FnMut(ContractId) -> T,
    T: Future<Output = Result<Result<(), String>, Status>>,
{
    let mut failures = Vec::new();
    for &id in contracts {
        match terminate(id).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{id}: {why}")),
            Err(status) => failures.push(format!("{id}: {}", status.message())),
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(failed(format!(
        "placement {placement}: {} of {} active contracts not terminated: {}",
        failures.len(),
        contracts.len(),
        failures.join("; ")
    )))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<wire::StatusQuery>) -> Result<Response<wire::NodeStatus>, Status> {
        Ok(Response::new(self.ask(AdminCommand::Status).await?))
    }

    async fn peers(&self, _: Request<wire::PeersQuery>) -> Result<Response<wire::PeerList>, Status> {
        Ok(Response::new(self.ask(AdminCommand::Peers).await?))
    }

    async fn publish_offer(
        &self,
        req: Request<wire::PublishOfferRequest>,
    ) -> Result<Response<wire::OfferView>, Status> {
        let req = req.into_inner();
        let offer = req.offer.ok_or_else(|| Status::invalid_argument("offer is missing"))?;
        let view = self.ask(|tx| AdminCommand::Publish(offer, req.ttl_ms, tx)).await?.map_err(failed)?;
        Ok(Response::new(view))
    }

    async fn withdraw_offer(
        &self,
        req: Request<wire::WithdrawOfferRequest>,
    ) -> Result<Response<wire::OfferView>, Status> {
        let id = req.into_inner().offer_id;
        let view = self.ask(|tx| AdminCommand::Withdraw(id, tx)).await?.map_err(failed)?;
        Ok(Response::new(view))
    }

    async fn list_offers(&self, req: Request<wire::ListOffersRequest>) -> Result<Response<wire::OfferList>, Status> {
        let req = req.into_inner();
        let list = self.ask(|tx| AdminCommand::ListOffers(req, tx)).await?.map_err(Status::invalid_argument)?;
        Ok(Response::new(list))
    }

    async fn place(&self, req: Request<wire::PlaceRequest>) -> Result<Response<wire::PlaceResult>, Status> {
        let req = req.into_inner();
        let result = self.ask(|tx| AdminCommand::Place(req, tx)).await?.map_err(failed)?;
        Ok(Response::new(result))
    }

    async fn list_contracts(
        &self,
        req: Request<wire::ListContractsRequest>,
    ) -> Result<Response<wire::ContractList>, Status> {
        let active_only = req.into_inner().active_only;
        let now = now_ms();
        let entries = self.handles.index.contracts().map_err(|e| Status::internal(e.to_string()))?;
        let mut contracts = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            let view = contract_view(id, &entry, now).map_err(Status::internal)?;
            if !active_only || view.state == wire::ContractState::Active as i32 {
                contracts.push(view);
            }
        }
        Ok(Response::new(wire::ContractList { contracts }))
    }

    async fn show_contract(&self, req: Request<wire::ContractQuery>) -> Result<Response<wire::ContractView>, Status> {
        let id = contract_id(&req.into_inner().contract_id)?;
        Ok(Response::new(self.view(id)?))
    }

    async fn terminate_contract(
        &self,
        req: Request<wire::TerminateContractRequest>,
    ) -> Result<Response<wire::ContractView>, Status> {
        let req = req.into_inner();
        let id = contract_id(&req.contract_id)?;
        let reason = TerminationReason::try_from(req.reason).unwrap_or(TerminationReason::Unspecified);
        self.ask(|tx| AdminCommand::Terminate(id, reason, tx)).await?.map_err(failed)?;
        Ok(Response::new(self.view(id)?))
    }

    async fn list_placements(
        &self,
        _: Request<wire::ListPlacementsRequest>,
    ) -> Result<Response<wire::PlacementList>, Status> {
        let index = &self.handles.index;
        let entries = index.placements().map_err(|e| Status::internal(e.to_string()))?;
        let now = now_ms();
        let placements = entries
            .iter()
            .map(|entry| placement_view(index, entry, now).map_err(Status::internal))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(wire::PlacementList { placements }))
    }

    async fn show_placement(
        &self,
        req: Request<wire::PlacementQuery>,
    ) -> Result<Response<wire::PlacementView>, Status> {
        let id = placement_id(&req.into_inner().placement_id)?;
        Ok(Response::new(self.placement(id)?))
    }

    /// Terminates every contract of the placement that is still active,
    /// each as `TerminateContract` would. One that fails does not stop the
    /// others; the error then names every contract not terminated.
    async fn terminate_placement(
        &self,
        req: Request<wire::TerminatePlacementRequest>,
    ) -> Result<Response<wire::PlacementView>, Status> {
        let req = req.into_inner();
        let id = placement_id(&req.placement_id)?;
        let reason = TerminationReason::try_from(req.reason).unwrap_or(TerminationReason::Unspecified);
        let view = self.placement(id)?;
        if view.state == PlacementState::Committing.as_str() {
            return Err(failed(format!("placement {id} is still committing; terminate it once it has ended")));
        }
        let active = view
            .contracts
            .iter()
            .filter(|c| c.state == wire::ContractState::Active as i32)
            .map(|c| contract_id(&c.contract_id))
            .collect::<Result<Vec<_>, _>>()?;
        terminate_each(id, &active, |contract_id| self.ask(move |tx| AdminCommand::Terminate(contract_id, reason, tx)))
            .await?;
        Ok(Response::new(self.placement(id)?))
    }

    type WatchContractsStream = Pin<Box<dyn Stream<Item = Result<wire::ContractEvent, Status>> + Send>>;

    async fn watch_contracts(
        &self,
        _: Request<wire::WatchContractsRequest>,
    ) -> Result<Response<Self::WatchContractsStream>, Status> {
        let index = self.handles.index.clone();
        let stream = BroadcastStream::new(self.handles.events.subscribe()).filter_map(move |notice| {
            let notice = match notice {
                Ok(n) => n,
                // A watcher too slow to keep up is told, not silently skipped.
                Err(_) => return Some(Err(Status::data_loss("watcher fell behind; events were dropped"))),
            };
            let view = index
                .contract(&notice.contract_id)
                .ok()
                .flatten()
                .and_then(|e| contract_view(notice.contract_id, &e, now_ms()).ok());
            Some(Ok(wire::ContractEvent { event: notice.event.into(), contract: view, at_ms: notice.at_ms }))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn audit_evidence(&self, _: Request<wire::EvidenceQuery>) -> Result<Response<wire::EvidenceList>, Status> {
        Ok(Response::new(self.ask(AdminCommand::Evidence).await?))
    }

    async fn audit_prove(&self, req: Request<wire::ProveRequest>) -> Result<Response<wire::ProveResult>, Status> {
        let id = contract_id(&req.into_inner().contract_id)?;
        let result = self.ask(|tx| AdminCommand::Prove(id, tx)).await?.map_err(failed)?;
        Ok(Response::new(result))
    }

    async fn publish_revocation(
        &self,
        req: Request<wire::PublishRevocationRequest>,
    ) -> Result<Response<wire::PublishRevocationResult>, Status> {
        let w = req.into_inner().revocation.ok_or_else(|| Status::invalid_argument("revocation is missing"))?;
        let revocation = fulcrum_protocol::membership::Revocation::decode(
            &prost::Message::encode_to_vec(&w),
            &fulcrum_protocol::Limits::default(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result = self.ask(|tx| AdminCommand::Revoke(Box::new(revocation), tx)).await?.map_err(failed)?;
        Ok(Response::new(result))
    }

    type AuditExportStream = Pin<Box<dyn Stream<Item = Result<wire::ExportChunk, Status>> + Send>>;

    async fn audit_export(&self, _: Request<wire::ExportRequest>) -> Result<Response<Self::AuditExportStream>, Status> {
        let snapshot = self.ask(AdminCommand::Export).await?.map_err(failed)?;
        Ok(Response::new(stream_file("export", move |writer| write_export(&snapshot, writer).map(drop))))
    }

    type BackupStream = Pin<Box<dyn Stream<Item = Result<wire::ExportChunk, Status>> + Send>>;

    /// The same snapshot as an export (the log up to a checkpoint signed
    /// now), as a backup, with the key when asked.
    async fn backup(&self, req: Request<wire::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let include_key = req.into_inner().include_key;
        let snapshot = self.ask(AdminCommand::Export).await?.map_err(failed)?;
        let me = self.handles.me;
        Ok(Response::new(stream_file("backup", move |writer| {
            write_backup(&snapshot, me, include_key, writer).map(drop)
        })))
    }
}

/// Streams what `write` writes as chunks, from a blocking task (it reads
/// files); a failure ends the stream with an internal error naming `what`.
fn stream_file(
    what: &'static str,
    write: impl FnOnce(ChunkWriter) -> anyhow::Result<()> + Send + 'static,
) -> Pin<Box<dyn Stream<Item = Result<wire::ExportChunk, Status>> + Send>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(EXPORT_CHUNK) };
        if let Err(e) = write(writer) {
            let _ = tx.blocking_send(Err(Status::internal(format!("{what} failed: {e:#}"))));
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Where the admin API is served: always the Unix socket, and optionally a
/// TCP listener on which every request must carry the bearer token.
#[derive(Debug)]
pub struct Endpoints {
    /// The socket path (bound by [`serve`], mode 0600).
    pub socket: PathBuf,
    /// A TCP listener bound by [`bind_tcp`], and the token it requires.
    pub tcp: Option<(TcpListener, AdminToken)>,
}

/// Binds the admin socket (mode 0600), serves it and the TCP endpoint if
/// there is one, until `shutdown`.
pub async fn serve(
    endpoints: Endpoints,
    handles: Handles,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Endpoints { socket, tcp } = endpoints;
    let listener = bind(&socket)?;
    let service = AdminService::new(handles);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let on_socket = tonic::transport::Server::builder()
        .add_service(AdminServer::new(service.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), until_stopped(stopped.clone()));
    let on_tcp = async {
        let Some((listener, token)) = tcp else { return Ok(()) };
        tonic::transport::Server::builder()
            .add_service(AdminServer::with_interceptor(service.clone(), RequireToken::new(&token)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), until_stopped(stopped.clone()))
            .await
    };
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
        Ok::<(), tonic::transport::Error>(())
    };
    let served = tokio::try_join!(on_socket, on_tcp, signal);
    let _ = std::fs::remove_file(&socket);
    served?;
    Ok(())
}

/// Binds the TCP admin endpoint. Whether the address may be used at all
/// (loopback, or remote asked for) is the configuration's check.
pub async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot bind the TCP admin endpoint {addr}: {e}"))
}

/// Binds a Unix socket readable and writable by the owner only. The data
/// dir lock is held, so a leftover socket file is ours to replace.
pub fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot remove stale admin socket {}: {e}", socket.display()),
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("cannot bind admin socket {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn terminating_a_placement_tries_every_contract_and_names_those_that_failed() {
        let ids: Vec<ContractId> = (1..=3u8).map(|b| ContractId::from_slice(&[b; 32]).unwrap()).collect();
        let mut tried = Vec::new();
        let placement = PlacementId::from_slice(&[9; 16]).unwrap();
        let result = terminate_each(placement, &ids, |id| {
            tried.push(id);
            let answer = match id.to_vec()[0] {
                1 => Ok(Err(format!("no active contract {id}"))),
                2 => Ok(Ok(())),
                _ => Err(Status::unavailable("daemon is shutting down")),
            };
            std::future::ready(answer)
        })
        .await;
        assert_eq!(tried, ids, "every contract is tried");
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let message = status.message();
        assert!(message.starts_with(&format!("placement {placement}: 2 of 3 active contracts not terminated: ")));
        assert!(message.contains(&format!("{}: no active contract", ids[0])), "{message}");
        assert!(!message.contains(&ids[1].to_string()), "{message}");
        assert!(message.contains(&format!("{}: daemon is shutting down", ids[2])), "{message}");

        let all = terminate_each(placement, &ids, |_| std::future::ready(Ok(Ok(())))).await;
        assert!(all.is_ok());
    }
}
