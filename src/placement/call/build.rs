//! Image builds on another node's provider (`iarnet.build.v1.ImageBuild`),
//! both sides: [`RemoteBuilder`] sends a build context to the provider's
//! owner in bounded, checksummed chunks and passes the output on as it
//! comes; [`Assembler`] checks and joins the chunks on the owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use ring::digest::{digest, Context, SHA256};
use tonic::Status;

use crate::proto::build::{
    build_event, build_request, BuildEvent, BuildHeader, BuildRequest, ContextChunk, ContextEnd,
};
use crate::resource::{BuildLog, Candidate, ImageBuilder, ResourceError};

/// Bytes per chunk sent: small enough to interleave with other calls on
/// the channel, big enough that framing costs little.
pub const CHUNK: usize = 256 << 10;
/// The most one chunk may carry; a bigger one is refused.
pub const MAX_CHUNK: usize = 1 << 20;
/// A build that says nothing for this long is given up.
const SILENCE: Duration = Duration::from_secs(600);
/// Memory reserved up front for a context, whatever its header claims.
const PREALLOCATE: usize = 64 << 20;

/// The events of one build call, as the owner sends them.
pub type BuildEvents = BoxStream<'static, Result<BuildEvent, Status>>;

/// Opens one `ImageBuild/Build` call on a node. The requests are slices
/// of one context buffer, sent as the call's flow control allows.
#[async_trait::async_trait]
pub trait BuildCaller: Send + Sync + 'static {
    async fn build(
        &self,
        owner_addr: &str,
        requests: Vec<BuildRequest>,
    ) -> Result<BuildEvents, Status>;
}

/// The requests that carry `context`: the header, chunks of at most
/// `chunk` bytes (slices of `context`, not copies), then the end.
pub fn requests(
    mut header: BuildHeader,
    context: Bytes,
    chunk: usize,
) -> impl Iterator<Item = BuildRequest> + Send + 'static {
    header.context_size = context.len() as u64;
    let whole = digest(&SHA256, &context).as_ref().to_vec();
    let chunk = chunk.clamp(1, MAX_CHUNK);
    let count = context.len().div_ceil(chunk);
    let part = |p| BuildRequest { part: Some(p) };
    std::iter::once(part(build_request::Part::Header(header)))
        .chain((0..count).map(move |i| {
            let start = i * chunk;
            let data = context.slice(start..(start + chunk).min(context.len()));
            part(build_request::Part::Chunk(ContextChunk {
                offset: start as u64,
                sha256: digest(&SHA256, &data).as_ref().to_vec(),
                data,
            }))
        }))
        .chain(std::iter::once(part(build_request::Part::End(
            ContextEnd { sha256: whole },
        ))))
}

/// A context checked and whole, with the header that asked for it.
#[derive(Debug)]
pub struct Received {
    pub header: BuildHeader,
    pub context: Bytes,
    pub chunks: u32,
}

/// The owner's side: takes the requests in order, checks each chunk's
/// offset and checksum and the whole context's, and refuses a context
/// over `max_bytes` before holding it.
pub struct Assembler {
    header: BuildHeader,
    buf: BytesMut,
    whole: Context,
    chunks: u32,
}

