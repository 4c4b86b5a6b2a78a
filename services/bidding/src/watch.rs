//! `WatchAuction` on the wire. Every watcher of an auction receives the same
//! bytes for a live event, so an event is encoded once per commit (in
//! [`Published::watch_frames`]) and each stream only copies those bytes into
//! its HTTP/2 buffer: 10,000 watchers of one auction cost 10,000 copies, not
//! 10,000 conversions and encodings. A stream is a state machine polled by
//! its own HTTP/2 stream task, with no task or channel of its own between the
//! shard's broadcast and the socket; its live events wait in the auction's
//! bounded broadcast channel, so a slow watcher is resynced from a snapshot
//! ([`broadcast::error::RecvError::Lagged`]) instead of growing memory.
//!
//! tonic's generated server encodes each message with prost, so [`Routes`]
//! serves this one method itself with [`FrameCodec`] and hands every other
//! path to the generated server.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use auction_engine::Event;
use auction_proto::v1 as pb;
use auction_proto::v1::bidding_service_server::BiddingServiceServer;
use prost::Message as _;
use prost::bytes::{BufMut as _, Bytes};
use tokio::sync::broadcast;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert;
use crate::error::BiddingError;
use crate::hub::{Hub, Live, Published};
use crate::rpc::{Bidding, refused};
use crate::shard::Metadata;

/// The HTTP/2 path of `WatchAuction`.
const WATCH_AUCTION_PATH: &str = "/auction.v1.BiddingService/WatchAuction";
/// Events replayed from the log per query when a stream resumes.
const RESUME_PAGE: u32 = 500;

/// One message of a `WatchAuction` stream.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A message for this stream alone (snapshot, heartbeat, replayed or
    /// forwarded event), encoded when sent.
    Message(Box<pb::WatchAuctionResponse>),
    /// A live event, already encoded as a `WatchAuctionResponse` and shared
    /// by every watcher of the auction.
    Encoded(Bytes),
}

impl Frame {
    /// The message itself (decoding a shared frame), for callers that want
    /// messages rather than bytes.
    pub fn into_message(self) -> Result<pb::WatchAuctionResponse, Status> {
        match self {
            Self::Message(message) => Ok(*message),
            Self::Encoded(bytes) => pb::WatchAuctionResponse::decode(bytes).map_err(|error| {
                Status::from(BiddingError::Internal(format!(
                    "a shared WatchAuction frame does not decode: {error}"
                )))
            }),
        }
    }
}

impl From<pb::WatchAuctionResponse> for Frame {
    fn from(message: pb::WatchAuctionResponse) -> Self {
        Self::Message(Box::new(message))
    }
}

/// A `WatchAuction` stream of frames.
pub type FrameStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<Frame, Status>> + Send + 'static>>;

/// `WatchAuction`'s codec: requests decode with prost, frames encode as
/// themselves.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = pb::WatchAuctionRequest;
    type Encoder = FrameEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder
    }
}

/// Writes a frame's protobuf bytes (tonic adds the gRPC length prefix).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Frame::Message(message) => message.encode(dst).map_err(|error| {
                Status::from(BiddingError::Internal(format!(
                    "WatchAuction message not encoded: {error}"
                )))
            }),
            Frame::Encoded(bytes) => {
                dst.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

/// Decodes a `WatchAuctionRequest`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = pb::WatchAuctionRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::WatchAuctionRequest::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

/// The service's routes: `WatchAuction` with [`FrameCodec`], every other
/// method through tonic's generated server. Both run with tonic's default
/// limits and no compression; a setting added to one must be added to the
/// other.
#[derive(Debug, Clone)]
pub struct Routes {
    service: crate::Service,
    generated: BiddingServiceServer<crate::Service>,
}

impl Routes {
    /// The routes of `service`.
    pub fn new(service: crate::Service) -> Self {
        Self {
            generated: BiddingServiceServer::new(service.clone()),
            service,
        }
    }
}

impl NamedService for Routes {
    const NAME: &'static str = <BiddingServiceServer<crate::Service> as NamedService>::NAME;
}

/// `WatchAuction` as a tonic server-streaming method.
struct WatchMethod(crate::Service);

impl tonic::server::ServerStreamingService<pb::WatchAuctionRequest> for WatchMethod {
    type Response = Frame;
    type ResponseStream = FrameStream;
    type Future = BoxFuture<Response<FrameStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchAuctionRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.watch_frames(request).await })
    }
}

