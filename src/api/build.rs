//! `iarnet.build.v1.ImageBuild`: other nodes send a build context for one
//! of this node's providers and read the build's output as it is written.
//! The peer surface's rules apply (certificates under mutual TLS, access
//! lists, the CallProvider budget); the header names the calling node,
//! checked against its certificate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::calls::{observe_call, Side};
use crate::node::shared::Shared;
use crate::placement::call::build::{Assembler, Received};
use crate::placement::Manager;
use crate::proto::build::image_build_server::ImageBuild;
use crate::proto::build::{build_event, BuildDone, BuildEvent, BuildRequest, ContextReceived};
use crate::resource::BuildLog;
use crate::security::Caller;

/// A sender that goes quiet this long mid-context is given up on.
const STALL: Duration = Duration::from_secs(60);
/// Events buffered for a slow reader before the build's output waits.
const EVENTS: usize = 256;

pub struct BuildApi {
    shared: Arc<Shared>,
    manager: Arc<Manager>,
    /// Cancelled when the node stops: running builds answer UNAVAILABLE.
    cancel: CancellationToken,
}

impl BuildApi {
    pub fn new(shared: Arc<Shared>, manager: Arc<Manager>, cancel: CancellationToken) -> Self {
        BuildApi {
            shared,
            manager,
            cancel,
        }
    }

    /// Takes the whole context, checked chunk by chunk.
    async fn receive(
        &self,
        caller: Option<&Caller>,
        incoming: &mut Streaming<BuildRequest>,
    ) -> Result<Received, Status> {
        let first = next(incoming).await?.ok_or_else(|| {
            Status::invalid_argument(
                "the call carried nothing: send a header, chunks, then the end",
            )
        })?;
        let max = self.shared.config.max_checkout_bytes;
        let mut assembler = Assembler::start(first, max)?;
        self.shared
            .security
            .check_claim(caller, &assembler.header().caller_id)?;
        loop {
            let Some(req) = next(incoming).await? else {
                return Err(Status::data_loss(
                    "the call ended before the context's end: send the build again",
                ));
            };
            if let Some(got) = assembler.push(req)? {
                return Ok(got);
            }
        }
    }
}

/// The next request, or DEADLINE_EXCEEDED when the sender went quiet.
async fn next(incoming: &mut Streaming<BuildRequest>) -> Result<Option<BuildRequest>, Status> {
    tokio::time::timeout(STALL, incoming.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the build context stalled: nothing came for {}s",
                STALL.as_secs()
            ))
        })?
}

fn event(e: build_event::Event) -> Result<BuildEvent, Status> {
    Ok(BuildEvent { event: Some(e) })
}

#[tonic::async_trait]
impl ImageBuild for BuildApi {
    type BuildStream = BoxStream<'static, Result<BuildEvent, Status>>;

    async fn build(
        &self,
        request: Request<Streaming<BuildRequest>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let started = Instant::now();
        self.shared.check_running()?;
        let caller = request.extensions().get::<Caller>().cloned();
        let mut incoming = request.into_inner();
        let got = self.receive(caller.as_ref(), &mut incoming).await;
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                observe_call::<()>(
                    &self.shared.metrics,
                    Side::Server,
                    "build",
                    &Err(e.clone()),
                    started,
                );
                return Err(e);
            }
        };
        let mut who = caller.map_or_else(|| "local".to_string(), |c| c.to_string());
        if !got.header.on_behalf_of.is_empty() {
            who = format!("{} via {who}", got.header.on_behalf_of);
        }
        let (tx, rx) = mpsc::channel(EVENTS);
        let _ = tx
            .send(event(build_event::Event::Received(ContextReceived {
                bytes: got.context.len() as u64,
                chunks: got.chunks,
            })))
            .await;
        let (shared, manager, cancel) = (
            self.shared.clone(),
            self.manager.clone(),
            self.cancel.clone(),
        );
        tokio::spawn(async move {
            let detail = json!({
                "provider": got.header.provider_id,
                "tag": got.header.tag,
                "bytes": got.context.len(),
            });
            let tag = got.header.tag.clone();
            let (log, mut lines) = BuildLog::channel();
            let build = manager.serve_build(got, log);
            tokio::pin!(build);
            let result = loop {
                tokio::select! {
                    _ = cancel.cancelled() => break Err(Status::unavailable("the node is stopping: send the build again")),
                    Some(line) = lines.recv() => {
                        // A reader that left does not stop the build.
                        let _ = tx.send(event(build_event::Event::Line(line))).await;
                    }
                    r = &mut build => break r,
                }
            };
            while let Ok(line) = lines.try_recv() {
                let _ = tx.send(event(build_event::Event::Line(line))).await;
            }
            let (outcome, error) = match &result {
                Ok(_) => ("built", String::new()),
                Err(s) => ("failed", s.message().to_string()),
            };
            let mut detail = detail;
            detail["error"] = json!(error);
            shared.audit.record("build", &who, outcome, detail);
            let reply = result.map(|out| BuildEvent {
                event: Some(build_event::Event::Done(BuildDone {
                    tag,
                    lines: out.len() as u32,
                })),
            });
            observe_call(&shared.metrics, Side::Server, "build", &reply, started);
            let _ = tx.send(reply).await;
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }
}
