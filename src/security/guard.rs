//! A tower layer in front of every gRPC service: who is calling, may they,
//! and how often. Runs before a message is decoded, so a refused caller
//! costs no parsing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::Security;

#[derive(Clone)]
pub struct GuardLayer(pub Arc<Security>);

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            security: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    security: Arc<Security>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let ext = req.extensions();
        let (remote, certs) = match ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            Some(tls) => (tls.get_ref().remote_addr(), tls.peer_certs()),
            None => (
                ext.get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr),
                None,
            ),
        };
        let cert_id = certs
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| super::certs::common_name(c));
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.security.admit(req.uri().path(), remote, cert_id, auth) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                let answer = self.inner.call(req);
                Box::pin(async move {
                    let mut resp = answer.await?;
                    oversize_is_resource_exhausted(&mut resp);
                    Ok(resp)
                })
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// gRPC's status table has RESOURCE_EXHAUSTED for a message over the size
/// limit; the transport says OUT_OF_RANGE. The code is in the headers of a
/// trailers-only answer, else in the trailers.
fn oversize_is_resource_exhausted(resp: &mut http::Response<tonic::body::Body>) {
    fix_oversize(resp.headers_mut());
    let body = std::mem::replace(resp.body_mut(), tonic::body::Body::empty());
    *resp.body_mut() = tonic::body::Body::new(FixTrailers(body));
}

fn fix_oversize(h: &mut http::HeaderMap) {
    let oversize = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|m| m.to_str().ok())
            // grpc-message is percent-encoded.
            .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if oversize {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

struct FixTrailers(tonic::body::Body);

impl http_body::Body for FixTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.0).poll_frame(cx);
        polled.map(|frame| {
            frame.map(|f| {
                f.map(|f| match f.into_trailers() {
                    Ok(mut t) => {
                        fix_oversize(&mut t);
                        http_body::Frame::trailers(t)
                    }
                    Err(data) => data,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}
