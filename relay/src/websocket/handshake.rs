//! The HTTP/1.1 upgrade that opens a WebSocket connection (RFC 6455 §4), answered by the relay
//! itself: `101 Switching Protocols` for a WebSocket request offering `hush.v1`, and a plain
//! `400 Bad Request` page for anything else (a person who opens `https://HOST:4443/` in a
//! browser to accept the certificate sees it).
//!
//! The request head is read with a bound (8 KiB) and parsed with `httparse`; the caller puts
//! the whole handshake under a deadline, so a peer that sends half a header holds nothing for
//! long.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;

/// What the page says to anyone who is not a Hush WebSocket client.
const NOT_A_WEBSOCKET: &str = "hush-relay: this port speaks the Hush relay protocol over \
WebSocket only (subprotocol hush.v1); use the Hush web SDK to connect.\n";

/// Why the upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not a request the relay upgrades; it was answered `400` with this reason.
    #[error("refused with 400: {0}")]
    Refused(&'static str),
}

/// Reads the request head, answers it, and on `101` returns the bytes the client sent after
/// its head (the start of its first WebSocket frame, if it did not wait for the answer).
pub async fn upgrade<S>(io: &mut S) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let (head_len, verdict) = loop {
        let mut chunk = [0u8; 1024];
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        if room == 0 {
            respond_400(io, "request head too large").await?;
            return Err(HandshakeError::Refused("request head too large"));
        }
        let n = io.read(chunk.get_mut(..room).unwrap_or_default()).await?;
        if n == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => break (len, check(&req)),
            Ok(httparse::Status::Partial) => continue,
            Err(_) => break (buf.len(), Err("malformed HTTP request")),
        }
    };
    match verdict {
        Ok(key) => {
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
                derive_accept_key(key.as_bytes()),
                hush_protocol::websocket::SUBPROTOCOL
            );
            io.write_all(response.as_bytes()).await?;
            io.flush().await?;
            Ok(buf.split_off(head_len))
        }
        Err(why) => {
            respond_400(io, why).await?;
            Err(HandshakeError::Refused(why))
        }
    }
}

/// Checks an upgrade request; returns its `Sec-WebSocket-Key`.
fn check(req: &httparse::Request<'_, '_>) -> Result<String, &'static str> {
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Vec<_>>()
    };
    let has_token = |name: &str, token: &str| {
        header(name).iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method != Some("GET") {
        return Err("not a WebSocket request (method is not GET)");
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err("not a WebSocket request");
    }
    if !has_token("sec-websocket-version", "13") {
        return Err("unsupported WebSocket version (13 is required)");
    }
    if !has_token("sec-websocket-protocol", hush_protocol::websocket::SUBPROTOCOL) {
        return Err("the Hush relay needs the WebSocket subprotocol hush.v1");
    }
    match header("sec-websocket-key").first() {
        Some(k) if !k.trim().is_empty() => Ok(k.trim().to_owned()),
        _ => Err("missing Sec-WebSocket-Key"),
    }
}

async fn respond_400<S: AsyncWrite + Unpin>(io: &mut S, why: &str) -> std::io::Result<()> {
    let body = format!("{NOT_A_WEBSOCKET}({why})\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn answer(request: &str) -> (Result<Vec<u8>, String>, String) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(request.as_bytes()).await.unwrap();
        let result = upgrade(&mut server).await.map_err(|e| e.to_string());
        drop(server);
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        (result, out)
    }

    #[tokio::test]
    async fn a_websocket_request_is_upgraded_and_anything_else_gets_a_400_page() {
        let ws = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                  Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Protocol: hush.v1\r\n\r\nXY";
        let (result, out) = answer(ws).await;
        assert_eq!(result.unwrap(), b"XY", "bytes after the head are kept");
        assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
        // RFC 6455's example key and answer.
        assert!(out.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{out}");
        assert!(out.contains("Sec-WebSocket-Protocol: hush.v1\r\n"));

        let (result, out) = answer("GET / HTTP/1.1\r\nHost: relay\r\n\r\n").await;
        assert!(result.is_err());
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("use the Hush web SDK"), "{out}");

        let no_protocol = ws.replace("Sec-WebSocket-Protocol: hush.v1\r\n", "");
        let (_, out) = answer(&no_protocol).await;
        assert!(out.starts_with("HTTP/1.1 400 ") && out.contains("subprotocol hush.v1"), "{out}");

        let (_, out) = answer("\u{1}\u{2} garbage\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let (_, out) = answer(&huge).await;
        assert!(out.contains("request head too large"), "{out}");
    }
}
