//! One lazily connected channel per peer address, reused across gossip
//! rounds and CallProvider calls.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Status;

use crate::mesh::limits::MAX_MESSAGE;
use crate::proto::build::image_build_client::ImageBuildClient;
use crate::proto::directory::directory_client::DirectoryClient;
use crate::proto::peer::peer_service_client::PeerServiceClient;
use crate::security::tls::Tls;

/// One lazily connected channel per peer address, reused across rounds.
pub struct Pool {
    clients: Mutex<HashMap<String, Pooled>>,
    timeout: Duration,
    keep_alive: Duration,
    tls: Option<ClientTlsConfig>,
}

/// A channel and when it was last handed out.
struct Pooled {
    channel: Channel,
    used: Instant,
}

impl Pool {
    /// Channels with `timeout` to connect and to answer an HTTP/2 ping, and
    /// a ping every `keep_alive`: a connection whose path went silent (a
    /// partition) is closed within about `keep_alive + timeout`, so the
    /// first call after the path is back dials afresh instead of waiting
    /// on TCP retransmissions that back off for seconds.
    pub fn new(timeout: Duration, keep_alive: Duration, tls: Option<Tls>) -> Pool {
        Pool {
            clients: Mutex::default(),
            timeout,
            keep_alive,
            tls: tls.map(|t| t.client()),
        }
    }

    pub fn client(&self, addr: &str) -> Result<PeerServiceClient<Channel>, Status> {
        Ok(PeerServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The directory service on the same channel.
    pub fn directory(&self, addr: &str) -> Result<DirectoryClient<Channel>, Status> {
        Ok(DirectoryClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The image build service on the same channel.
    pub fn builds(&self, addr: &str) -> Result<ImageBuildClient<Channel>, Status> {
        Ok(ImageBuildClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The resource service on the same channel (group deploys forwarded
    /// to their leader).
    pub fn resources(
        &self,
        addr: &str,
    ) -> Result<
        crate::proto::resource::resource_service_client::ResourceServiceClient<Channel>,
        Status,
    > {
        Ok(
            crate::proto::resource::resource_service_client::ResourceServiceClient::new(
                self.channel(addr)?,
            )
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        )
    }

    /// The swarm's peer service on the same channel.
    pub fn swarm(
        &self,
        addr: &str,
    ) -> Result<crate::proto::swarm::swarm_peer_client::SwarmPeerClient<Channel>, Status> {
        Ok(crate::proto::swarm::swarm_peer_client::SwarmPeerClient::new(self.channel(addr)?))
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get_mut(addr) {
            c.used = Instant::now();
            return Ok(c.channel.clone());
        }
        let bad = |e: tonic::transport::Error| {
            Status::invalid_argument(format!("bad peer address {addr:?}: {e}"))
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(bad)?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(self.keep_alive)
            .keep_alive_timeout(self.timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
        }
        let channel = endpoint.connect_lazy();
        clients.insert(
            addr.to_string(),
            Pooled {
                channel: channel.clone(),
                used: Instant::now(),
            },
        );
        Ok(channel)
    }

    /// Forgets the channel to `addr` after a call on it timed out, so the
    /// next call dials afresh. A connection whose packets were dropped (a
    /// partition, a peer that rebooted) stays open on this side, its TCP
    /// retransmissions backing off for seconds after the path is back;
    /// every probe queued on it would time out and suspect a live peer.
    pub fn forget(&self, addr: &str) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.remove(addr);
    }

    /// Drops channels to addresses no longer in `keep`, and those not
    /// handed out for `idle`. Gossip picks peers at random, so without the
    /// second rule a node would end up holding (and pinging) a connection
    /// to every member; redialling a peer met again later is cheap.
    pub fn retain(&self, keep: &HashSet<String>, idle: Duration) {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|addr, c| keep.contains(addr) && now.duration_since(c.used) < idle);
    }

    /// Channels held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_channels_and_departed_peers_are_dropped() {
        let pool = Pool::new(Duration::from_millis(100), Duration::from_secs(1), None);
        for addr in ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"] {
            pool.channel(addr).unwrap();
        }
        let keep: HashSet<String> = ["127.0.0.1:1", "127.0.0.1:2"].map(String::from).into();
        pool.retain(&keep, Duration::from_secs(60));
        assert_eq!(pool.len(), 2, "the departed peer's channel is dropped");
        pool.retain(&keep, Duration::ZERO);
        assert_eq!(pool.len(), 0, "idle channels are dropped");
    }
}