impl Assembler {
    /// Starts from the first request, which must be the header.
    pub fn start(first: BuildRequest, max_bytes: u64) -> Result<Assembler, Status> {
        let Some(build_request::Part::Header(header)) = first.part else {
            return Err(Status::invalid_argument(
                "the first BuildRequest must carry the header (provider_id, tag, dockerfile, context_size)",
            ));
        };
        for (field, value) in [
            ("provider_id", &header.provider_id),
            ("tag", &header.tag),
            ("dockerfile", &header.dockerfile),
        ] {
            if value.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "header.{field} is empty: set it"
                )));
            }
        }
        if header.context_size > max_bytes {
            return Err(Status::invalid_argument(format!(
                "header.context_size: the build context is {} bytes, over this node's max_checkout_size of {max_bytes}; shrink it (a .dockerignore helps)",
                header.context_size
            )));
        }
        let reserve = (header.context_size as usize).min(PREALLOCATE);
        Ok(Assembler {
            header,
            buf: BytesMut::with_capacity(reserve),
            whole: Context::new(&SHA256),
            chunks: 0,
        })
    }

    pub fn header(&self) -> &BuildHeader {
        &self.header
    }

    /// Takes the next request: None while more are due, the context once
    /// the end arrived and everything checked out.
    pub fn push(&mut self, req: BuildRequest) -> Result<Option<Received>, Status> {
        match req.part {
            Some(build_request::Part::Chunk(c)) => {
                self.chunk(c)?;
                Ok(None)
            }
            Some(build_request::Part::End(end)) => self.end(end).map(Some),
            Some(build_request::Part::Header(_)) => Err(Status::invalid_argument(
                "a second header: one call builds one image",
            )),
            None => Err(Status::invalid_argument(
                "a BuildRequest with no part: send a header, chunks, then the end",
            )),
        }
    }

    fn chunk(&mut self, c: ContextChunk) -> Result<(), Status> {
        let at = self.buf.len() as u64;
        if c.data.len() > MAX_CHUNK {
            return Err(Status::invalid_argument(format!(
                "chunk at offset {} carries {} bytes, over the {MAX_CHUNK} a chunk may carry",
                c.offset,
                c.data.len()
            )));
        }
        if c.offset != at {
            return Err(Status::data_loss(format!(
                "chunk at offset {} arrived where offset {at} was due: chunks were lost or reordered; send the build again",
                c.offset
            )));
        }
        if at + c.data.len() as u64 > self.header.context_size {
            return Err(Status::invalid_argument(format!(
                "the chunks run past header.context_size ({} bytes)",
                self.header.context_size
            )));
        }
        if digest(&SHA256, &c.data).as_ref() != c.sha256.as_slice() {
            return Err(Status::data_loss(format!(
                "chunk at offset {} does not match its sha256: it was damaged on the way; send the build again",
                c.offset
            )));
        }
        self.whole.update(&c.data);
        self.buf.extend_from_slice(&c.data);
        self.chunks += 1;
        Ok(())
    }

    fn end(&mut self, end: ContextEnd) -> Result<Received, Status> {
        let got = self.buf.len() as u64;
        if got != self.header.context_size {
            return Err(Status::data_loss(format!(
                "the context ended after {got} of header.context_size {} bytes; send the build again",
                self.header.context_size
            )));
        }
        let whole = std::mem::replace(&mut self.whole, Context::new(&SHA256)).finish();
        if whole.as_ref() != end.sha256.as_slice() {
            return Err(Status::data_loss(
                "the context does not match the sha256 in its end: send the build again",
            ));
        }
        Ok(Received {
            header: std::mem::take(&mut self.header),
            context: std::mem::take(&mut self.buf).freeze(),
            chunks: self.chunks,
        })
    }
}

/// Builds on another node's provider, through its owner.
pub struct RemoteBuilder {
    candidate: Candidate,
    caller: Arc<dyn BuildCaller>,
    caller_id: String,
    on_behalf_of: String,
    chunk: usize,
}

impl RemoteBuilder {
    pub fn new(candidate: Candidate, caller: Arc<dyn BuildCaller>, caller_id: &str) -> Self {
        RemoteBuilder {
            candidate,
            caller,
            caller_id: caller_id.to_string(),
            on_behalf_of: String::new(),
            chunk: CHUNK,
        }
    }

    /// Builds made for `who`, a management client of this node.
    pub fn on_behalf_of(mut self, who: &str) -> Self {
        self.on_behalf_of = who.to_string();
        self
    }

    fn failed(&self, status: &Status) -> ResourceError {
        let id = &self.candidate.id;
        match status.code() {
            // An owner from before builds travelled: another one may serve.
            tonic::Code::Unimplemented => ResourceError::Unavailable {
                provider: id.clone(),
                reason: format!(
                    "its owner {} does not serve image builds (an older iarnet)",
                    self.candidate.owner_id
                ),
            },
            _ => ResourceError::from_status(id, status),
        }
    }
}

