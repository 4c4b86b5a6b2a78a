//! Forwarding in a cluster: a command for a shard this node does not lead
//! goes to the shard's leader (as etcd names it) with the caller's own
//! credentials, so the leader authenticates and authorizes it itself. A call
//! that was already forwarded once is never forwarded again (two nodes with
//! stale views cannot bounce it forever): it is answered UNAVAILABLE with
//! reason `NOT_LEADER`, a retry hint and the leader's URL when known, and the
//! client retries with the same `request_id`, which the shard deduplicates.

use std::collections::HashMap;
use std::time::Duration;

use auction_platform::ServiceError;
use auction_proto::v1::bidding_service_client::BiddingServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::rpc::Bidding;
use crate::shard::Shards;

/// Marks a forwarded call (its value is the forwarding node).
pub const FORWARDED_HEADER: &str = "x-auction-forwarded-by";

/// Headers a forwarded call carries on: the caller's credentials, its
/// request id and its deadline.
const FORWARDED_METADATA: [&str; 4] =
    ["authorization", "x-api-key", "x-request-id", "grpc-timeout"];

/// This node does not lead the shard and will not forward.
#[derive(Debug, thiserror::Error)]
#[error("this node does not lead shard {shard}")]
pub struct NotLeaderHere {
    shard: u32,
    leader: Option<String>,
}

impl ServiceError for NotLeaderHere {
    fn code(&self) -> Code {
        Code::Unavailable
    }

    fn reason(&self) -> &str {
        "NOT_LEADER"
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::from([("shard".to_owned(), self.shard.to_string())]);
        if let Some(leader) = &self.leader {
            metadata.insert("leader".to_owned(), leader.clone());
        }
        metadata
    }

    fn retry_after(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

impl Bidding {
    /// Where a call about `auction_id` goes: `None` to serve it here (this
    /// node leads the shard, or there is no cluster, or the id is invalid
    /// and the local handler will say so), or the leader's client.
    pub fn forward_target<T>(
        &self,
        request: &Request<T>,
        auction_id: &str,
    ) -> Result<Option<BiddingServiceClient<Channel>>, Status> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let Ok(auction_id) = Uuid::parse_str(auction_id) else {
            return Ok(None);
        };
        let shard = Shards::shard_of(auction_id, self.shards.count());
        if self.shards.leads(shard) {
            return Ok(None);
        }
        let leader = cluster.leader(shard);
        let already_forwarded = request.metadata().contains_key(FORWARDED_HEADER);
        match leader {
            Some(leader) if leader.node != cluster.node() && !already_forwarded => {
                match cluster.client(&leader.url) {
                    Some(client) => Ok(Some(client)),
                    None => Err(auction_platform::to_status(&NotLeaderHere {
                        shard,
                        leader: Some(leader.url),
                    })),
                }
            }
            leader => Err(auction_platform::to_status(&NotLeaderHere {
                shard,
                leader: leader.map(|leader| leader.url),
            })),
        }
    }

    /// The call as the leader should receive it: the message, the caller's
    /// credentials and request id, and the forwarding mark.
    pub fn forwarded<T>(&self, request: Request<T>) -> Request<T> {
        let (metadata, _, message) = request.into_parts();
        let mut forwarded = Request::new(message);
        for name in FORWARDED_METADATA {
            if let Some(value) = metadata.get(name) {
                forwarded.metadata_mut().insert(name, value.clone());
            }
        }
        if let Some(cluster) = &self.cluster
            && let Ok(node) = cluster.node().parse()
        {
            forwarded.metadata_mut().insert(FORWARDED_HEADER, node);
        }
        forwarded
    }
}
