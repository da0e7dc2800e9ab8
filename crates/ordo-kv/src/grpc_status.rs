//! One status tonic answers differently from gRPC's convention and from etcd: a message over
//! the size bound. tonic's decoder refuses it with `OUT_OF_RANGE`; gRPC's implementations
//! (and so etcd, and the clients that match on the code) answer `RESOURCE_EXHAUSTED`. The
//! layer here rewrites that status, whether it comes in a response's headers (a unary call,
//! refused before any answer) or in its trailers (a stream, refused mid-way). Every other
//! `OUT_OF_RANGE` (a compacted or future revision) is left as it is.

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

/// The layer to put in front of the gRPC services.
pub(crate) fn too_large_is_resource_exhausted(
) -> tower::util::MapResponseLayer<fn(http::Response<Body>) -> http::Response<Body>> {
    tower::util::MapResponseLayer::new(rewrite_response)
}

fn rewrite_response(response: http::Response<Body>) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    rewrite_status(&mut parts.headers);
    let body = body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            rewrite_status(&mut trailers);
            http_body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    http::Response::from_parts(parts, Body::new(body))
}

/// Rewrites a size-bound refusal's status in `headers` (headers or trailers) to
/// `RESOURCE_EXHAUSTED`, keeping its message.
fn rewrite_status(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let too_large = status.code() == Code::OutOfRange
        && TOO_LARGE_PREFIXES
            .iter()
            .any(|prefix| status.message().starts_with(prefix));
    if too_large {
        // `add_header` replaces the status and message fields it writes.
        let _ = Status::resource_exhausted(status.message()).add_header(headers);
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
        rewrite_status(&mut headers);
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
        rewrite_status(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::OutOfRange, message)
        );
    }
}