#[async_trait::async_trait]
impl ImageBuilder for RemoteBuilder {
    async fn build_image(
        &self,
        context: Bytes,
        dockerfile: &str,
        tag: &str,
        args: &BTreeMap<String, String>,
        log: BuildLog,
    ) -> Result<Vec<String>, ResourceError> {
        let header = BuildHeader {
            caller_id: self.caller_id.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            provider_id: self.candidate.id.clone(),
            tag: tag.to_string(),
            dockerfile: dockerfile.to_string(),
            args: args.clone().into_iter().collect(),
            context_size: 0,
        };
        let requests = requests(header, context, self.chunk).collect();
        let mut events = self
            .caller
            .build(&self.candidate.owner_addr, requests)
            .await
            .map_err(|s| self.failed(&s))?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(SILENCE, events.next()).await;
            let event = match next {
                Err(_) => {
                    return Err(ResourceError::Unavailable {
                        provider: self.candidate.id.clone(),
                        reason: format!("the build said nothing for {}s", SILENCE.as_secs()),
                    })
                }
                Ok(None) => {
                    return Err(ResourceError::Unavailable {
                        provider: self.candidate.id.clone(),
                        reason: "the owner ended the build call before it finished".into(),
                    })
                }
                Ok(Some(Err(s))) => return Err(self.failed(&s)),
                Ok(Some(Ok(e))) => e,
            };
            match event.event {
                Some(build_event::Event::Line(line)) => {
                    log.line(&line);
                    out.push(line);
                }
                Some(build_event::Event::Done(_)) => return Ok(out),
                Some(build_event::Event::Received(_)) | None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BuildHeader {
        BuildHeader {
            provider_id: "p".into(),
            tag: "t:1".into(),
            dockerfile: "Dockerfile".into(),
            ..Default::default()
        }
    }

    fn assemble(reqs: Vec<BuildRequest>, max: u64) -> Result<Received, Status> {
        let mut it = reqs.into_iter();
        let mut a = Assembler::start(it.next().unwrap(), max)?;
        for r in it {
            if let Some(done) = a.push(r)? {
                return Ok(done);
            }
        }
        panic!("no end");
    }

    fn context(n: usize) -> Bytes {
        (0..n)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn a_context_arrives_whole_in_bounded_chunks() {
        for (n, chunk) in [(0, 10), (1, 10), (10, 10), (1001, 100), (3 << 20, CHUNK)] {
            let ctx = context(n);
            let reqs: Vec<_> = requests(header(), ctx.clone(), chunk).collect();
            assert_eq!(reqs.len(), n.div_ceil(chunk) + 2);
            for r in &reqs {
                if let Some(build_request::Part::Chunk(c)) = &r.part {
                    assert!(c.data.len() <= chunk);
                }
            }
            let got = assemble(reqs, u64::MAX).unwrap();
            assert_eq!(got.context, ctx);
            assert_eq!(got.header.context_size, n as u64);
            assert_eq!(got.chunks as usize, n.div_ceil(chunk));
        }
    }

    #[test]
    fn damaged_lost_or_oversized_contexts_are_refused() {
        let chunks = |f: &dyn Fn(&mut Vec<BuildRequest>)| {
            let mut reqs: Vec<_> = requests(header(), context(1000), 100).collect();
            f(&mut reqs);
            assemble(reqs, 10_000).unwrap_err()
        };
        let chunk = |r: &mut BuildRequest| match &mut r.part {
            Some(build_request::Part::Chunk(c)) => c.clone(),
            _ => unreachable!(),
        };
        let damaged = chunks(&|reqs| {
            let mut c = chunk(&mut reqs[3]);
            let mut data = c.data.to_vec();
            data[5] ^= 1;
            c.data = data.into();
            reqs[3].part = Some(build_request::Part::Chunk(c));
        });
        assert_eq!(damaged.code(), tonic::Code::DataLoss);
        assert!(damaged.message().contains("offset 200"), "{damaged:?}");

        let lost = chunks(&|reqs| {
            reqs.remove(4);
        });
        assert_eq!(lost.code(), tonic::Code::DataLoss);
        assert!(lost.message().contains("offset 300 was due"), "{lost:?}");

        let truncated = chunks(&|reqs| {
            reqs.remove(reqs.len() - 2);
        });
        assert_eq!(truncated.code(), tonic::Code::DataLoss);

        let wrong_whole = chunks(&|reqs| {
            let n = reqs.len() - 1;
            reqs[n].part = Some(build_request::Part::End(ContextEnd {
                sha256: vec![0; 32],
            }));
        });
        assert_eq!(wrong_whole.code(), tonic::Code::DataLoss);

        let over = requests(header(), context(1000), 100).collect();
        let e = assemble(over, 999).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("max_checkout_size"), "{e:?}");

        let mut no_header: Vec<_> = requests(header(), context(10), 5).collect();
        no_header.remove(0);
        let e = assemble(no_header, 100).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        let mut h = header();
        h.tag.clear();
        let e = assemble(requests(h, context(10), 5).collect(), 100).unwrap_err();
        assert!(e.message().contains("header.tag"), "{e:?}");
    }

    #[test]
    fn a_chunk_over_the_bound_is_refused() {
        let big = Bytes::from(vec![1u8; MAX_CHUNK + 1]);
        let mut h = header();
        h.context_size = big.len() as u64;
        let mut a = Assembler::start(
            BuildRequest {
                part: Some(build_request::Part::Header(h)),
            },
            u64::MAX,
        )
        .unwrap();
        let e = a
            .push(BuildRequest {
                part: Some(build_request::Part::Chunk(ContextChunk {
                    offset: 0,
                    sha256: digest(&SHA256, &big).as_ref().to_vec(),
                    data: big,
                })),
            })
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
