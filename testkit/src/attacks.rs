//! What a hostile client does to a relay, for the robustness tests and bench: half-sent
//! frames, half-open TCP connections, WebSocket handshakes under pressure.

use std::net::SocketAddr;
use std::time::Duration;

use hush_net::Connection;

/// Opens `streams` request streams on `conn`; on each, sends the length prefix of a frame of
/// `announced` bytes and then `sent` bytes of its body, and never the rest (an attacker's
/// half-sent requests). The streams stay open as long as the returned handles live.
pub async fn half_sent_frames(
    conn: &Connection,
    streams: usize,
    announced: u32,
    sent: usize,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let mut out = Vec::with_capacity(streams);
    let mut bytes = announced.to_be_bytes().to_vec();
    bytes.resize(4 + sent, 0x5a);
    for _ in 0..streams {
        // The relay lets a connection open 64 streams, but credit for the streams of requests
        // just answered may not have come back yet: take what is granted.
        let open = tokio::time::timeout(Duration::from_millis(500), conn.quic().open_bi());
        let Ok(Ok((mut send, recv))) = open.await else { break };
        // The relay may stop the stream (over budget); the attacker does not care.
        let _ = send.write_all(&bytes).await;
        out.push((send, recv));
    }
    out
}

/// Opens `n` TCP connections to `addr` that never send a byte, from 127.0.0.2 to 127.0.0.9 in
/// turn (8 source addresses); returns those that connected.
pub async fn half_open(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let source = SocketAddr::from(([127, 0, 0, 2 + (i % 8) as u8], 0));
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else { continue };
        if socket.bind(source).is_err() {
            continue;
        }
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await
        {
            held.push(s);
        }
    }
    held
}

/// A plain (`ws://`) WebSocket handshake with the relay's listener, as a browser makes it;
/// whether it completed within `within`.
pub async fn websocket_handshake(addr: SocketAddr, within: Duration) -> bool {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
    let Ok(mut req) = format!("ws://{addr}/").into_client_request() else { return false };
    let Ok(protocol) = hush_protocol::websocket::SUBPROTOCOL.parse() else { return false };
    req.headers_mut().insert("sec-websocket-protocol", protocol);
    tokio::time::timeout(within, tokio_tungstenite::client_async(req, tcp))
        .await
        .is_ok_and(|r| r.is_ok())
}