impl<B> Service<http::Request<B>> for Routes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_AUCTION_PATH {
            return self.generated.call(request);
        }
        let method = WatchMethod(self.service.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(FrameCodec);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

impl Bidding {
    /// `WatchAuction`: a snapshot (fresh start) or the events after the
    /// client's sequence from the log (resume), then every committed event,
    /// gap-free; a watcher that falls behind is resynced with a snapshot.
    pub async fn watch_auction(
        &self,
        request: Request<pb::WatchAuctionRequest>,
    ) -> Result<FrameStream, Status> {
        let request = request.into_inner();
        let auction_id = convert::uuid("auction_id", &request.auction_id).map_err(refused)?;
        // Subscribe before reading, so nothing committed in between is missed;
        // duplicates are dropped by sequence below.
        // `release` before `live`: locals drop in reverse order, so if the
        // client goes while this call awaits, the receiver is gone when the
        // guard releases the channel.
        let release = Release {
            hub: Arc::clone(&self.hub),
            fanout: self.fanout.clone(),
            auction_id,
        };
        let live = self.hub.subscribe(auction_id);
        if let Some(fanout) = &self.fanout {
            fanout.follow(auction_id).await;
        }
        let (view, metadata) = match self.committed(auction_id).await {
            Ok(committed) => committed,
            Err(status) => {
                // No channel left behind for an auction nobody can watch.
                drop(live);
                drop(release);
                return Err(status);
            }
        };
        let watcher = Watcher {
            bidding: self.clone(),
            auction_id,
            metadata,
            start: Some((request.resume_after_sequence, view)),
            sent: 0,
            replay: None,
            current: None,
            finished: false,
            live,
            _release: release,
        };
        Ok(Box::pin(futures::stream::unfold(
            watcher,
            |mut watcher| async move { watcher.next().await.map(|item| (item, watcher)) },
        )))
    }

    /// The log's events of `auction_id` after wire sequence `after` up to
    /// `until` (inclusive), each with the number of bids after it in the
    /// range (a bid event's count is the view's minus those).
    async fn missed(
        &self,
        auction_id: Uuid,
        after: u64,
        until: u64,
    ) -> Result<VecDeque<(Event, u32)>, Status> {
        let mut missed: Vec<Event> = Vec::new();
        let mut position = after;
        // Wire sequence N is engine sequence N - 1, so "after N" starts at
        // engine sequence N.
        'pages: while position < until {
            let page = self
                .log
                .events_from(auction_id, position, RESUME_PAGE)
                .await
                .map_err(BiddingError::Unavailable)?;
            if page.is_empty() {
                break;
            }
            for (engine_seq, text) in page {
                let seq = convert::wire_sequence(engine_seq);
                if seq > until {
                    break 'pages;
                }
                let event = serde_json::from_str::<Event>(&text)
                    .map_err(|_| BiddingError::Internal(format!("event {seq} unreadable")))?;
                missed.push(event);
                position = seq;
            }
        }
        let later = convert::later_bids(&missed);
        Ok(missed.into_iter().zip(later).collect())
    }
}

/// Drops an auction's channel (and its cross-node subscription) when its
/// last watcher goes. Declared after the receiver in [`Watcher`], so the
/// receiver is gone when this runs.
struct Release {
    hub: Arc<Hub>,
    fanout: Option<Arc<crate::fanout::Fanout>>,
    auction_id: Uuid,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.hub.release(self.auction_id);
        if let Some(fanout) = &self.fanout {
            fanout.unfollow(self.auction_id);
        }
    }
}

/// One `WatchAuction` stream.
struct Watcher {
    bidding: Bidding,
    auction_id: Uuid,
    metadata: Arc<Metadata>,
    /// Where the stream starts (the client's resume point and the auction
    /// when the stream opened), until the first frame.
    start: Option<(u64, auction_engine::AuctionView)>,
    /// The last wire sequence sent or covered by a snapshot.
    sent: u64,
    /// Events read back from the log, waiting to be sent.
    replay: Option<Replay>,
    /// The commit being sent and the index of its next event.
    current: Option<(Arc<Published>, usize)>,
    /// An error was sent: the stream ends.
    finished: bool,
    /// The live events; dropped before `_release` (field order).
    live: broadcast::Receiver<Live>,
    _release: Release,
}

/// Events read back from the log (a resume, or a gap in the live events),
/// each with its count of later bids, and the auction they are converted
/// against.
struct Replay {
    view: auction_engine::AuctionView,
    events: VecDeque<(Event, u32)>,
}

