//! The vendored crates' patches that change bytes on the wire (vendor/README.md), checked
//! through their public API: the vendored sources carry no dev-dependencies of their own.

use actix_http::body::BodySize;
use actix_http::h1::{ClientCodec, Codec, Message};
use actix_http::{Method, RequestHead, RequestHeadType, Response, Version};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;

/// A streamed answer's chunk size lines (written by hand in the patched encoder) are the
/// length in upper-case hex, at every digit-count boundary.
#[actix_web::test]
async fn chunk_size_lines_are_uppercase_hex() {
    for len in [
        1usize, 9, 10, 15, 16, 255, 256, 4095, 4096, 65_535, 65_536, 1_000_000,
    ] {
        let mut codec = Codec::default();
        let mut wire = BytesMut::new();
        let head = Response::ok().drop_body();
        codec
            .encode(Message::Item((head, BodySize::Stream)), &mut wire)
            .unwrap();
        assert!(
            String::from_utf8_lossy(&wire).contains("transfer-encoding: chunked"),
            "{}",
            String::from_utf8_lossy(&wire)
        );
        wire.clear();
        let body = Bytes::from(vec![b'x'; len]);
        codec
            .encode(Message::Chunk(Some(body.clone())), &mut wire)
            .unwrap();
        let mut expected = format!("{len:X}\r\n").into_bytes();
        expected.extend_from_slice(&body);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(&wire[..], &expected[..], "length {len}");
        wire.clear();
        codec.encode(Message::Chunk(None), &mut wire).unwrap();
        assert_eq!(&wire[..], b"0\r\n\r\n");
    }
}

/// An upstream request's first line (written piece by piece in the patched encoder): the
/// method, the path and query (`/` when the URL has none) and the version.
#[actix_web::test]
async fn request_lines_are_method_path_and_version() {
    for (method, uri, version, line) in [
        (
            Method::POST,
            "http://127.0.0.1:9/v1/chat/completions?api-version=1",
            Version::HTTP_11,
            "POST /v1/chat/completions?api-version=1 HTTP/1.1\r\n",
        ),
        (
            Method::GET,
            "http://127.0.0.1:9",
            Version::HTTP_11,
            "GET / HTTP/1.1\r\n",
        ),
        (
            Method::from_bytes(b"PURGE").unwrap(),
            "http://h/x",
            Version::HTTP_10,
            "PURGE /x HTTP/1.0\r\n",
        ),
    ] {
        let mut head = RequestHead::default();
        head.method = method;
        head.uri = uri.parse().unwrap();
        head.version = version;
        let mut wire = BytesMut::new();
        ClientCodec::default()
            .encode(
                Message::Item((RequestHeadType::Owned(head), BodySize::Sized(0))),
                &mut wire,
            )
            .unwrap();
        assert!(
            wire.starts_with(line.as_bytes()),
            "{}",
            String::from_utf8_lossy(&wire)
        );
    }
}
