//! The gRPC face of the directory: unpacks requests, resolves the caller's session from the
//! verified token, calls `Directory`, and maps errors to statuses (through `Error`).

use crate::Error;
use crate::directory::Directory;
use crate::error::Refusal;
use std::pin::Pin;
use std::sync::Arc;
use svs_common::proto::directory::directory_server::Directory as DirectoryApi;
use svs_common::proto::directory::*;
use svs_common::token::Claims;
use svs_server::serve::ConnectionInfo;
use svs_server::serve::address::PerAddressRate;
use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Implements `svs.directory.v1.Directory`.
#[derive(Debug)]
pub(crate) struct DirectoryService {
    directory: Arc<Directory>,
    /// Registrations waiting for or doing their RSA work (`--max-pending-registrations`).
    registrations: Arc<Semaphore>,
    /// Threads doing RSA work at once (`--crypto-threads`). Without this bound a burst of
    /// registrations runs as many 3072-bit signatures in parallel as there are blocking threads,
    /// the OS shares the cores among all of them, and the runtime that answers keepalives and
    /// moves every stream starves: clients time out and the service melts down instead of
    /// queueing.
    crypto: Arc<Semaphore>,
    /// Names not yet bound that one address may claim (`--max-new-names-per-address-per-hour`):
    /// names cost nothing to make, and each holds a mailbox and a send budget.
    new_names: Arc<PerAddressRate>,
    new_names_per_hour: u32,
}

impl DirectoryService {
    pub(crate) fn new(directory: Arc<Directory>, limits: &crate::config::Limits) -> Self {
        Self {
            directory,
            registrations: Arc::new(Semaphore::new(limits.max_pending_registrations)),
            crypto: Arc::new(Semaphore::new(limits.crypto_threads.max(1))),
            new_names: Arc::new(PerAddressRate::new(
                f64::from(limits.max_new_names_per_address_per_hour) / 3600.0,
                f64::from(limits.max_new_names_per_address_per_hour),
            )),
            new_names_per_hour: limits.max_new_names_per_address_per_hour,
        }
    }

    /// Takes one of the address's new-name tokens when `name` is not bound yet (a name already
    /// bound registers as always, whoever asks: its key decides). Taken before the signature
    /// is checked, so a failed attempt at a new name counts too.
    async fn check_new_name_budget(
        &self,
        address: Option<svs_server::serve::address::AddressKey>,
        name: &str,
    ) -> Result<(), Error> {
        if self.new_names_per_hour == 0 {
            // A closed group: only names bound before register.
            if self.directory.registrar.is_bound(name).await? {
                return Ok(());
            }
            return Err(Refusal::PermissionDenied(format!(
                "this directory takes no new names (its operator closed registration); {name} is not registered here"
            )).into());
        }
        let Some(address) = address else {
            return Ok(());
        };
        if self.directory.registrar.is_bound(name).await? || self.new_names.allow(address) {
            return Ok(());
        }
        Err(Refusal::RetryLater {
            message: format!(
                "this address has claimed {} new names within the hour, the most it may; a name already registered still signs in",
                self.new_names_per_hour
            ),
            after: self.new_names.refill_time(),
        }.into())
    }

    /// Runs RSA work on a blocking thread once one of the `--crypto-threads` slots is free.
    async fn crypto<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let slot = self
            .crypto
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the directory is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(Error::Task)?
        .map_err(Status::from)
    }

    fn session<T>(&self, request: &Request<T>) -> Result<crate::registry::SessionRef, Status> {
        session(&self.directory, request)
    }
}

/// The caller's live session, from the token the auth layer verified.
pub(crate) fn session<T>(
    directory: &Directory,
    request: &Request<T>,
) -> Result<crate::registry::SessionRef, Status> {
    let claims = request.extensions().get::<Claims>().ok_or_else(|| {
        Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
    })?;
    Ok(directory.registry.session(claims)?)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

/// Ends the session when its stream is dropped, whether the client left or the server closed it.
struct StreamGuard {
    directory: Arc<Directory>,
    canonical: String,
    session_id: [u8; 16],
    subscriber: Arc<crate::subscriber::Subscriber>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.directory.registry.subscription_ended(
            &self.canonical,
            self.session_id,
            &self.subscriber,
        );
    }
}

#[tonic::async_trait]
impl DirectoryApi for DirectoryService {
    async fn get_challenge(
        &self,
        request: Request<GetChallengeRequest>,
    ) -> Result<Response<GetChallengeResponse>, Status> {
        let r = request.into_inner();
        let issued = self
            .directory
            .registrar
            .challenge(&r.name, &r.public_key_der)?;
        Ok(Response::new(GetChallengeResponse {
            challenge: issued.challenge.to_vec().into(),
            service_id: issued.service_id,
            expires_at_ms: issued.expires_at_ms,
        }))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let address = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(ConnectionInfo::address);
        let r = request.into_inner();
        self.check_new_name_budget(address, &r.name).await?;
        let directory = self.directory.clone();
        let permit = self
            .registrations
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::RetryLater {
                message: "too many registrations in progress; try again in a moment".into(),
                after: std::time::Duration::from_secs(1),
            })?;
        // RSA verification and token signing take milliseconds: off the reactor, bounded. The
        // permit is held from the statement to the session.
        let proving = directory.clone();
        let proven = self
            .crypto(move || {
                proving
                    .registrar
                    .prove(&r.name, &r.public_key_der, &r.challenge, &r.signature)
            })
            .await?;
        directory.registrar.claim(&proven).await?;
        let registered = self
            .crypto(move || {
                let _permit = permit;
                directory.registrar.open_session(proven)
            })
            .await?;
        Ok(Response::new(RegisterResponse {
            token: registered.token,
            expires_at_ms: registered.expires_at_ms,
            fingerprint: registered.fingerprint,
        }))
    }

    async fn list_peers(
        &self,
        request: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        self.session(&request)?;
        Ok(Response::new(self.directory.registry.snapshot()))
    }

    async fn lookup_keys(
        &self,
        request: Request<LookupKeysRequest>,
    ) -> Result<Response<LookupKeysResponse>, Status> {
        self.session(&request)?;
        Ok(Response::new(
            self.directory
                .relay
                .lookup(&request.into_inner().names)
                .await?,
        ))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let session = self.session(&request)?;
        let takes_mail = !request.get_ref().without_mail;
        let (subscriber, mut outbox) = self.directory.registry.subscribe(&session, takes_mail)?;
        let guard = StreamGuard {
            directory: self.directory.clone(),
            canonical: session.canonical.clone(),
            session_id: session.id,
            subscriber: subscriber.clone(),
        };
        let stream = async_stream::stream! {
            let _guard = guard;
            while let Some(item) = outbox.next(&subscriber).await {
                yield item;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let session = self.session(&request)?;
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Refusal::InvalidArgument("the request carries no envelope".into()))?;
        let (header, outcomes) = self.directory.relay.send(&session, envelope).await?;
        Ok(Response::new(SendResponse {
            message_id: header.message_id.to_vec().into(),
            outcomes,
        }))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let session = self.session(&request)?;
        let request = request.into_inner();
        let acknowledged = self
            .directory
            .relay
            .ack(&session, &request.message_ids, &request.receipt_seqs)
            .await?;
        Ok(Response::new(AckResponse { acknowledged }))
    }

    async fn quit(&self, request: Request<QuitRequest>) -> Result<Response<QuitResponse>, Status> {
        let session = self.session(&request)?;
        self.directory.registry.quit(&session);
        Ok(Response::new(QuitResponse {}))
    }
}
