//! The vendored crates' patches that change bytes on the wire (vendor/README.md), checked
//! through their public API: the vendored sources carry no dev-dependencies of their own.

use actix_http::body::BodySize;
use actix_http::h1::{Codec, Message};
use actix_http::Response;
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
