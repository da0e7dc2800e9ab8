//! Statuses tonic answers differently from gRPC's convention and from etcd, rewritten on the
//! way out so that clients which match on code and message see what etcd would send:
//!
//! - a message over the size bound: tonic's decoder refuses it with `OUT_OF_RANGE`; gRPC's
//!   implementations (and so etcd) answer `RESOURCE_EXHAUSTED`. Rewritten whether it comes in
//!   a response's headers (a unary call, refused before any answer) or in its trailers (a
//!   stream, refused mid-way); every other `OUT_OF_RANGE` (a compacted or future revision) is
//!   left as it is;
//! - an unknown service or method: tonic answers `UNIMPLEMENTED` with no message; gRPC says
//!   which (`unknown service etcdserverpb.Foo`, `unknown method Bar for service
//!   etcdserverpb.KV`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::{Code, Status};

/// The start of the messages of tonic's size-bound refusals (decoding a request, encoding a
/// response).
const TOO_LARGE_PREFIXES: [&str; 2] = [
    "Error, decoded message length too large",
    "Error, encoded message length too large",
];

/// The layer to put in front of the gRPC services; `services` are the names of those served.
#[derive(Debug, Clone)]
pub(crate) struct EtcdStatusLayer {
    services: &'static [&'static str],
}

impl EtcdStatusLayer {
    pub(crate) fn new(services: &'static [&'static str]) -> EtcdStatusLayer {
        EtcdStatusLayer { services }
    }
}

impl<S> tower::Layer<S> for EtcdStatusLayer {
    type Service = EtcdStatus<S>;

    fn layer(&self, inner: S) -> EtcdStatus<S> {
        EtcdStatus {
            inner,
            services: self.services,
        }
    }
}

/// The service [`EtcdStatusLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct EtcdStatus<S> {
    inner: S,
    services: &'static [&'static str],
}

impl<S, B> tower::Service<http::Request<B>> for EtcdStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let services = self.services;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(rewrite_response(response, path, services))
        })
    }
}

fn rewrite_response(
    response: http::Response<Body>,
    path: String,
    services: &'static [&'static str],
) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    rewrite_status(&mut parts.headers, &path, services);
    let body = body.map_frame(move |frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            rewrite_status(&mut trailers, &path, services);
            http_body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    http::Response::from_parts(parts, Body::new(body))
}

/// Rewrites the status in `headers` (headers or trailers) of a call to `path` where etcd
/// answers otherwise, keeping what the status says.
fn rewrite_status(headers: &mut HeaderMap, path: &str, services: &[&str]) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let rewritten = match status.code() {
        Code::OutOfRange
            if TOO_LARGE_PREFIXES
                .iter()
                .any(|prefix| status.message().starts_with(prefix)) =>
        {
            Status::resource_exhausted(status.message())
        }
        Code::Unimplemented if status.message().is_empty() => {
            Status::unimplemented(unknown_call(path, services))
        }
        _ => return,
    };
    // `add_header` replaces the status and message fields it writes.
    let _ = rewritten.add_header(headers);
}

/// gRPC's words for a call to `path` (`/service/method`) that nothing serves.
fn unknown_call(path: &str, services: &[&str]) -> String {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if services.contains(&service) {
        format!("unknown method {method} for service {service}")
    } else {
        format!("unknown service {service}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(status: Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn a_size_refusal_becomes_resource_exhausted_with_its_message() {
        let message = "Error, decoded message length too large: found 4294967295 bytes, the limit is: 2097152 bytes";
        let mut headers = headers_of(Status::out_of_range(message));
        rewrite_status(&mut headers, "/etcdserverpb.KV/Range", &["etcdserverpb.KV"]);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::ResourceExhausted, message)
        );
    }

    #[test]
    fn other_out_of_range_answers_are_left_alone() {
        let message = "mvcc: required revision has been compacted";
        let mut headers = headers_of(Status::out_of_range(message));
        rewrite_status(&mut headers, "/etcdserverpb.KV/Range", &["etcdserverpb.KV"]);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::OutOfRange, message)
        );
    }

    #[test]
    fn an_unknown_call_says_whether_the_service_or_the_method_is_unknown() {
        let served = ["etcdserverpb.KV"];
        assert_eq!(
            unknown_call("/etcdserverpb.KV/Nope", &served),
            "unknown method Nope for service etcdserverpb.KV"
        );
        assert_eq!(
            unknown_call("/etcdserverpb.Nope/Range", &served),
            "unknown service etcdserverpb.Nope"
        );
    }
}