impl Watcher {
    /// The next frame, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Result<Frame, Status>> {
        if self.finished {
            return None;
        }
        match self.advance().await {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => None,
            Err(status) => {
                self.finished = true;
                Some(Err(status))
            }
        }
    }

    async fn advance(&mut self) -> Result<Option<Frame>, Status> {
        use pb::watch_auction_response::Message;
        if let Some((resume_after, view)) = self.start.take() {
            // Wire sequences: the last event is `next_seq` (see
            // convert::wire_sequence).
            let current = view.next_seq;
            self.sent = current;
            if resume_after == 0 || resume_after > current {
                let reason = if resume_after == 0 {
                    pb::SnapshotReason::Initial
                } else {
                    pb::SnapshotReason::ResumeUnknown
                };
                let snapshot =
                    self.bidding
                        .snapshot(self.auction_id, &view, &self.metadata, reason);
                return Ok(Some(Frame::from(pb::WatchAuctionResponse {
                    message: Some(Message::Snapshot(snapshot)),
                })));
            }
            // Resume: what the client missed, from the log.
            let events = self
                .bidding
                .missed(self.auction_id, resume_after, current)
                .await?;
            self.replay = Some(Replay { view, events });
            return Ok(Some(Frame::from(self.bidding.heartbeat(current))));
        }
        loop {
            if let Some(replay) = &mut self.replay
                && let Some((event, later_bids)) = replay.events.pop_front()
            {
                let seq = convert::wire_sequence(event.seq);
                // A resume's replay runs up to the opening point, which
                // `sent` already covers; a gap's replay is all new.
                self.sent = self.sent.max(seq);
                let message = Message::Event(convert::event(
                    self.auction_id,
                    &event,
                    &replay.view,
                    &self.metadata,
                    later_bids,
                ));
                return Ok(Some(Frame::from(pb::WatchAuctionResponse {
                    message: Some(message),
                })));
            }
            self.replay = None;
            if let Some((published, index)) = &mut self.current {
                while *index < published.events.len() {
                    let at = *index;
                    *index += 1;
                    let seq = convert::wire_sequence(published.events[at].seq);
                    if seq <= self.sent {
                        continue;
                    }
                    self.sent = seq;
                    return Ok(Some(Frame::Encoded(published.watch_frames()[at].clone())));
                }
                self.current = None;
            }
            // Heartbeats and shutdown come through the auction's channel
            // too (`Hub::run`): a stream waits on nothing else, so a woken
            // stream polls no timer and no shared shutdown signal.
            match self.live.recv().await {
                Ok(Live::Commit(published)) => {
                    // A commit that did not reach this node (Redis pub/sub is
                    // at most once) shows as a gap: the log fills it first.
                    if let Some(first) = published.events.first() {
                        let first = convert::wire_sequence(first.seq);
                        if first > self.sent + 1 {
                            let mut missed = self
                                .bidding
                                .missed(self.auction_id, self.sent, first - 1)
                                .await?;
                            // Converted against the view after `published`:
                            // its bids come after every missed event too.
                            let after = convert::visible_bids(&published.events);
                            for (_, later_bids) in &mut missed {
                                *later_bids = later_bids.saturating_add(after);
                            }
                            self.replay = Some(Replay {
                                view: published.view.clone(),
                                events: missed,
                            });
                        }
                    }
                    self.current = Some((published, 0));
                }
                Ok(Live::Beat) => {
                    return Ok(Some(Frame::from(self.bidding.heartbeat(self.sent))));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow: a fresh snapshot replaces what was missed.
                    let (fresh, _) = self.bidding.committed(self.auction_id).await?;
                    self.sent = fresh.next_seq;
                    self.replay = None;
                    let snapshot = self.bidding.snapshot(
                        self.auction_id,
                        &fresh,
                        &self.metadata,
                        pb::SnapshotReason::SlowConsumer,
                    );
                    return Ok(Some(Frame::from(pb::WatchAuctionResponse {
                        message: Some(Message::Snapshot(snapshot)),
                    })));
                }
                // The hub closes its channels at shutdown, and only then.
                Err(broadcast::error::RecvError::Closed) => {
                    return if self.bidding.shutdown.is_triggered() {
                        Err(BiddingError::ShuttingDown.into())
                    } else {
                        Ok(None)
                    };
                }
            }
        }
    }
}
